"""Integer collection builders: `range`, `range_of_size` and `random_range`.

Type strings, versions, fields and results follow InvokeAI's `invocations/collections.py`; the graph-level
`iterate` and `collect` nodes live in control_flow.py. numpy is imported inside invoke() only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationInfo, field_validator

from invokeai_provider.core.invocation import BaseInvocation, InputField, invocation
from invokeai_provider.operators.core.primitives import IntegerCollectionOutput

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

# numpy's int32 maximum (default exclusive high) and uint32 maximum (largest seed), as in InvokeAI.
INT32_MAX = 2_147_483_647
SEED_MAX = 4_294_967_295

_CATEGORY = "batch"


@invocation("range", title="Integer Range", tags=["collection", "integer", "range"], category=_CATEGORY,
            version="1.0.0")
class RangeInvocation(BaseInvocation):
    """The integers start, start + step, ... up to but not including stop (Python's range)."""

    start: int = InputField(default=0, description="The start of the range")
    stop: int = InputField(default=10, description="The stop of the range")
    step: int = InputField(default=1, description="The step of the range")

    @field_validator("stop")
    @classmethod
    def _stop_after_start(cls, v: int, info: ValidationInfo) -> int:
        start = info.data.get("start")
        if start is not None and v <= start:
            raise ValueError("stop must be greater than start")
        return v

    def invoke(self, context: "InvocationContext") -> IntegerCollectionOutput:
        return IntegerCollectionOutput(collection=list(range(self.start, self.stop, self.step)))


@invocation("range_of_size", title="Integer Range of Size", tags=["collection", "integer", "size", "range"],
            category=_CATEGORY, version="1.0.0")
class RangeOfSizeInvocation(BaseInvocation):
    """`size` integers beginning at start, each `step` after the previous one."""

    start: int = InputField(default=0, description="The start of the range")
    size: int = InputField(default=1, gt=0, description="The number of values")
    step: int = InputField(default=1, description="The step of the range")

    def invoke(self, context: "InvocationContext") -> IntegerCollectionOutput:
        end = self.start + self.step * self.size
        return IntegerCollectionOutput(collection=list(range(self.start, end, self.step)))


@invocation("random_range", title="Random Range", tags=["range", "integer", "random", "collection"],
            category=_CATEGORY, version="1.0.1", use_cache=False)
class RandomRangeInvocation(BaseInvocation):
    """`size` random integers in [low, high), from numpy's default_rng seeded with `seed` (same seed, same list)."""

    low: int = InputField(default=0, description="The inclusive low value")
    high: int = InputField(default=INT32_MAX, description="The exclusive high value")
    size: int = InputField(default=1, description="The number of values to generate")
    seed: int = InputField(default=0, ge=0, le=SEED_MAX, description="The seed for the RNG (omit for random)")

    def invoke(self, context: "InvocationContext") -> IntegerCollectionOutput:
        import numpy as np

        rng = np.random.default_rng(self.seed)
        drawn = rng.integers(low=self.low, high=self.high, size=self.size)
        return IntegerCollectionOutput(collection=[int(v) for v in drawn])

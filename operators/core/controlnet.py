"""What InvokeAI's ControlNet, T2I-Adapter and IP-Adapter nodes of every family (and the metadata that recalls
them) check the same way: the weight range (one weight or one per step, -1 to 2) and a step range that does not end
before it begins."""

from __future__ import annotations

from typing import Any, ClassVar, Union

from pydantic import BaseModel, model_validator


def check_control_weights(weights: Union[float, list[float]]) -> Union[float, list[float]]:
    """InvokeAI's range for control weights, one or per step (a field validator)."""
    if any(w < -1 or w > 2 for w in (weights if isinstance(weights, list) else [weights])):
        raise ValueError("Control weights must be within -1 to 2 range")
    return weights


def check_step_range(begin_step_percent: float, end_step_percent: float) -> None:
    """InvokeAI's order of a step range (a model validator)."""
    if begin_step_percent > end_step_percent:
        raise ValueError("Begin step percent must be less than or equal to end step percent")


class WeightedStepRange(BaseModel):
    """Mixin for a node with a weight field (``WEIGHT_FIELD``) and ``begin_step_percent``/``end_step_percent``:
    InvokeAI's checks of both."""

    WEIGHT_FIELD: ClassVar[str] = "weight"

    @model_validator(mode="after")
    def _weights_and_range(self) -> Any:
        check_control_weights(getattr(self, self.WEIGHT_FIELD))
        check_step_range(getattr(self, "begin_step_percent"), getattr(self, "end_step_percent"))
        return self

"""Math nodes: integer and float arithmetic, rounding, random numbers and a linear float range.

Type strings, versions, fields and results follow InvokeAI's `invocations/math.py` and, for
`float_range`, `invocations/param_easing.py`. numpy is imported inside invoke() only.
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Callable, Literal

from pydantic import ValidationInfo, field_validator

from invokeai_provider.core.invocation import BaseInvocation, InputField, invocation
from invokeai_provider.operators.core.primitives import (
    FloatCollectionOutput,
    FloatOutput,
    IntegerOutput,
)

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

# numpy's int32 maximum, InvokeAI's default upper bound for random integers.
INT32_MAX = 2_147_483_647

_CATEGORY = "math"
_FIRST = "The first number"
_SECOND = "The second number"
_LOW = "The inclusive low value"
_HIGH = "The exclusive high value"


# --- two-operand integer nodes ----------------------------------------------------------------------


@invocation("add", title="Add Integers", tags=["math", "add"], category=_CATEGORY, version="1.0.1")
class AddInvocation(BaseInvocation):
    """a + b."""

    a: int = InputField(default=0, description=_FIRST)
    b: int = InputField(default=0, description=_SECOND)

    def invoke(self, context: "InvocationContext") -> IntegerOutput:
        return IntegerOutput(value=self.a + self.b)


@invocation("sub", title="Subtract Integers", tags=["math", "subtract"], category=_CATEGORY, version="1.0.1")
class SubtractInvocation(BaseInvocation):
    """a - b."""

    a: int = InputField(default=0, description=_FIRST)
    b: int = InputField(default=0, description=_SECOND)

    def invoke(self, context: "InvocationContext") -> IntegerOutput:
        return IntegerOutput(value=self.a - self.b)


@invocation("mul", title="Multiply Integers", tags=["math", "multiply"], category=_CATEGORY, version="1.0.1")
class MultiplyInvocation(BaseInvocation):
    """a * b."""

    a: int = InputField(default=0, description=_FIRST)
    b: int = InputField(default=0, description=_SECOND)

    def invoke(self, context: "InvocationContext") -> IntegerOutput:
        return IntegerOutput(value=self.a * self.b)


@invocation("div", title="Divide Integers", tags=["math", "divide"], category=_CATEGORY, version="1.0.1")
class DivideInvocation(BaseInvocation):
    """a / b, truncated toward zero (true division, then int()); b = 0 fails when the node runs."""

    a: int = InputField(default=0, description=_FIRST)
    b: int = InputField(default=0, description=_SECOND)

    def invoke(self, context: "InvocationContext") -> IntegerOutput:
        return IntegerOutput(value=int(self.a / self.b))


# --- random numbers ---------------------------------------------------------------------------------


@invocation("rand_int", title="Random Integer", tags=["math", "random"], category=_CATEGORY, version="1.0.1",
            use_cache=False)
class RandomIntInvocation(BaseInvocation):
    """A random integer in [low, high), from numpy's global generator (not seeded)."""

    low: int = InputField(default=0, description=_LOW)
    high: int = InputField(default=INT32_MAX, description=_HIGH)

    def invoke(self, context: "InvocationContext") -> IntegerOutput:
        import numpy as np

        return IntegerOutput(value=int(np.random.randint(self.low, self.high)))


@invocation("rand_float", title="Random Float", tags=["math", "float", "random"], category=_CATEGORY,
            version="1.0.1", use_cache=False)
class RandomFloatInvocation(BaseInvocation):
    """A random float drawn uniformly from [low, high), then rounded to `decimals` places."""

    low: float = InputField(default=0.0, description=_LOW)
    high: float = InputField(default=1.0, description=_HIGH)
    decimals: int = InputField(default=2, description="The number of decimal places to round to")

    def invoke(self, context: "InvocationContext") -> FloatOutput:
        import numpy as np

        drawn = float(np.random.uniform(self.low, self.high))
        return FloatOutput(value=round(drawn, self.decimals))


# --- rounding ---------------------------------------------------------------------------------------


@invocation("float_to_int", title="Float To Integer", tags=["math", "round", "integer", "float", "convert"],
            category=_CATEGORY, version="1.0.1")
class FloatToIntegerInvocation(BaseInvocation):
    """Turns a float into an integer that is a multiple of `multiple`, rounding as `method` says."""

    value: float = InputField(default=0, description="The value to round")
    multiple: int = InputField(default=1, ge=1, title="Multiple of", description="The multiple to round to")
    method: Literal["Nearest", "Floor", "Ceiling", "Truncate"] = InputField(
        default="Nearest", description="The method to use for rounding"
    )

    def invoke(self, context: "InvocationContext") -> IntegerOutput:
        quotient = self.value / self.multiple
        if self.method == "Nearest":
            steps = round(quotient)  # Python rounding: halves go to the even neighbour
        elif self.method == "Floor":
            steps = math.floor(quotient)
        elif self.method == "Ceiling":
            steps = math.ceil(quotient)
        else:  # "Truncate": toward zero
            steps = int(quotient)
        return IntegerOutput(value=steps * self.multiple)


@invocation("round_float", title="Round Float", tags=["math", "round"], category=_CATEGORY, version="1.0.1")
class RoundInvocation(BaseInvocation):
    """Rounds a float to `decimals` decimal places (Python's round; negative places round to tens, hundreds...)."""

    value: float = InputField(default=0, description="The float value")
    decimals: int = InputField(default=0, description="The number of decimal places")

    def invoke(self, context: "InvocationContext") -> FloatOutput:
        return FloatOutput(value=round(self.value, self.decimals))


# --- integer_math / float_math ----------------------------------------------------------------------

INTEGER_OPERATIONS = Literal["ADD", "SUB", "MUL", "DIV", "EXP", "MOD", "ABS", "MIN", "MAX"]

INTEGER_OPERATIONS_LABELS = {
    "ADD": "Add A+B",
    "SUB": "Subtract A-B",
    "MUL": "Multiply A*B",
    "DIV": "Divide A/B",
    "EXP": "Exponentiate A^B",
    "MOD": "Modulus A%B",
    "ABS": "Absolute Value of A",
    "MIN": "Minimum(A,B)",
    "MAX": "Maximum(A,B)",
}

FLOAT_OPERATIONS = Literal["ADD", "SUB", "MUL", "DIV", "EXP", "ABS", "SQRT", "MIN", "MAX"]

FLOAT_OPERATIONS_LABELS = {
    "ADD": "Add A+B",
    "SUB": "Subtract A-B",
    "MUL": "Multiply A*B",
    "DIV": "Divide A/B",
    "EXP": "Exponentiate A^B",
    "ABS": "Absolute Value of A",
    "SQRT": "Square Root of A",
    "MIN": "Minimum(A,B)",
    "MAX": "Maximum(A,B)",
}

# operation -> f(a, b); DIV truncates toward zero as InvokeAI's int(a / b) does, and SQRT of a negative
# number is NaN as numpy's sqrt gives.
_INTEGER_OPS: dict[str, Callable[[int, int], int]] = {
    "ADD": operator.add, "SUB": operator.sub, "MUL": operator.mul, "DIV": lambda a, b: int(a / b),
    "EXP": operator.pow, "MOD": operator.mod, "ABS": lambda a, _: abs(a), "MIN": min, "MAX": max,
}
_FLOAT_OPS: dict[str, Callable[[float, float], float]] = {
    "ADD": operator.add, "SUB": operator.sub, "MUL": operator.mul, "DIV": operator.truediv, "EXP": operator.pow,
    "ABS": lambda a, _: abs(a), "SQRT": lambda a, _: math.sqrt(a) if a >= 0 else math.nan, "MIN": min, "MAX": max,
}


@invocation("integer_math", title="Integer Math",
            tags=["math", "integer", "add", "subtract", "multiply", "divide", "modulus", "power", "absolute value",
                  "min", "max"],
            category=_CATEGORY, version="1.0.1")
class IntegerMathInvocation(BaseInvocation):
    """One integer operation on a and b, chosen by `operation`. DIV truncates toward zero; MOD follows
    Python (the sign of b). Zero divisors and negative exponents are rejected when b is set."""

    operation: INTEGER_OPERATIONS = InputField(default="ADD", description="The operation to perform",
                                               ui_choice_labels=INTEGER_OPERATIONS_LABELS)
    a: int = InputField(default=1, description=_FIRST)
    b: int = InputField(default=1, description=_SECOND)

    @field_validator("b")
    @classmethod
    def _b_keeps_result_an_integer(cls, v: int, info: ValidationInfo) -> int:
        operation = info.data.get("operation")
        if operation in ("DIV", "MOD") and v == 0:
            raise ValueError("Cannot divide by zero")
        if operation == "EXP" and v < 0:
            raise ValueError("Result of exponentiation is not an integer")
        return v

    def invoke(self, context: "InvocationContext") -> IntegerOutput:
        return IntegerOutput(value=_INTEGER_OPS[self.operation](self.a, self.b))


@invocation("float_math", title="Float Math",
            tags=["math", "float", "add", "subtract", "multiply", "divide", "power", "root", "absolute value", "min",
                  "max"],
            category=_CATEGORY, version="1.0.1")
class FloatMathInvocation(BaseInvocation):
    """One float operation on a and b, chosen by `operation`. Division by zero, zero to a negative power
    and powers with a complex result are rejected when b is set; SQRT of a negative number gives NaN."""

    operation: FLOAT_OPERATIONS = InputField(default="ADD", description="The operation to perform",
                                             ui_choice_labels=FLOAT_OPERATIONS_LABELS)
    a: float = InputField(default=1, description=_FIRST)
    b: float = InputField(default=1, description=_SECOND)

    @field_validator("b")
    @classmethod
    def _b_keeps_result_real(cls, v: float, info: ValidationInfo) -> float:
        operation = info.data.get("operation")
        if operation == "DIV" and v == 0:
            raise ValueError("Cannot divide by zero")
        if operation == "EXP":
            a = info.data.get("a")
            if a is None:
                return v
            if a == 0 and v < 0:
                raise ValueError("Cannot raise zero to a negative power")
            try:
                power = a**v
            except OverflowError:
                raise ValueError("Result of exponentiation is too large for a float") from None
            if isinstance(power, complex):
                raise ValueError("Root operation resulted in a complex number")
        return v

    def invoke(self, context: "InvocationContext") -> FloatOutput:
        return FloatOutput(value=_FLOAT_OPS[self.operation](self.a, self.b))


# --- float_range ------------------------------------------------------------------------------------


@invocation("float_range", title="Float Range", tags=["math", "range"], category=_CATEGORY, version="1.0.1")
class FloatLinearRangeInvocation(BaseInvocation):
    """`steps` evenly spaced floats from start to stop, both ends included (numpy.linspace)."""

    start: float = InputField(default=5, description="The first value of the range")
    stop: float = InputField(default=10, description="The last value of the range")
    steps: int = InputField(default=30, description="number of values to interpolate over (including start and stop)")

    def invoke(self, context: "InvocationContext") -> FloatCollectionOutput:
        import numpy as np

        values = np.linspace(self.start, self.stop, self.steps)
        return FloatCollectionOutput(collection=[float(v) for v in values])

"""What InvokeAI's ControlNet nodes of every family check the same way: the weight range (one weight or one per
step, -1 to 2) and a step range that does not end before it begins."""

from __future__ import annotations

from typing import Union


def check_control_weights(weights: Union[float, list[float]]) -> Union[float, list[float]]:
    """InvokeAI's range for control weights, one or per step (a field validator)."""
    if any(w < -1 or w > 2 for w in (weights if isinstance(weights, list) else [weights])):
        raise ValueError("Control weights must be within -1 to 2 range")
    return weights


def check_step_range(begin_step_percent: float, end_step_percent: float) -> None:
    """InvokeAI's order of a step range (a model validator)."""
    if begin_step_percent > end_step_percent:
        raise ValueError("Begin step percent must be less than or equal to end step percent")

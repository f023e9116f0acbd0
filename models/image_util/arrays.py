"""Converting image arrays between float values and 8-bit pixels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np


def to_uint8(array: Any, *, scale: float, rounding: Literal["nearest", "floor"] = "nearest") -> "np.ndarray":
    """Float values as uint8 pixels: ``array * scale`` (``scale`` 255 for values in 0..1, 1 for values
    already in 0..255), rounded to the nearest integer (``np.rint``: halves to even) or, with ``"floor"``,
    truncated as ``astype`` does; values outside 0..255 are clipped (before truncating, so negatives give 0).
    """
    import numpy as np

    values = np.asarray(array)
    if scale != 1:
        values = values * scale
    if rounding == "nearest":
        values = np.rint(values)
    elif rounding != "floor":
        raise ValueError(f"rounding must be 'nearest' or 'floor', got {rounding!r}")
    return np.clip(values, 0, 255).astype(np.uint8)

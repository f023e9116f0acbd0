"""to_uint8: the one float -> 8-bit conversion of the image nodes, with its scale and rounding explicit."""

from __future__ import annotations

import pytest

from invokeai_provider.models.image_util.arrays import to_uint8

np = pytest.importorskip("numpy")


def test_scale_255_rounds_to_nearest_with_halves_to_even_and_clips():
    values = np.array([-0.1, 0.0, 0.5 / 255, 1.5 / 255, 0.4, 1.0, 1.2])
    out = to_uint8(values, scale=255.0)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 0, 2, 102, 255, 255]


def test_scale_1_takes_values_already_in_0_to_255():
    assert to_uint8(np.array([-3.0, 2.5, 3.5, 254.6, 300.0]), scale=1).tolist() == [0, 2, 4, 255, 255]


def test_floor_truncates_after_clipping():
    assert to_uint8(np.array([-0.7, 0.99, 254.99, 256.0]), scale=1, rounding="floor").tolist() == [0, 0, 254, 255]
    assert to_uint8(np.array([0.999, 0.5]), scale=255.0, rounding="floor").tolist() == [254, 127]


def test_keeps_the_shape_and_rejects_an_unknown_rounding():
    assert to_uint8(np.zeros((2, 3, 4), np.float32), scale=255.0).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="rounding"):
        to_uint8(np.zeros(2), scale=1, rounding="up")  # type: ignore[arg-type]

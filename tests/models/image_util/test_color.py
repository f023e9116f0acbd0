"""The colour maths the image nodes share (models/image_util/color): known values and round trips."""

from __future__ import annotations

import colorsys

import pytest

from invokeai_provider.models.image_util import color

np = pytest.importorskip("numpy")


def test_oklab_of_known_colours():
    white = color.oklab_from_linear(np.array([1.0, 1.0, 1.0]))
    assert np.allclose(white, [1.0, 0.0, 0.0], atol=1e-4)
    # Ottosson's published Oklab of sRGB red.
    red = color.oklab_from_linear(np.array([1.0, 0.0, 0.0]))
    assert np.allclose(red, [0.6279554, 0.22486306, 0.1258463], atol=1e-4)
    rgb = np.random.default_rng(1).random((5, 5, 3))
    assert np.allclose(color.linear_from_oklab(color.oklab_from_linear(rgb)), rgb, atol=1e-6)


def test_oklab_exact_inverse_round_trips_closer_than_the_published_matrices():
    rgb = np.random.default_rng(3).random((6, 6, 3))
    lab = color.oklab_from_linear(rgb)
    exact = color.linear_from_oklab(lab, exact_inverse=True)
    published = color.linear_from_oklab(lab)
    assert np.abs(exact - rgb).max() < 1e-12
    assert 1e-12 < np.abs(published - rgb).max() < 1e-6


def test_oklch_round_trip_and_hue_in_degrees():
    lab = color.oklab_from_linear(np.random.default_rng(4).random((4, 4, 3)))
    lch = color.oklch_from_oklab(lab)
    assert ((lch[..., 2] >= 0) & (lch[..., 2] < 360)).all()
    assert np.allclose(color.oklab_from_oklch(lch), lab, atol=1e-12)


@pytest.mark.parametrize("space", ["okhsl", "okhsv"])
def test_okhsl_okhsv_round_trip_and_greys(space):
    forward = getattr(color, f"{space}_from_srgb")
    back = getattr(color, f"srgb_from_{space}")
    rgb = np.random.default_rng(2).uniform(0.05, 0.95, (6, 6, 3))
    polar = forward(rgb, 3)
    assert np.abs(back(polar, 3) - rgb).max() < 2e-3
    grey = forward(np.full((1, 1, 3), 0.5), 3)
    assert grey[0, 0, 1] < 1e-3  # no saturation
    # Saturated primaries sit on the gamut edge: full saturation.
    assert forward(np.array([[[1.0, 0.0, 0.0]]]), 3)[0, 0, 1] > 0.98


def test_gamut_clip_brings_colours_inside_and_leaves_inside_alone():
    outside = np.array([[[1.3, -0.2, 0.1], [0.2, 0.5, 1.4]]])
    clipped = color.gamut_clip(outside, 0.05, 3)
    assert clipped.min() > -1e-3 and clipped.max() < 1 + 1e-3
    inside = np.array([[[0.2, 0.4, 0.6]]])
    assert np.array_equal(color.gamut_clip(inside, 0.05, 3), inside)


@pytest.mark.parametrize(("forward", "back", "reference"), [
    (color.hsl_from_srgb, color.srgb_from_hsl, lambda *rgb: (lambda h, l, s: (h, s, l))(*colorsys.rgb_to_hls(*rgb))),
    (color.hsv_from_srgb, color.srgb_from_hsv, colorsys.rgb_to_hsv),
])
def test_hsl_hsv_match_colorsys_and_round_trip(forward, back, reference):
    rgb = np.random.default_rng(5).random((3, 4, 3))
    polar = forward(rgb)
    expected = np.array([[reference(*pixel) for pixel in row] for row in rgb])
    expected[..., 0] *= 360.0  # colorsys gives hue in turns
    assert np.allclose(polar, expected, atol=1e-12)
    assert np.allclose(back(polar), rgb, atol=1e-12)


def test_cielch_of_white_and_round_trip():
    white = color.cielch_from_linear(np.array([1.0, 1.0, 1.0]))
    assert abs(white[0] - 1.0) < 1e-4 and white[1] < 1e-3  # L* = 100, no chroma
    rgb = np.random.default_rng(6).random((4, 4, 3))
    assert np.allclose(color.linear_from_cielch(color.cielch_from_linear(rgb)), rgb, atol=1e-9)


def test_srgb_transfer_round_trips_and_clips():
    values = np.linspace(0.0, 1.0, 101)
    assert np.allclose(color.srgb_from_linear(color.linear_from_srgb(values)), values, atol=1e-12)
    assert np.allclose(color.srgb_from_linear(np.array([-0.5, 1.5])), [0.0, 1.0], atol=1e-12)  # clipped first


def test_the_cielab_transforms_turn_srgb_grey_into_neutral_lab():
    Image = pytest.importorskip("PIL.Image")
    from PIL import ImageCms

    to_lab, to_rgb = color.cielab_transforms()
    lab = np.asarray(ImageCms.applyTransform(Image.new("RGB", (1, 1), (128, 128, 128)), to_lab))[0, 0]
    assert abs(int(lab[0]) - 137) <= 1  # L* 53.6 of 100, scaled to 0..255
    assert abs(int(lab[1].astype(np.int8))) <= 1 and abs(int(lab[2].astype(np.int8))) <= 1  # a*, b* ~ 0 (signed)

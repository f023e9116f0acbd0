"""Image colour/filter nodes: declarations match InvokeAI, and each node's pixels come out as expected."""

from __future__ import annotations

import colorsys

import pytest

from helpers import only_output, put_image, stored_image

import invokeai_provider.operators.image.adjust as adjust
from invokeai_provider.models.image_util import color
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")




def _solid(rgb, size=(8, 8), mode="RGB"):
    return Image.new(mode, size, rgb)


def _run(run, node_type, image=None, name="in.png", **fields):
    if image is not None:
        fields["image"] = put_image(run, name, image)
    return only_output(run, {"type": node_type, **fields})


# --- declarations -------------------------------------------------------------------------------------

# type -> (title, version, tags, category, output type, fields in InvokeAI's order)
DECLARED = {
    "img_hue_adjust_oklch": ("Adjust Image Hue (Oklch)", "1.0.0", ["image", "hue", "oklch"], "image_output",
                             ["metadata", "board", "image", "hue"]),
    "invokeai_ealightness": ("Equivalent Achromatic Lightness", "1.2.0",
                             ["image", "channel", "mask", "cielab", "lab"], "image_output",
                             ["metadata", "board", "image"]),
    "invokeai_img_enhance": ("Enhance Image", "1.2.1", ["enhance", "image"], "image_output",
                             ["metadata", "board", "image", "invert", "color", "contrast", "brightness", "sharpness"]),
    "invokeai_img_hue_adjust_plus": ("Adjust Image Hue Plus", "1.2.0",
                                     ["image", "hue", "oklab", "cielab", "uplab", "lch", "hsv", "hsl", "lab"],
                                     "image_output",
                                     ["metadata", "board", "image", "space", "degrees", "preserve_lightness",
                                      "ok_adaptive_gamut", "ok_high_precision"]),
    "invokeai_img_val_thresholds": ("Image Value Thresholds", "1.2.0", ["image", "mask", "value", "threshold"],
                                    "image_output",
                                    ["metadata", "board", "image", "invert_output", "renormalize_values",
                                     "lightness_only", "threshold_upper", "threshold_lower"]),
    "invokeai_img_dilate_erode": ("Image Dilate or Erode", "1.3.0",
                                  ["image", "mask", "dilate", "erode", "expand", "contract", "mask"], "image_output",
                                  ["metadata", "image", "lightness_only", "radius_w", "radius_h", "mode"]),
    "unsharp_mask_oklab": ("Unsharp Mask (Oklab)", "1.0.0", ["image", "unsharp_mask", "oklab"], "image_output",
                           ["metadata", "board", "image", "radius", "strength"]),
    "color_correct": ("Color Correct", "2.0.0", ["image", "color"], "image_output",
                      ["metadata", "board", "base_image", "color_reference", "mask", "colorspace"]),
    "img_watermark": ("Add Invisible Watermark", "1.2.2", ["image", "watermark"], "image_output",
                      ["metadata", "board", "image", "text"]),
    "decode_watermark": ("Decode Invisible Watermark", "1.0.0", ["image", "watermark"], "string_output",
                         ["image", "length"]),
    "img_nsfw": ("Blur NSFW Image", "1.2.3", ["image", "nsfw"], "image_output", ["metadata", "board", "image"]),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declaration_matches_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    title, version, tags, output_type, fields = DECLARED[node_type]
    assert (cls.UIConfig.title, cls.UIConfig.version, cls.UIConfig.tags, cls.UIConfig.category) == (
        title, version, tags, "image")
    assert cls.get_output_annotation().get_type() == output_type
    assert sorted(cls.input_fields()) == sorted(fields)


def test_defaults_and_options_match_invokeai():
    def defaults(node_type):
        cls = InvocationRegistry.get_invocation_class(node_type)
        return {k: v.default for k, v in cls.input_fields().items() if k not in ("metadata", "board")}

    assert defaults("invokeai_img_hue_adjust_plus") == {
        "image": None, "space": "HSV / HSL / RGB", "degrees": 0.0, "preserve_lightness": False,
        "ok_adaptive_gamut": 0.05, "ok_high_precision": True}
    assert defaults("invokeai_img_val_thresholds") == {
        "image": None, "invert_output": False, "renormalize_values": False, "lightness_only": False,
        "threshold_upper": 0.5, "threshold_lower": 0.5}
    assert defaults("invokeai_img_dilate_erode") == {
        "image": None, "lightness_only": False, "radius_w": 4, "radius_h": 4, "mode": "Dilate"}
    assert defaults("unsharp_mask_oklab") == {"image": None, "radius": 2, "strength": 50}
    assert defaults("color_correct") == {"base_image": None, "color_reference": None, "mask": None,
                                         "colorspace": "RGB"}
    assert defaults("img_watermark") == {"image": None, "text": "InvokeAI"}
    assert defaults("decode_watermark") == {"image": None, "length": 8}
    assert defaults("invokeai_img_enhance") == {"image": None, "invert": False, "color": 1.0, "contrast": 1.0,
                                                "brightness": 1.0, "sharpness": 1.0}
    assert adjust.HUE_COLOR_SPACES.__args__ == ("HSV / HSL / RGB", "Okhsl", "Okhsv", "*Oklch / Oklab",
                                                "*LCh / CIELab", "*UPLab (w/CIELab_to_UPLab.icc)")
    assert adjust.DILATE_ERODE_MODES.__args__ == ("Dilate", "Erode")



# --- hue ----------------------------------------------------------------------------------------------


def _hue_degrees(rgb):
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb[:3]))[0] * 360


def test_oklch_hue_rotation_keeps_oklab_lightness_and_rotates_hue(run):
    colour = (200, 80, 60)
    out = _run(run, "img_hue_adjust_oklch", _solid(colour), hue=90)
    pixel = np.asarray(stored_image(run, out).convert("RGB"))[0, 0]
    before = color.oklch_from_oklab(color.oklab_from_linear(color.linear_from_srgb(np.array(colour) / 255)))
    after = color.oklch_from_oklab(color.oklab_from_linear(color.linear_from_srgb(pixel / 255)))
    assert abs(after[0] - before[0]) < 0.01
    assert abs(((after[2] - before[2]) % 360) - 90) < 2.0
    assert (out.width, out.height) == (8, 8)


def test_oklch_hue_zero_is_identity_and_keeps_alpha(run):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (10, 120, 230)
    rgba[..., 3] = np.arange(16).reshape(4, 4) * 10
    out = stored_image(run, _run(run, "img_hue_adjust_oklch", Image.fromarray(rgba, "RGBA"), hue=0))
    assert out.mode == "RGBA"
    got = np.asarray(out).astype(int)
    assert np.abs(got - rgba).max() <= 1
    assert np.array_equal(got[..., 3], rgba[..., 3])


def test_hue_plus_hsv_turns_red_into_green_and_blue(run):
    out = stored_image(run, _run(run, "invokeai_img_hue_adjust_plus", _solid((255, 0, 0)), degrees=120.0))
    assert np.abs(np.asarray(out)[0, 0].astype(int) - (0, 255, 0)).max() <= 6
    out = stored_image(run, _run(run, "invokeai_img_hue_adjust_plus", _solid((255, 0, 0)), degrees=-120.0))
    assert np.abs(np.asarray(out)[0, 0].astype(int) - (0, 0, 255)).max() <= 6


@pytest.mark.parametrize("space", ["Okhsl", "Okhsv", "*Oklch / Oklab", "*LCh / CIELab"])
def test_hue_plus_perceptual_spaces_rotate_hue(run, space):
    colour = (60, 140, 200)
    zero = stored_image(run, _run(run, "invokeai_img_hue_adjust_plus", _solid(colour), name="a.png", space=space))
    assert np.abs(np.asarray(zero)[0, 0].astype(int) - colour).max() <= 3  # 0 degrees: unchanged
    turned = stored_image(run, _run(run, "invokeai_img_hue_adjust_plus", _solid(colour), name="b.png", space=space,
                            degrees=180.0))
    pixel = np.asarray(turned)[0, 0]
    lab_in = color.oklab_from_linear(color.linear_from_srgb(np.array(colour) / 255))
    lab_out = color.oklab_from_linear(color.linear_from_srgb(pixel / 255))
    # Half a turn points the (a, b) chroma vector the other way: a blue becomes an orange.
    assert np.dot(lab_in[1:], lab_out[1:]) < 0
    assert pixel[0] > pixel[2]


def test_hue_plus_preserve_lightness_keeps_cielab_l(run):
    from PIL import ImageCms

    to_lab, _ = color.cielab_transforms()
    colour = (120, 120, 60)
    l_in = int(np.asarray(ImageCms.applyTransform(_solid(colour), to_lab))[0, 0, 0])
    lightness = {}
    for keep in (False, True):
        out = stored_image(run, _run(run, "invokeai_img_hue_adjust_plus", _solid(colour), name=f"{keep}.png",
                             space="HSV / HSL / RGB", degrees=200.0, preserve_lightness=keep))
        lightness[keep] = int(np.asarray(ImageCms.applyTransform(out.convert("RGB"), to_lab))[0, 0, 0])
        assert _hue_degrees(np.asarray(out)[0, 0]) > 150  # the hue still turned
    assert abs(lightness[True] - l_in) <= 2 < abs(lightness[False] - l_in)


def test_hue_plus_uplab_is_a_clear_error(run):
    with pytest.raises(NodeExecutionError, match=r"node n \(invokeai_img_hue_adjust_plus\): field space: .*UPLab"):
        _run(run, "invokeai_img_hue_adjust_plus", _solid((1, 2, 3)), space="*UPLab (w/CIELab_to_UPLab.icc)")


# --- lightness, enhance, thresholds ---------------------------------------------------------------------


def test_ealightness_is_cielab_lightness(run):
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0] = [(0, 0, 0), (255, 255, 255), (128, 128, 128)]
    pixels[1] = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    out = stored_image(run, _run(run, "invokeai_ealightness", Image.fromarray(pixels, "RGB")))
    assert out.mode == "L"
    values = np.asarray(out).astype(int)
    assert values[0, 0] == 0 and values[0, 1] == 255
    assert abs(values[0, 2] - round(53.6 * 2.55)) <= 2  # sRGB 128 grey is L* 53.6
    assert values[1, 1] > values[1, 0] > values[1, 2]  # green looks lightest, blue darkest


def test_enhance_invert_and_brightness(run):
    image = Image.fromarray(np.array([[[10, 100, 200], [0, 0, 0]]], np.uint8), "RGB")
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_enhance", image, name="a.png", invert=True)))
    assert out[0, 0].tolist() == [245, 155, 55]
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_enhance", image, name="b.png", brightness=0.5)))
    assert out[0, 0].tolist() == [5, 50, 100]
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_enhance", image, name="c.png", color=0.0)))
    assert out[0, 0, 0] == out[0, 0, 1] == out[0, 0, 2]  # no colour left


def _ramp():
    return Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")


def test_thresholds_cut_at_the_thresholds(run):
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_val_thresholds", _ramp(), threshold_upper=0.75,
                                    threshold_lower=0.25))).ravel().astype(int)
    values = np.arange(256)
    assert (out[values >= 0.75 * 255] == 255).all()
    assert (out[values < 0.25 * 255] == 0).all()
    middle = (values >= 0.25 * 255) & (values < 0.75 * 255)
    assert np.array_equal(out[middle], values[middle])  # left as they were


def test_thresholds_renormalise_and_invert(run):
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_val_thresholds", _ramp(), name="a.png", threshold_upper=0.75,
                                    threshold_lower=0.25, renormalize_values=True))).ravel().astype(int)
    assert out[128] == round((128 / 255 - 0.25) / 0.5 * 255)
    assert out[64] == round((64 / 255 - 0.25) / 0.5 * 255) and out[191] == 254 and out[192] == 255
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_val_thresholds", _ramp(), name="b.png", threshold_upper=0.75,
                                    threshold_lower=0.25, renormalize_values=True,
                                    invert_output=True))).ravel().astype(int)
    assert out[0] == 255 and out[255] == 0
    assert out[128] == round((1 - (128 / 255 - 0.25) / 0.5) * 255)


def test_thresholds_default_binarises_and_lightness_only_keeps_colour(run):
    image = Image.fromarray(np.array([[[250, 60, 60], [30, 30, 30]]], np.uint8), "RGB")
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_val_thresholds", image, name="a.png")))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 0, 0]
    out = stored_image(run, _run(run, "invokeai_img_val_thresholds", image, name="b.png", lightness_only=True,
                         threshold_upper=0.9, threshold_lower=0.2))
    assert out.mode == "RGB"
    reddish, dark = np.asarray(out)[0].astype(int)
    assert reddish[0] > reddish[1] + 50  # still red: only L* was thresholded (and left in between)
    assert max(dark) <= 2  # L* below 0.2: black


# --- dilate / erode -------------------------------------------------------------------------------------


def _square(size=32, lo=12, hi=20):
    pixels = np.zeros((size, size), np.uint8)
    pixels[lo:hi, lo:hi] = 255
    return Image.fromarray(pixels, "L")


def test_dilate_grows_a_square_by_the_radius(run):
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_dilate_erode", _square(), radius_w=3, radius_h=2)))
    rows, cols = np.nonzero(out == 255)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (12 - 2, 19 + 2, 12 - 3, 19 + 3)
    # An elliptical element rounds the corners: the far corner of the bounding box stays black.
    assert out[10, 9] == 0 and out[10, 12] == 255 and out[12, 9] == 255
    assert out[0, 0] == 0


def test_erode_shrinks_a_square_and_matches_opencvs_element(run):
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_dilate_erode", _square(), mode="Erode", radius_w=2,
                                    radius_h=2)))
    rows, cols = np.nonzero(out == 255)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (14, 17, 14, 17)
    # OpenCV's MORPH_ELLIPSE 9x9 element, as InvokeAI builds it.
    expected = np.array([[0, 0, 0, 0, 1, 0, 0, 0, 0]] + [[0] + [1] * 7 + [0]] * 2 + [[1] * 9] * 3
                        + [[0] + [1] * 7 + [0]] * 2 + [[0, 0, 0, 0, 1, 0, 0, 0, 0]], bool)
    assert np.array_equal(adjust.ellipse_footprint(4, 4), expected)
    assert adjust.ellipse_footprint(3, 0).tolist() == [[False, False, False, True, False, False, False]]


def test_dilate_rgba_and_lightness_only(run):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[6:10, 6:10] = (255, 255, 255, 200)
    out = np.asarray(stored_image(run, _run(run, "invokeai_img_dilate_erode", Image.fromarray(rgba, "RGBA"), name="a.png",
                                    radius_w=1, radius_h=1)))
    assert out[5, 7].tolist() == [255, 255, 255, 200] and out[5, 5, 3] == 0
    out = stored_image(run, _run(run, "invokeai_img_dilate_erode", Image.fromarray(rgba, "RGBA"), name="b.png",
                         radius_w=1, radius_h=1, lightness_only=True))
    assert out.mode == "RGBA"
    out = np.asarray(out)
    assert out[5, 7, 3] == 0  # alpha untouched: only lightness grew
    assert out[5, 7, 0] > 200


# --- unsharp mask -------------------------------------------------------------------------------------


def test_unsharp_oklab_raises_edge_contrast_and_keeps_flat_areas(run):
    pixels = np.full((16, 16, 3), 60, np.uint8)
    pixels[:, 8:] = 180
    image = Image.fromarray(pixels, "RGB")
    out = np.asarray(stored_image(run, _run(run, "unsharp_mask_oklab", image, radius=2, strength=100))).astype(int)
    assert out[8, 7, 0] < 60 and out[8, 8, 0] > 180  # overshoot on both sides of the edge
    assert abs(out[8, 0, 0] - 60) <= 1 and abs(out[8, 15, 0] - 180) <= 1
    assert (out[..., 0] == out[..., 1]).all()  # greys stay grey: only lightness changed
    same = np.asarray(stored_image(run, _run(run, "unsharp_mask_oklab", image, name="b.png", strength=0))).astype(int)
    assert np.abs(same - pixels).max() <= 1


def test_unsharp_oklab_rejects_zero_radius(run):
    with pytest.raises(Exception, match="radius"):
        _run(run, "unsharp_mask_oklab", _solid((1, 2, 3)), radius=0)


# --- colour correction ----------------------------------------------------------------------------------


def test_color_correct_matches_the_reference_histogram(run):
    base = Image.fromarray(np.tile(np.arange(0, 128, 2, dtype=np.uint8), (64, 1))[..., None].repeat(3, -1), "RGB")
    reference = Image.fromarray(np.tile(np.arange(128, 256, 2, dtype=np.uint8), (64, 1))[..., None].repeat(3, -1),
                                "RGB")
    out = stored_image(run, only_output(run, {"type": "color_correct", "base_image": put_image(run, "b.png", base),
                                      "color_reference": put_image(run, "r.png", reference)}))
    assert out.mode == "RGBA"
    got = np.asarray(out)[0, :, 0].astype(int)
    assert np.abs(got - np.arange(128, 256, 2)).max() <= 2
    assert (np.asarray(out)[..., 3] == 255).all()


def test_color_correct_mask_and_luma_only(run):
    ramp = np.arange(0, 128, 2, dtype=np.uint8)[None, :].repeat(8, 0)
    base = Image.fromarray(np.stack([ramp, ramp, ramp + 100], -1), "RGB")
    reference = Image.fromarray(np.stack([ramp + 100, ramp, ramp], -1), "RGB")
    mask = np.zeros((8, 64), np.uint8)
    mask[:, :32] = 255  # white keeps the original
    out = np.asarray(stored_image(run, only_output(run, {
        "type": "color_correct", "base_image": put_image(run, "b.png", base), "color_reference": put_image(run, "r.png", reference),
        "mask": put_image(run, "m.png", Image.fromarray(mask, "L"))})))
    assert np.array_equal(out[:, :32, :3], np.asarray(base)[:, :32])
    # Corrected by rank; the brightest base value maps to 255, as InvokeAI's CDF interpolation does.
    assert np.abs(out[:, 32:-1, :3].astype(int) - np.asarray(reference)[:, 32:-1]).max() <= 2
    assert out[0, -1, :3].tolist() == [255, 255, 255]
    luma = np.asarray(stored_image(run, only_output(run, {
        "type": "color_correct", "base_image": put_image(run, "b.png", base), "color_reference": put_image(run, "r.png", reference),
        "colorspace": "YCbCr-Luma"})))
    y_out = np.asarray(Image.fromarray(luma[..., :3], "RGB").convert("YCbCr")).astype(int)
    y_ref = np.asarray(reference.convert("YCbCr")).astype(int)
    y_base = np.asarray(base.convert("YCbCr")).astype(int)
    assert np.abs(y_out[0, :-1, 0] - y_ref[0, :-1, 0]).max() <= 3  # luma from the reference
    assert np.abs(y_out[..., 1:] - y_base[..., 1:]).mean() < 2  # chroma from the base


def test_color_correct_mask_of_another_size_names_the_field(run):
    image = _solid((1, 2, 3))
    with pytest.raises(NodeExecutionError, match=r"node n \(color_correct\): field mask: mask is 4x4 but base_image is 8x8"):
        only_output(run, {"type": "color_correct", "base_image": put_image(run, "b.png", image),
                          "color_reference": put_image(run, "r.png", image),
                          "mask": put_image(run, "m.png", Image.new("L", (4, 4)))})


# --- watermark ------------------------------------------------------------------------------------------


def _photo(size=256, seed=0):
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    width, height = (size, size) if isinstance(size, int) else size
    noise = Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8), "RGB")
    return noise.filter(ImageFilter.GaussianBlur(3))


def _photo_bgr(size=256, seed=0):
    return np.ascontiguousarray(np.asarray(_photo(size, seed))[..., ::-1])


def test_dwt_dct_bits_are_msb_first():
    from invokeai_provider.models.image_util import watermark as wm
    assert wm.bytes_to_bits(b"A\x01").tolist() == [0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert wm.bits_to_bytes(wm.bytes_to_bits("Invoké".encode())) == "Invoké".encode()
    assert wm.bits_to_bytes(np.ones(12, dtype=np.uint8)) == b"\xff"


@pytest.mark.parametrize(("size", "seed", "text"), [
    (256, 1, "InvokeAI"), ((320, 257), 2, "abc"), ((517, 390), 3, "hello, wörld 12"), (384, 4, "x")])
def test_dwt_dct_round_trips_text(size, seed, text):
    from invokeai_provider.models.image_util import watermark as wm
    bgr = _photo_bgr(size, seed)
    data = text.encode("utf-8")
    marked = wm.embed_bytes(bgr, data)
    assert marked.shape == bgr.shape and marked.dtype == np.uint8
    assert 0 < np.abs(marked.astype(int) - bgr).mean() < 2  # invisible, but there
    assert wm.extract_bytes(marked, len(data)) == data
    assert wm.extract_bytes(bgr, len(data)) != data  # nothing to read from the unmarked image


def test_dwt_dct_needs_a_block_per_bit():
    from invokeai_provider.models.image_util import watermark as wm
    bgr = _photo_bgr((66, 258))  # cropped to 256x64: a 128x32 approximation band, 256 blocks
    assert wm.extract_bytes(wm.embed_bytes(bgr, b"ab"), 2) == b"ab"
    with pytest.raises(ValueError, match="256 watermark blocks but the watermark has 264 bits"):
        wm.embed_bytes(bgr, b"x" * 33)
    with pytest.raises(ValueError, match="264 bits"):
        wm.extract_bytes(bgr, 33)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        wm.embed_bytes(bgr.astype(np.float32), b"a")



@pytest.mark.parametrize(("size", "text"), [(256, b"InvokeAI"), ((419, 300), b"abc")])
def test_dwt_dct_interchangeable_with_invisible_watermark(size, text):
    """An extra check where the package is installed: InvokeAI's marks read here, ours read there."""
    imwatermark = pytest.importorskip("imwatermark")
    from invokeai_provider.models.image_util import watermark as wm
    bgr = _photo_bgr(size, seed=5)
    n_bits = len(text) * 8
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bytes", text)
    theirs = encoder.encode(bgr.copy(), "dwtDct")
    ours = wm.embed_bytes(bgr, text)
    assert wm.extract_bytes(theirs, len(text)) == text
    assert imwatermark.WatermarkDecoder("bytes", n_bits).decode(ours, "dwtDct") == text
    for image in (bgr, theirs, ours):  # the very same bits, marked or not
        their_bits = imwatermark.WatermarkDecoder("bits", n_bits).decode(image, "dwtDct")
        assert wm.extract_bits(image, n_bits).tolist() == np.asarray(their_bits, dtype=int).tolist()


def test_watermark_round_trips_through_decode(run):
    photo = _photo()
    marked = _run(run, "img_watermark", photo, text="InvokeAI")
    image = stored_image(run, marked)
    assert image.mode == "RGBA" and image.size == (256, 256)
    diff = np.abs(np.asarray(image.convert("RGB")).astype(int) - np.asarray(photo).astype(int))
    assert 0 < diff.mean() < 3  # invisible, but there
    decoded = only_output(run, {"type": "decode_watermark", "image": marked.image.model_dump(), "length": 8})
    assert decoded.value == "InvokeAI"
    short = _run(run, "img_watermark", photo, name="p2.png", text="abc")
    assert only_output(run, {"type": "decode_watermark", "image": short.image.model_dump(), "length": 3}).value == "abc"


def test_watermark_needs_a_big_enough_image(run):
    with pytest.raises(NodeExecutionError, match=r"node n \(img_watermark\): field image: .*256x256.*64x64"):
        _run(run, "img_watermark", _solid((1, 2, 3), (64, 64)))
    assert _run(run, "decode_watermark", _solid((1, 2, 3), (64, 64)), name="small.png").value == ""


def test_watermark_text_must_fit_the_image(run):
    with pytest.raises(NodeExecutionError, match=r"node n \(img_watermark\): field text: .*too long.*1024 watermark"):
        _run(run, "img_watermark", _photo(), text="x" * 129)
    assert _run(run, "decode_watermark", _photo(), name="p.png", length=129).value == ""


def test_decode_watermark_length_must_be_positive(run):
    with pytest.raises(NodeExecutionError, match=r"node n \(decode_watermark\): field length: .*got 0"):
        _run(run, "decode_watermark", _photo(), length=0)


# --- NSFW -----------------------------------------------------------------------------------------------


def _tiny_checker(root, flag_everything):
    torch = pytest.importorskip("torch")
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                                     "num_hidden_layers": 1, "vocab_size": 100},
                        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                                       "num_hidden_layers": 1, "image_size": 32, "patch_size": 8},
                        projection_dim=8)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():  # scores are cosine similarity minus the threshold: force every concept on or off
        for weights in (checker.concept_embeds_weights, checker.special_care_embeds_weights):
            weights.fill_(-10.0 if flag_everything else 10.0)
    path = root / adjust.SAFETY_CHECKER_PATH
    checker.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)


@pytest.fixture
def checker_run(tmp_path, run):
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    run.services["models"] = ModelManager(ModelRegistry(str(tmp_path / "models")), device="cpu")
    return run


@pytest.mark.parametrize("flag", [True, False])
def test_nsfw_blurs_only_flagged_images(checker_run, tmp_path, flag):
    _tiny_checker(tmp_path / "models", flag_everything=flag)
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, ::2] = 255  # stripes: a blur turns them grey
    out = np.asarray(stored_image(checker_run, _run(checker_run, "img_nsfw", Image.fromarray(pixels, "RGB")))).astype(int)
    if flag:
        assert np.abs(np.diff(out, axis=1)).max() < 10  # neighbouring stripes (255 apart) blurred together
    else:
        assert np.array_equal(out, pixels)


def test_nsfw_without_a_checker_is_a_clear_error(checker_run):
    with pytest.raises(NodeExecutionError, match=r"node n \(img_nsfw\): field image: no model at \S*/core/convert/"
                                                 r"stable-diffusion-safety-checker \(missing config.json"):
        _run(checker_run, "img_nsfw", _solid((1, 2, 3)))
    checker_run.services.pop("models")
    with pytest.raises(NodeExecutionError, match=r"node n \(img_nsfw\): field image: no model service"):
        _run(checker_run, "img_nsfw", _solid((1, 2, 3)))

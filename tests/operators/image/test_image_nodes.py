"""Image operation nodes on tiny synthetic images: sizes, pixel values and channels of the results."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import only_output, put_image, run_nodes
from PIL import Image

import invokeai_provider.operators.image.ops  # noqa: F401 (registers the image node types)
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.operators.image.io import ImageNodeError
from invokeai_provider.core.registry import InvocationRegistry

VERSIONS = {
    "blank_image": "1.2.2", "img_crop": "1.2.2", "img_pad_crop": "1.0.0", "img_paste": "1.2.2",
    "img_resize": "1.2.2", "img_scale": "1.2.2", "img_mul": "1.2.2", "img_lerp": "1.2.2", "img_ilerp": "1.2.2",
    "img_blur": "1.2.2", "img_chan": "1.2.2", "img_channel_multiply": "1.2.3", "img_channel_offset": "1.2.3",
    "img_conv": "1.2.2", "img_hue_adjust": "1.2.2", "img_noise": "1.1.0", "unsharp_mask": "1.2.2",
    "crop_image_to_bounding_box": "1.0.0", "paste_image_into_bounding_box": "1.0.0", "show_image": "1.0.1",
    "save_image_to_file": "1.0.0", "invokeai_img_blend": "1.2.0", "invokeai_img_composite": "1.2.0",
}



def result(run, output) -> Image.Image:
    image = Image.open(io.BytesIO(run.store.read("images", output.image.image_name)))
    image.load()
    assert (output.width, output.height) == image.size
    return image


def pixels(run, output) -> np.ndarray:
    return np.asarray(result(run, output)).astype(np.int32)


def solid(h: int, w: int, color) -> np.ndarray:
    return np.tile(np.asarray(color, dtype=np.uint8), (h, w, 1))


def failure(run, node: dict) -> ImageNodeError:
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"n": node})
    assert isinstance(info.value.cause, ImageNodeError)
    assert info.value.cause.node_id == "n"
    return info.value.cause


@pytest.fixture
def quad(run) -> dict:
    """8x8 RGB with four coloured quadrants: red TL, green TR, blue BL, white BR."""
    array = np.zeros((8, 8, 3), np.uint8)
    array[:4, :4] = (255, 0, 0)
    array[:4, 4:] = (0, 255, 0)
    array[4:, :4] = (0, 0, 255)
    array[4:, 4:] = (255, 255, 255)
    return put_image(run, "quad.png", array)


def test_every_node_is_registered_with_invokeai_version():
    for node_type, version in VERSIONS.items():
        cls = InvocationRegistry.get_invocation_class(node_type)
        assert cls.UIConfig.version == version, node_type
        assert cls.get_output_annotation().get_type() == "image_output"


def test_field_defaults_match_invokeai():
    classes = InvocationRegistry.invocation_classes()
    blend = classes["invokeai_img_blend"].model_fields
    assert blend["blend_mode"].default == "Normal" and blend["fit_to_height"].default is True
    assert blend["fit_to_width"].default is False and blend["color_space"].default == "RGB"
    noise = classes["img_noise"].model_fields
    assert (noise["amount"].default, noise["size"].default, noise["noise_type"].default) == (0.1, 1, "gaussian")
    assert classes["save_image_to_file"].model_fields["quality"].default == 95
    assert classes["save_image_to_file"].model_fields["use_cache"].default is False
    assert "metadata" not in classes["img_pad_crop"].model_fields and "board" not in classes["show_image"].model_fields
    assert "board" in classes["img_crop"].model_fields and "metadata" in classes["invokeai_img_composite"].model_fields


def test_blank_image_has_size_mode_and_colour(run):
    out = only_output(run, {"type": "blank_image", "width": 6, "height": 4, "color": {"r": 10, "g": 20, "b": 30, "a": 40}})
    assert result(run, out).mode == "RGB" and (out.width, out.height) == (6, 4)
    assert (pixels(run, out) == (10, 20, 30)).all()
    out = only_output(run, {"type": "blank_image", "width": 3, "height": 3, "mode": "RGBA",
                            "color": {"r": 1, "g": 2, "b": 3, "a": 40}})
    assert (pixels(run, out) == (1, 2, 3, 40)).all()


def test_blank_image_rejects_zero_width(run):
    error = failure(run, {"type": "blank_image", "width": 0, "height": 4})
    assert error.field == "width" and "positive" in str(error)


def test_crop_copies_the_rectangle_and_leaves_outside_transparent(run, quad):
    out = only_output(run, {"type": "img_crop", "image": quad, "x": 2, "y": 2, "width": 4, "height": 4})
    data = pixels(run, out)
    assert data.shape == (4, 4, 4)
    assert tuple(data[0, 0]) == (255, 0, 0, 255) and tuple(data[0, 3]) == (0, 255, 0, 255)
    assert tuple(data[3, 0]) == (0, 0, 255, 255) and tuple(data[3, 3]) == (255, 255, 255, 255)
    out = only_output(run, {"type": "img_crop", "image": quad, "x": -2, "y": 6, "width": 4, "height": 4})
    data = pixels(run, out)
    assert (data[:, :2, 3] == 0).all() and (data[2:, :, 3] == 0).all()  # outside the image
    assert tuple(data[0, 2]) == (0, 0, 255, 255)  # image pixel (0, 6)


def test_pad_crop_pads_and_crops_each_side(run, quad):
    out = only_output(run, {"type": "img_pad_crop", "image": quad, "left": 2, "top": 1, "right": -4, "bottom": 0})
    data = pixels(run, out)
    assert data.shape == (9, 6, 4)
    assert (data[0, :, 3] == 0).all() and (data[:, :2, 3] == 0).all()
    assert tuple(data[1, 2]) == (255, 0, 0, 255) and tuple(data[8, 5]) == (0, 0, 255, 255)
    out = only_output(run, {"type": "img_pad_crop", "image": quad, "left": -4, "top": -4})
    assert tuple(pixels(run, out)[0, 0]) == (255, 255, 255, 255) and (out.width, out.height) == (4, 4)


def test_pad_crop_refuses_cropping_everything(run, quad):
    error = failure(run, {"type": "img_pad_crop", "image": quad, "left": -5, "right": -3})
    assert error.field == "left" and "positive result width" in str(error)


def test_paste_grows_the_canvas_and_crop_keeps_the_base_size(run, quad):
    patch = put_image(run, "patch.png", solid(2, 2, (9, 9, 9)))
    out = only_output(run, {"type": "img_paste", "base_image": quad, "image": patch, "x": 7, "y": -1})
    data = pixels(run, out)
    assert data.shape == (9, 9, 4)  # one row above, one column right
    assert tuple(data[0, 7]) == (9, 9, 9, 255) and tuple(data[1, 8]) == (9, 9, 9, 255)
    assert tuple(data[1, 0]) == (255, 0, 0, 255) and data[0, 0, 3] == 0
    out = only_output(run, {"type": "img_paste", "base_image": quad, "image": patch, "x": 7, "y": -1, "crop": True})
    data = pixels(run, out)
    assert data.shape == (8, 8, 4) and tuple(data[0, 7]) == (9, 9, 9, 255) and tuple(data[1, 7]) == (0, 255, 0, 255)


def test_paste_shows_the_image_where_the_mask_is_black(run, quad):
    patch = put_image(run, "patch.png", solid(2, 2, (9, 9, 9)))
    mask = put_image(run, "mask.png", np.array([[0, 255], [255, 255]], np.uint8))
    out = only_output(run, {"type": "img_paste", "base_image": quad, "image": patch, "mask": mask, "x": 0, "y": 0})
    data = pixels(run, out)
    assert tuple(data[0, 0]) == (9, 9, 9, 255) and tuple(data[0, 1]) == (255, 0, 0, 255)


def test_resize_and_scale_give_the_requested_sizes(run, quad):
    out = only_output(run, {"type": "img_resize", "image": quad, "width": 16, "height": 4, "resample_mode": "nearest"})
    data = pixels(run, out)
    assert data.shape == (4, 16, 3) and tuple(data[0, 0]) == (255, 0, 0) and tuple(data[3, 15]) == (255, 255, 255)
    out = only_output(run, {"type": "img_scale", "image": quad, "scale_factor": 1.5, "resample_mode": "nearest"})
    assert (out.width, out.height) == (12, 12) and tuple(pixels(run, out)[11, 0]) == (0, 0, 255)
    error = failure(run, {"type": "img_scale", "image": quad, "scale_factor": 0.1})
    assert error.field == "scale_factor"


def test_multiply_scales_by_the_other_image(run):
    first = put_image(run, "a.png", solid(4, 4, (200, 100, 255)))
    second = put_image(run, "b.png", solid(4, 4, (128, 255, 0)))
    data = pixels(run, only_output(run, {"type": "img_mul", "image1": first, "image2": second}))
    assert tuple(data[2, 2]) == (200 * 128 // 255, 100, 0)


def test_lerp_and_inverse_lerp_map_value_ranges(run):
    ramp = put_image(run, "ramp.png", np.array([[0, 51, 102, 255]], np.uint8))
    data = pixels(run, only_output(run, {"type": "img_lerp", "image": ramp, "min": 100, "max": 200}))
    assert data.tolist() == [[100, 120, 140, 200]]
    data = pixels(run, only_output(run, {"type": "img_ilerp", "image": ramp, "min": 51, "max": 102}))
    assert data.tolist() == [[0, 0, 255, 255]]
    data = pixels(run, only_output(run, {"type": "img_ilerp", "image": ramp, "min": 51, "max": 51}))
    assert data.tolist() == [[0, 0, 255, 255]]


def test_blur_keeps_uniform_images_and_does_not_bleed_transparent_black(run):
    flat = put_image(run, "flat.png", solid(8, 8, (50, 100, 150)))
    data = pixels(run, only_output(run, {"type": "img_blur", "image": flat, "radius": 2}))
    assert np.abs(data - (50, 100, 150, 255)).max() <= 1
    spot = np.zeros((16, 16, 4), np.uint8)
    spot[6:10, 6:10] = (255, 0, 0, 255)
    data = pixels(run, only_output(run, {"type": "img_blur", "image": put_image(run, "spot.png", spot), "radius": 2}))
    edge = data[5, 8]
    assert 0 < edge[3] < 255 and edge[0] >= 250 and edge[1] == 0  # faded alpha, colour stays red
    data = pixels(run, only_output(run, {"type": "img_blur", "image": put_image(run, "spot.png", spot), "radius": 1,
                                         "blur_type": "box"}))
    assert data[8, 8, 3] == 255 and data[4, 8, 3] == 0


def test_extract_channel(run):
    rgba = put_image(run, "rgba.png", solid(2, 2, (10, 20, 30, 40)))
    out = only_output(run, {"type": "img_chan", "image": rgba, "channel": "G"})
    assert result(run, out).mode == "L" and (pixels(run, out) == 20).all()
    assert (pixels(run, only_output(run, {"type": "img_chan", "image": rgba})) == 40).all()
    error = failure(run, {"type": "img_chan", "image": put_image(run, "rgb.png", solid(2, 2, (1, 2, 3))), "channel": "A"})
    assert error.field == "channel" and "no channel 'A'" in str(error)


def test_channel_offset_clamps_wraps_hue_and_keeps_alpha(run):
    rgba = put_image(run, "rgba.png", solid(2, 2, (250, 20, 30, 99)))
    data = pixels(run, only_output(run, {"type": "img_channel_offset", "image": rgba, "channel": "Red (RGBA)",
                                         "offset": 10}))
    assert tuple(data[0, 0]) == (255, 20, 30, 99)
    data = pixels(run, only_output(run, {"type": "img_channel_offset", "image": rgba, "channel": "Alpha (RGBA)",
                                         "offset": -50}))
    assert tuple(data[0, 0]) == (250, 20, 30, 49)
    red = put_image(run, "red.png", solid(2, 2, (255, 0, 0, 255)))
    data = pixels(run, only_output(run, {"type": "img_channel_offset", "image": red, "channel": "Hue (HSV)",
                                         "offset": 85}))  # a third of the way round: green
    assert data[0, 0, 1] > 240 and data[0, 0, 0] < 10 and data[0, 0, 2] < 10


def test_channel_multiply_scales_and_inverts(run):
    rgba = put_image(run, "rgba.png", solid(2, 2, (100, 200, 30, 99)))
    data = pixels(run, only_output(run, {"type": "img_channel_multiply", "image": rgba, "channel": "Green (RGBA)",
                                         "scale": 2.0}))
    assert tuple(data[0, 0]) == (100, 255, 30, 99)
    data = pixels(run, only_output(run, {"type": "img_channel_multiply", "image": rgba, "channel": "Blue (RGBA)",
                                         "scale": 0.5, "invert_channel": True}))
    assert tuple(data[0, 0]) == (100, 200, 240, 99)
    data = pixels(run, only_output(run, {"type": "img_channel_multiply", "image": rgba,
                                         "channel": "Luminosity (LAB)", "scale": 0.0}))
    assert data[0, 0, :3].sum() < 60 and data[0, 0, 3] == 99  # no lightness: (nearly) black


def test_convert_mode(run, quad):
    out = only_output(run, {"type": "img_conv", "image": quad})
    data = pixels(run, out)
    assert result(run, out).mode == "L" and data[7, 7] == 255 and data[0, 0] == 76  # ITU-R 601 luma of red
    assert result(run, only_output(run, {"type": "img_conv", "image": quad, "mode": "RGBA"})).mode == "RGBA"
    wide = result(run, only_output(run, {"type": "img_conv", "image": quad, "mode": "I"}))
    assert wide.mode.startswith("I") and wide.getpixel((7, 7)) == 255  # stored as a 16-bit PNG
    error = failure(run, {"type": "img_conv", "image": quad, "mode": "CMYK"})
    assert error.field == "mode" and "PNG" in str(error)


def test_hue_adjust_rotates_red_to_green(run):
    red = put_image(run, "red.png", solid(2, 2, (255, 0, 0)))
    data = pixels(run, only_output(run, {"type": "img_hue_adjust", "image": red, "hue": 120}))
    assert data.shape == (2, 2, 4) and data[0, 0, 1] > 240 and data[0, 0, 0] < 10 and data[0, 0, 3] == 255


def test_noise_is_seeded_and_respects_amount_and_mask(run):
    grey = put_image(run, "grey.png", solid(8, 8, (128, 128, 128, 200)))
    node = {"type": "img_noise", "image": grey, "seed": 3, "amount": 0.5}
    first, again = pixels(run, only_output(run, node)), pixels(run, only_output(run, node))
    other = pixels(run, only_output(run, {**node, "seed": 4}))
    assert (first == again).all() and (first != other).any() and (first[..., 3] == 200).all()
    assert (pixels(run, only_output(run, {**node, "amount": 0.0}))[..., :3] == 128).all()
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255  # white: no noise
    masked = pixels(run, only_output(run, {**node, "mask": put_image(run, "m.png", mask)}))
    assert (masked[:, 4:, :3] == 128).all() and (masked[:, :4] == first[:, :4]).all()
    salt = pixels(run, only_output(run, {**node, "noise_type": "salt_and_pepper", "noise_color": False, "size": 2}))
    assert set(np.unique(salt[..., 0])) <= {64, 191, 192} and (salt[..., 0] == salt[..., 1]).all()
    assert (salt[0::2, 0::2] == salt[1::2, 1::2]).all()  # 2x2 noise points


def test_unsharp_mask_sharpens_edges_and_keeps_alpha(run):
    flat = put_image(run, "flat.png", solid(8, 8, (90, 90, 90, 77)))
    data = pixels(run, only_output(run, {"type": "unsharp_mask", "image": flat}))
    assert (data == (90, 90, 90, 77)).all()
    step = np.full((8, 8, 3), 100, np.uint8)
    step[:, 4:] = 150
    data = pixels(run, only_output(run, {"type": "unsharp_mask", "image": put_image(run, "s.png", step), "strength": 100}))
    assert data.shape == (8, 8, 3) and data[4, 3, 0] < 100 and data[4, 4, 0] > 150  # overshoot at the edge


def test_crop_to_bounding_box_or_to_the_opaque_pixels(run, quad):
    box = {"x_min": 2, "y_min": 3, "x_max": 6, "y_max": 5}
    out = only_output(run, {"type": "crop_image_to_bounding_box", "image": quad, "bounding_box": box})
    data = pixels(run, out)
    assert data.shape == (2, 4, 3) and tuple(data[0, 0]) == (255, 0, 0) and tuple(data[1, 3]) == (255, 255, 255)
    sprite = np.zeros((8, 8, 4), np.uint8)
    sprite[1:3, 2:7] = (5, 6, 7, 255)
    out = only_output(run, {"type": "crop_image_to_bounding_box", "image": put_image(run, "sprite.png", sprite)})
    assert (out.width, out.height) == (5, 2) and (pixels(run, out) == (5, 6, 7, 255)).all()


def test_paste_into_bounding_box(run, quad):
    patch = np.zeros((2, 3, 4), np.uint8)
    patch[..., :] = (9, 8, 7, 255)
    patch[0, 0, 3] = 0  # transparent: the target shows through
    source = put_image(run, "p.png", patch)
    box = {"x_min": 4, "y_min": 6, "x_max": 7, "y_max": 8}
    data = pixels(run, only_output(run, {"type": "paste_image_into_bounding_box", "source_image": source,
                                         "target_image": quad, "bounding_box": box}))
    assert data.shape == (8, 8, 4) and tuple(data[7, 6]) == (9, 8, 7, 255)
    assert tuple(data[6, 4]) == (255, 255, 255, 255) and tuple(data[5, 5]) == (255, 255, 255, 255)
    error = failure(run, {"type": "paste_image_into_bounding_box", "source_image": source, "target_image": quad,
                          "bounding_box": {"x_min": 0, "y_min": 0, "x_max": 2, "y_max": 2}})
    assert error.field == "bounding_box" and "size of source_image" in str(error)


def test_show_image_passes_the_image_on(run, quad):
    out = only_output(run, {"type": "show_image", "image": quad})
    assert out.image.image_name == "quad.png" and (out.width, out.height) == (8, 8)


def test_save_image_to_file_saves_and_exports_a_named_copy(run, quad):
    out = only_output(run, {"type": "save_image_to_file", "image": quad, "output_directory": "exp/2026",
                            "prefix": "hero_", "suffix": "_v2", "file_format": "jpg", "quality": 90})
    assert out.image.image_name != "quad.png" and (pixels(run, out) == pixels(run, only_output(
        run, {"type": "show_image", "image": quad}))).all()
    stem = out.image.image_name.rsplit(".", 1)[0]
    key = f"{run.store.prefix}/exports/exp/2026/hero_{stem}_v2.jpg"
    exported = Image.open(io.BytesIO(run.store.backend.read_bytes(key)))
    assert exported.format == "JPEG" and exported.size == (8, 8)
    error = failure(run, {"type": "save_image_to_file", "image": quad, "output_directory": "../escape"})
    assert error.field == "output_directory"
    assert failure(run, {"type": "save_image_to_file", "image": quad, "output_directory": "/tmp"}).field == \
        "output_directory"


def blend(run, upper, base, **fields):
    return pixels(run, only_output(run, {"type": "invokeai_img_blend", "layer_upper": upper, "layer_base": base,
                                         **fields}))


def test_blend_normal_with_opacity_and_mask(run):
    upper = put_image(run, "u.png", solid(4, 4, (200, 0, 100)))
    base = put_image(run, "b.png", solid(4, 4, (0, 100, 50)))
    assert (blend(run, upper, base) == (200, 0, 100)).all()
    assert np.abs(blend(run, upper, base, opacity=0.5) - (100, 50, 75)).max() <= 1
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 2:] = 255  # white restricts the blend: base shows
    data = blend(run, upper, base, mask=put_image(run, "m.png", mask))
    assert (data[:, :2] == (200, 0, 100)).all() and (data[:, 2:] == (0, 100, 50)).all()


def test_blend_modes_in_rgb(run):
    upper = put_image(run, "u.png", solid(2, 2, (255, 128, 0)))
    base = put_image(run, "b.png", solid(2, 2, (100, 200, 50)))
    assert np.abs(blend(run, upper, base, blend_mode="Multiply")[0, 0] - (100, 100, 0)).max() <= 1
    assert np.abs(blend(run, upper, base, blend_mode="Screen")[0, 0] - (255, 228, 50)).max() <= 1
    assert tuple(blend(run, upper, base, blend_mode="Darken Only")[0, 0]) == (100, 128, 0)
    assert tuple(blend(run, upper, base, blend_mode="Lighten Only")[0, 0]) == (255, 200, 50)
    assert np.abs(blend(run, upper, base, blend_mode="Difference")[0, 0] - (155, 72, 50)).max() <= 1
    assert tuple(blend(run, upper, base, blend_mode="Linear Dodge (Add)")[0, 0]) == (255, 255, 50)
    assert tuple(blend(run, upper, base, blend_mode="Subtract")[0, 0]) == (0, 72, 50)


def test_blend_color_modes_take_hue_from_the_upper_layer(run):
    red = put_image(run, "red.png", solid(2, 2, (255, 0, 0)))
    grey = put_image(run, "grey.png", solid(2, 2, (128, 128, 128)))
    data = blend(run, red, grey, blend_mode="Luminosity")[0, 0]  # base has no chroma: grey at red's lightness
    assert data[0] == data[1] == data[2] and abs(int(data[0]) - 128) <= 1
    data = blend(run, red, put_image(run, "blue.png", solid(2, 2, (0, 0, 255))), blend_mode="Hue")[0, 0]
    assert tuple(data) == (255, 0, 0)
    for space in ("Oklch (Oklab)", "LCh (CIELab)", "HSV (RGB)", "Linear RGB"):
        data = blend(run, red, grey, color_space=space)[0, 0]
        assert np.abs(data - (255, 0, 0)).max() <= 2, space
    error = failure(run, {"type": "invokeai_img_blend", "layer_upper": red, "layer_base": grey, "color_space": "Okhsl"})
    assert error.field == "color_space"


def test_blend_keeps_base_mode_and_fits_the_upper_layer(run):
    tall = put_image(run, "tall.png", solid(4, 2, (10, 20, 30, 255)))
    wide = put_image(run, "wide.png", solid(2, 8, (10, 20, 30, 255)))
    base = put_image(run, "b.png", solid(4, 4, (0, 0, 0, 255)))
    data = blend(run, tall, base)  # fit_to_height, narrower layer: letterboxed with transparent bars
    assert data.shape == (4, 4, 4) and tuple(data[1, 1]) == (10, 20, 30, 255) and tuple(data[1, 0]) == (0, 0, 0, 255)
    assert (blend(run, wide, base) == (10, 20, 30, 255)).all()  # wider layer: cropped to fill
    assert (blend(run, tall, base, fit_to_width=True, fit_to_height=True) == (10, 20, 30, 255)).all()
    grey = put_image(run, "g.png", np.full((4, 4), 50, np.uint8))
    out = only_output(run, {"type": "invokeai_img_blend", "layer_upper": tall, "layer_base": grey,
                            "fit_to_width": True})
    assert result(run, out).mode == "L"
    error = failure(run, {"type": "invokeai_img_blend", "layer_upper": tall, "layer_base": base,
                          "fit_to_height": False})
    assert error.field == "fit_to_height"


def test_compositor_removes_a_flat_backdrop_by_flood_fill_and_by_chroma_key(run):
    subject = solid(8, 8, (0, 255, 0, 255))
    subject[3:5, 3:5] = (200, 0, 0, 255)
    subject_field = put_image(run, "s.png", subject)
    background = put_image(run, "bg.png", solid(8, 8, (0, 0, 255, 255)))
    node = {"type": "invokeai_img_composite", "image_subject": subject_field, "image_background": background}
    data = pixels(run, only_output(run, node))
    assert tuple(data[0, 0]) == (0, 0, 255, 255) and tuple(data[3, 3]) == (200, 0, 0, 255)
    data = pixels(run, only_output(run, {**node, "chroma_key": "lime"}))
    assert tuple(data[7, 0]) == (0, 0, 255, 255) and tuple(data[4, 4]) == (200, 0, 0, 255)
    data = pixels(run, only_output(run, {**node, "chroma_key": "(0, 255, 0)", "x_offset": 2, "y_offset": -1}))
    assert tuple(data[4, 5]) == (200, 0, 0, 255) and tuple(data[3, 3]) == (0, 0, 255, 255)
    error = failure(run, {**node, "chroma_key": "(1, 2, nonsense"})
    assert error.field == "chroma_key"

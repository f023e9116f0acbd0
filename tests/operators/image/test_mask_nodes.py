"""Mask nodes: declarations match InvokeAI, and each one makes the mask it should on small synthetic images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers import edge, only_output, put_image, run_nodes
from PIL import Image
from safetensors.torch import load, save

from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.core.registry import InvocationRegistry

# type -> (title, version, category, output type)
DECLARED = {
    "rectangle_mask": ("Create Rectangle Mask", "1.0.1", "mask", "mask_output"),
    "alpha_mask_to_tensor": ("Alpha Mask to Tensor", "1.0.0", "mask", "mask_output"),
    "invert_tensor_mask": ("Invert Tensor Mask", "1.1.0", "mask", "mask_output"),
    "image_mask_to_tensor": ("Image Mask to Tensor", "1.0.0", "mask", "mask_output"),
    "tensor_mask_to_image": ("Tensor Mask to Image", "1.1.0", "mask", "image_output"),
    "apply_tensor_mask_to_image": ("Apply Tensor Mask to Image", "1.0.0", "mask", "image_output"),
    "get_image_mask_bounding_box": ("Get Image Mask Bounding Box", "1.0.0", "mask", "bounding_box_output"),
    "tomask": ("Mask from Alpha", "1.2.2", "mask", "image_output"),
    "mask_edge": ("Mask Edge", "1.2.2", "mask", "image_output"),
    "mask_combine": ("Combine Masks", "1.2.2", "mask", "image_output"),
    "mask_from_id": ("Mask from Segmented Image", "1.0.1", "mask", "image_output"),
    "expand_mask_with_fade": ("Expand Mask with Fade", "1.0.1", "mask", "image_output"),
    "apply_mask_to_image": ("Apply Mask to Image", "1.0.0", "mask", "image_output"),
}



def put_tensor(run, name: str, tensor: torch.Tensor) -> dict:
    run.store.write("tensors", name + ".safetensors", save({"tensor": tensor}))
    return {"tensor_name": name}


def image_of(run, output) -> Image.Image:
    image = Image.open(io.BytesIO(run.store.read("images", output.image.image_name)))
    image.load()
    return image


def tensor_of(run, output) -> torch.Tensor:
    return load(run.store.read("tensors", output.mask.tensor_name + ".safetensors"))["tensor"]


def test_declarations_match_invokeai():
    for node_type, (title, version, category, output_type) in DECLARED.items():
        cls = InvocationRegistry.get_invocation_class(node_type)
        ui = cls.UIConfig
        assert (ui.title, ui.version, ui.category) == (title, version, category), node_type
        assert cls.get_output_annotation().get_type() == output_type, node_type


def test_field_names_and_defaults():
    fields = {t: set(InvocationRegistry.get_invocation_class(t).input_fields()) for t in DECLARED}
    assert fields["rectangle_mask"] == {"metadata", "width", "height", "x_left", "y_top", "rectangle_width",
                                        "rectangle_height"}
    assert fields["get_image_mask_bounding_box"] == {"mask", "margin", "mask_color"}
    assert fields["apply_tensor_mask_to_image"] == {"metadata", "board", "mask", "image", "invert"}
    assert fields["mask_edge"] == {"metadata", "board", "image", "edge_size", "edge_blur", "low_threshold",
                                   "high_threshold"}
    bbox = InvocationRegistry.get_invocation_class("get_image_mask_bounding_box")(id="b")
    assert bbox.margin == 0 and bbox.mask_color.tuple() == (255, 255, 255, 255)
    assert InvocationRegistry.get_invocation_class("image_mask_to_tensor")(id="m").cutoff == 128
    assert InvocationRegistry.get_invocation_class("mask_from_id")(id="m").threshold == 100
    fade = InvocationRegistry.get_invocation_class("expand_mask_with_fade")(id="f")
    assert (fade.threshold, fade.fade_size_px) == (0, 32)


def test_mask_output_is_the_shared_primitive_class():
    from invokeai_provider.operators.core.primitives import MaskOutput

    assert InvocationRegistry.get_invocation_class("rectangle_mask").get_output_annotation() is MaskOutput


def test_rectangle_mask_marks_the_rectangle_clipped_to_the_mask(run):
    out = only_output(run, {"type": "rectangle_mask", "width": 10, "height": 6, "x_left": 7, "y_top": 2,
                            "rectangle_width": 5, "rectangle_height": 3})
    assert (out.width, out.height) == (10, 6)
    mask = tensor_of(run, out)
    assert mask.dtype == torch.bool and tuple(mask.shape) == (1, 6, 10)
    assert int(mask.sum()) == 3 * 3  # x 7..9 (clipped), y 2..4
    assert bool(mask[0, 2, 7]) and bool(mask[0, 4, 9]) and not bool(mask[0, 1, 7]) and not bool(mask[0, 2, 6])


def test_rectangle_mask_refuses_a_negative_coordinate(run):
    with pytest.raises(NodeExecutionError, match=r"node n \(rectangle_mask\): field x_left: expected a value >= 0"):
        only_output(run, {"type": "rectangle_mask", "width": 4, "height": 4, "x_left": -1, "y_top": 0,
                          "rectangle_width": 2, "rectangle_height": 2})


def test_alpha_mask_to_tensor_is_true_where_opaque(run):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[1:3, 1:4, 3] = 200
    image = put_image(run, "a.png", rgba, "RGBA")
    mask = tensor_of(run, only_output(run, {"type": "alpha_mask_to_tensor", "image": image}))
    assert mask.shape == (1, 4, 5) and int(mask.sum()) == 6 and bool(mask[0, 1, 1])
    inverted = tensor_of(run, only_output(run, {"type": "alpha_mask_to_tensor", "image": image, "invert": True}))
    assert int(inverted.sum()) == 20 - 6 and not bool(inverted[0, 1, 1])


def test_image_mask_to_tensor_thresholds_at_the_cutoff(run):
    gray = np.array([[0, 127, 128, 255]], np.uint8)
    image = put_image(run, "g.png", gray, "L")
    mask = tensor_of(run, only_output(run, {"type": "image_mask_to_tensor", "image": image}))
    assert mask[0, 0].tolist() == [True, True, False, False]
    mask = tensor_of(run, only_output(run, {"type": "image_mask_to_tensor", "image": image, "cutoff": 200,
                                            "invert": True}))
    assert mask[0, 0].tolist() == [False, False, False, True]


def test_invert_tensor_mask_accepts_2d_and_3d(run):
    flat = put_tensor(run, "flat", torch.tensor([[True, False], [False, False]]))
    out = only_output(run, {"type": "invert_tensor_mask", "mask": flat})
    assert (out.width, out.height) == (2, 2)
    assert tensor_of(run, out).tolist() == [[[False, True], [True, True]]]


def test_invert_tensor_mask_refuses_a_float_tensor(run):
    floats = put_tensor(run, "f", torch.zeros(1, 2, 2))
    with pytest.raises(NodeExecutionError, match=r"field mask: expected a bool tensor"):
        only_output(run, {"type": "invert_tensor_mask", "mask": floats})


def test_rectangle_to_image_through_an_edge(run):
    state = run_nodes(run, {
        "rect": {"type": "rectangle_mask", "width": 8, "height": 8, "x_left": 2, "y_top": 3, "rectangle_width": 4,
                 "rectangle_height": 2},
        "img": {"type": "tensor_mask_to_image"},
    }, [edge("rect", "mask", "img", "mask")])
    [out] = state.outputs_of("img")
    pixels = np.asarray(image_of(run, out))
    assert (out.width, out.height) == (8, 8)
    assert pixels.dtype == np.uint8 and (pixels == 255).sum() == 8 and pixels[3, 2] == 255 and pixels[0, 0] == 0


def test_tensor_mask_to_image_cuts_float_masks_at_one_half(run):
    mask = put_tensor(run, "m", torch.tensor([[[0.2, 0.7, 1.0]]]))
    pixels = np.asarray(image_of(run, only_output(run, {"type": "tensor_mask_to_image", "mask": mask})))
    assert pixels.tolist() == [[0, 255, 255]]


def test_apply_tensor_mask_sets_alpha_but_keeps_transparent_pixels(run):
    rgba = np.full((2, 3, 4), 255, np.uint8)
    rgba[0, 2, 3] = 0  # already transparent
    image = put_image(run, "i.png", rgba, "RGBA")
    mask = put_tensor(run, "m", torch.tensor([[[True, False, True], [False, True, True]]]))
    out = only_output(run, {"type": "apply_tensor_mask_to_image", "image": image, "mask": mask})
    alpha = np.asarray(image_of(run, out))[:, :, 3]
    assert alpha.tolist() == [[255, 0, 0], [0, 255, 255]]
    out = only_output(run, {"type": "apply_tensor_mask_to_image", "image": image, "mask": mask, "invert": True})
    assert np.asarray(image_of(run, out))[:, :, 3].tolist() == [[0, 255, 0], [255, 0, 0]]


def test_apply_tensor_mask_of_another_size_fails_clearly(run):
    image = put_image(run, "i.png", np.zeros((2, 3, 3), np.uint8), "RGB")
    mask = put_tensor(run, "m", torch.ones(1, 4, 4, dtype=torch.bool))
    with pytest.raises(NodeExecutionError, match=r"field mask: expected a mask of the image's size 3x2"):
        only_output(run, {"type": "apply_tensor_mask_to_image", "image": image, "mask": mask})


def test_bounding_box_of_the_white_pixels(run):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[5:9, 10:17] = 255  # rows 5..8, columns 10..16
    rgb[0, 0] = (255, 255, 254)  # not exactly white: ignored
    mask = put_image(run, "m.png", rgb, "RGB")
    box = only_output(run, {"type": "get_image_mask_bounding_box", "mask": mask}).bounding_box
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (10, 5, 17, 9)
    box = only_output(run, {"type": "get_image_mask_bounding_box", "mask": mask, "margin": 12}).bounding_box
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (0, 0, 29, 20)  # 16 + 1 + 12, clipped at the bottom only


def test_bounding_box_of_another_colour_and_of_nothing(run):
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[2, 3] = (255, 0, 0)
    rgb[7, 6] = (255, 0, 0)
    mask = put_image(run, "m.png", rgb, "RGB")
    red = {"r": 255, "g": 0, "b": 0, "a": 255}
    box = only_output(run, {"type": "get_image_mask_bounding_box", "mask": mask, "mask_color": red}).bounding_box
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (3, 2, 7, 8)
    box = only_output(run, {"type": "get_image_mask_bounding_box", "mask": mask}).bounding_box
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (0, 0, 0, 0)


def test_tomask_takes_the_alpha_channel(run):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 2] = 77  # a blue channel that must not be mistaken for the alpha
    rgba[0, 0, 3], rgba[1, 1, 3] = 255, 40
    image = put_image(run, "a.png", rgba, "RGBA")
    out = only_output(run, {"type": "tomask", "image": image})
    mask = image_of(run, out)
    assert mask.mode == "L" and np.asarray(mask).tolist() == [[255, 0], [0, 40]]
    inverted = image_of(run, only_output(run, {"type": "tomask", "image": image, "invert": True}))
    assert np.asarray(inverted).tolist() == [[0, 255], [255, 215]]
    opaque = put_image(run, "rgb.png", np.zeros((2, 2, 3), np.uint8), "RGB")
    assert np.asarray(image_of(run, only_output(run, {"type": "tomask", "image": opaque}))).min() == 255


def test_mask_combine_multiplies(run):
    first = put_image(run, "1.png", np.array([[255, 255, 0, 128]], np.uint8), "L")
    second = put_image(run, "2.png", np.array([[255, 0, 255, 128]], np.uint8), "L")
    out = only_output(run, {"type": "mask_combine", "mask1": first, "mask2": second})
    assert np.asarray(image_of(run, out)).tolist() == [[255, 0, 0, 64]]


def test_mask_combine_of_different_sizes_fails_clearly(run):
    first = put_image(run, "1.png", np.zeros((2, 2), np.uint8), "L")
    second = put_image(run, "2.png", np.zeros((3, 3), np.uint8), "L")
    with pytest.raises(NodeExecutionError, match=r"node n \(mask_combine\): field mask2: expected the size of mask1"):
        only_output(run, {"type": "mask_combine", "mask1": first, "mask2": second})


def test_a_missing_input_image_is_named_by_its_field(run):
    first = put_image(run, "1.png", np.zeros((2, 2), np.uint8), "L")
    with pytest.raises(NodeExecutionError, match=r"node n \(mask_combine\): field mask2: expected an image in the "
                                                 r"run's store"):
        only_output(run, {"type": "mask_combine", "mask1": first, "mask2": {"image_name": "never-made.png"}})


def test_mask_from_id_selects_the_colour_within_the_threshold(run):
    rgb = np.zeros((1, 4, 3), np.uint8)
    rgb[0] = [(200, 10, 10), (180, 60, 10), (10, 200, 10), (200, 10, 10)]
    image = put_image(run, "id.png", rgb, "RGB")
    color = {"r": 200, "g": 0, "b": 0, "a": 255}
    out = only_output(run, {"type": "mask_from_id", "image": image, "color": color, "threshold": 30})
    assert np.asarray(image_of(run, out)).tolist() == [[255, 0, 0, 255]]
    out = only_output(run, {"type": "mask_from_id", "image": image, "color": color, "threshold": 70, "invert": True})
    assert np.asarray(image_of(run, out)).tolist() == [[0, 0, 255, 0]]


def test_mask_edge_is_black_on_a_band_around_the_edge(run):
    gray = np.zeros((40, 40), np.uint8)
    gray[10:30, 10:30] = 255
    image = put_image(run, "sq.png", gray, "L")
    out = only_output(run, {"type": "mask_edge", "image": image, "edge_size": 4, "edge_blur": 0,
                            "low_threshold": 100, "high_threshold": 200})
    mask = np.asarray(image_of(run, out))
    assert mask[10, 20] == 0 and mask[9, 20] == 0 and mask[11, 20] == 0  # on the edge: black
    assert mask[20, 20] == 255 and mask[2, 2] == 255  # far from it: white
    assert set(np.unique(mask)) == {0, 255}
    blurred = np.asarray(image_of(run, only_output(run, {"type": "mask_edge", "image": image, "edge_size": 4,
                                                         "edge_blur": 2, "low_threshold": 100,
                                                         "high_threshold": 200})))
    assert len(np.unique(blurred)) > 2


def test_expand_mask_with_fade_grows_black_with_a_ramp(run):
    gray = np.full((1, 60), 255, np.uint8)
    gray[0, :10] = 0
    image = put_image(run, "m.png", np.repeat(gray, 3, axis=0), "L")
    out = only_output(run, {"type": "expand_mask_with_fade", "mask": image, "fade_size_px": 20})
    row = np.asarray(image_of(run, out))[1].astype(int)
    assert (row[:10] == 0).all()  # the black region stays black
    assert row[10] < 10  # one pixel past the edge: still (almost) black
    assert all(a <= b for a, b in zip(row[10:30], row[11:31]))  # monotone ramp
    assert 50 < row[14] < 80 and 150 < row[20] < 175  # 5 and 11 px out: about 25% and 64% white
    assert (row[29:] == 255).all()  # from the fade distance on: white


def test_expand_mask_with_zero_fade_returns_the_mask(run):
    gray = np.array([[0, 90, 255]], np.uint8)
    image = put_image(run, "m.png", gray, "L")
    out = only_output(run, {"type": "expand_mask_with_fade", "mask": image, "fade_size_px": 0})
    assert np.asarray(image_of(run, out)).tolist() == [[0, 90, 255]]


def test_apply_mask_to_image_puts_the_mask_in_the_alpha(run):
    rgb = np.full((1, 3, 3), 50, np.uint8)
    image = put_image(run, "i.png", rgb, "RGB")
    mask = put_image(run, "m.png", np.array([[0, 100, 255]], np.uint8), "L")
    result = np.asarray(image_of(run, only_output(run, {"type": "apply_mask_to_image", "image": image,
                                                        "mask": mask})))
    assert result[0, :, 3].tolist() == [0, 100, 255] and (result[..., :3] == 50).all()
    result = np.asarray(image_of(run, only_output(run, {"type": "apply_mask_to_image", "image": image, "mask": mask,
                                                        "invert_mask": True})))
    assert result[0, :, 3].tolist() == [255, 155, 0]

"""Infill, OpenCV inpaint and canvas helper nodes on small synthetic images: what they fill, what they keep."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import only_output, put_image
from PIL import Image

from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.core.registry import InvocationRegistry

# type -> (title, version, category, output type)
DECLARED = {
    "infill_rgba": ("Solid Color Infill", "1.2.2", "inpaint", "image_output"),
    "infill_tile": ("Tile Infill", "1.2.3", "inpaint", "image_output"),
    "infill_patchmatch": ("PatchMatch Infill", "1.2.2", "inpaint", "image_output"),
    "infill_cv2": ("CV2 Infill", "1.2.2", "inpaint", "image_output"),
    "infill_lama": ("LaMa Infill", "1.2.2", "inpaint", "image_output"),
    "cv_inpaint": ("OpenCV Inpaint", "1.3.1", "inpaint", "image_output"),
    "canvas_output": ("Canvas Output", "1.0.0", "canvas", "image_output"),
    "canvas_paste_back": ("Canvas Paste Back", "1.0.1", "canvas", "image_output"),
    "canvas_v2_mask_and_crop": ("Canvas V2 Mask and Crop", "1.0.0", "canvas", "image_output"),
    "image_panel_layout": ("Image Panel Layout", "1.0.0", "canvas", "image_panel_coordinate_output"),
}



def pixels_of(run, output) -> np.ndarray:
    with Image.open(io.BytesIO(run.store.read("images", output.image.image_name))) as image:
        return np.asarray(image.convert("RGBA") if image.mode != "RGB" else image).copy()


def holed(width: int = 64, height: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """An opaque horizontal red-to-green ramp with a fully transparent rectangle; returns (rgba, hole)."""
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., 0] = np.linspace(255, 0, width, dtype=np.uint8)[None, :]
    rgba[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    rgba[..., 2] = 40
    rgba[..., 3] = 255
    hole = np.zeros((height, width), bool)
    hole[16:32, 24:40] = True
    rgba[hole] = 0
    return rgba, hole


def test_declarations_match_invokeai():
    for node_type, (title, version, category, output_type) in DECLARED.items():
        cls = InvocationRegistry.get_invocation_class(node_type)
        assert (cls.UIConfig.title, cls.UIConfig.version, cls.UIConfig.category) == (title, version, category)
        assert cls.get_output_annotation().get_type() == output_type, node_type
    assert InvocationRegistry.get_invocation_class("canvas_output")(id="c").use_cache is False
    assert InvocationRegistry.get_invocation_class("canvas_v2_mask_and_crop").UIConfig.classification.value == \
        "deprecated"
    fields = {t: set(InvocationRegistry.get_invocation_class(t).input_fields()) for t in DECLARED}
    assert fields["infill_tile"] == {"metadata", "board", "image", "tile_size", "seed"}
    assert fields["infill_patchmatch"] == {"metadata", "board", "image", "downscale", "resample_mode"}
    assert fields["infill_lama"] == fields["infill_cv2"] == {"metadata", "board", "image"}
    assert fields["canvas_paste_back"] == {"metadata", "board", "source_image", "target_image", "mask", "mask_blur"}
    assert fields["image_panel_layout"] == {"width", "height", "num_cols", "num_rows", "panel_col_idx",
                                            "panel_row_idx"}
    tile = InvocationRegistry.get_invocation_class("infill_tile")(id="t")
    assert (tile.tile_size, tile.seed) == (32, 0)
    patch = InvocationRegistry.get_invocation_class("infill_patchmatch")(id="p")
    assert (patch.downscale, patch.resample_mode) == (2.0, "bicubic")
    assert InvocationRegistry.get_invocation_class("infill_rgba")(id="r").color.tuple() == (127, 127, 127, 255)


def test_infill_rgba_fills_the_hole_with_the_colour_and_keeps_the_rest(run):
    rgba, hole = holed()
    image = put_image(run, "h.png", rgba, "RGBA")
    out = only_output(run, {"type": "infill_rgba", "image": image, "color": {"r": 10, "g": 200, "b": 30, "a": 255}})
    result = pixels_of(run, out)
    assert (out.width, out.height) == (64, 48)
    assert (result[hole] == (10, 200, 30, 255)).all()
    assert (result[~hole] == rgba[~hole]).all()


def test_infill_rgba_blends_half_transparent_pixels_over_the_colour(run):
    # as in InvokeAI: composited over the colour, then the pixel is pasted once more through its own alpha
    rgba = np.array([[[200, 0, 0, 128], [0, 0, 0, 0]]], np.uint8)
    out = only_output(run, {"type": "infill_rgba", "image": put_image(run, "h.png", rgba, "RGBA")})
    result = pixels_of(run, out).astype(int)
    assert (result[0, 1] == (127, 127, 127, 255)).all()
    over = 200 * 128 / 255 + 127 * (1 - 128 / 255)
    assert abs(result[0, 0, 0] - (over * (1 - 128 / 255) + 200 * 128 / 255)) <= 2  # about 182
    assert abs(result[0, 0, 3] - (255 * (1 - 128 / 255) + 128 * 128 / 255)) <= 2  # about 191


def test_an_image_without_alpha_is_passed_on_unchanged(run):
    image = put_image(run, "rgb.png", np.full((5, 7, 3), 9, np.uint8), "RGB")
    for node_type in ("infill_rgba", "infill_tile", "infill_cv2", "infill_patchmatch", "infill_lama"):
        out = only_output(run, {"type": node_type, "image": image})
        assert out.image.image_name == "rgb.png" and (out.width, out.height) == (7, 5), node_type


def test_infill_tile_fills_the_hole_with_opaque_tiles_of_the_image(run):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:16, :16] = (255, 0, 0, 255)   # four 16px grid cells of distinct colours...
    rgba[:16, 16:] = (0, 255, 0, 255)
    rgba[16:, :16] = (0, 0, 255, 255)
    rgba[16:, 16:] = (0, 0, 0, 0)        # ...the last one transparent
    image = put_image(run, "t.png", rgba, "RGBA")
    out = only_output(run, {"type": "infill_tile", "image": image, "tile_size": 16, "seed": 3})
    result = pixels_of(run, out)
    assert result.shape == (32, 32, 3)
    filled = result[16:, 16:].reshape(-1, 3)
    assert (filled == filled[0]).all()  # one whole tile
    assert tuple(filled[0]) in {(255, 0, 0), (0, 255, 0), (0, 0, 255)}  # taken from an opaque cell
    assert (result[:16, :16] == (255, 0, 0)).all() and (result[16:, :16] == (0, 0, 255)).all()
    again = pixels_of(run, only_output(run, {"type": "infill_tile", "image": image, "tile_size": 16, "seed": 3}))
    assert (again == result).all()  # seeded
    colours = {tuple(pixels_of(run, only_output(run, {"type": "infill_tile", "image": image, "tile_size": 16,
                                                      "seed": seed}))[20, 20]) for seed in range(12)}
    assert len(colours) > 1


def test_infill_tile_without_an_opaque_tile_fails_clearly(run):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :4, 3] = 255
    image = put_image(run, "t.png", rgba, "RGBA")
    with pytest.raises(NodeExecutionError, match=r"node n \(infill_tile\): field tile_size: no fully opaque 8x8 tile"):
        only_output(run, {"type": "infill_tile", "image": image, "tile_size": 8})


@pytest.mark.parametrize("node", [{"type": "infill_cv2"}, {"type": "infill_patchmatch"},
                                  {"type": "infill_patchmatch", "downscale": 1.0, "resample_mode": "nearest"}])
def test_cv2_and_patchmatch_continue_the_surroundings(run, node):
    rgba, hole = holed()
    image = put_image(run, "h.png", rgba, "RGBA")
    result = pixels_of(run, only_output(run, {**node, "image": image})).astype(int)
    assert result.shape == (48, 64, 3)
    assert (result[~hole] == rgba[~hole][:, :3]).all()  # opaque pixels unchanged
    inside = result[hole]
    assert (inside[:, 2] > 20).all() and (inside[:, 2] < 60).all()  # blue stays near 40
    assert np.abs(inside.sum(axis=1) - (255 + 40)).max() < 60  # red + green stay near 255: the ramp continues
    assert result[24, 25, 0] > result[24, 38, 0]  # still redder on the left than on the right


def test_patchmatch_refuses_a_downscale_that_leaves_no_pixels(run):
    rgba, _ = holed(8, 8)
    image = put_image(run, "h.png", rgba, "RGBA")
    with pytest.raises(NodeExecutionError, match=r"field downscale: expected a factor"):
        only_output(run, {"type": "infill_patchmatch", "image": image, "downscale": 20.0})


def test_cv_inpaint_repaints_the_black_of_the_mask(run):
    rgb = np.full((32, 32, 3), (30, 90, 200), np.uint8)
    rgb[12:20, 12:20] = (255, 255, 255)  # a blemish to remove
    mask = np.full((32, 32), 255, np.uint8)
    mask[10:22, 10:22] = 0  # black: repaint
    out = only_output(run, {"type": "cv_inpaint", "image": put_image(run, "i.png", rgb, "RGB"),
                            "mask": put_image(run, "m.png", mask, "L")})
    result = pixels_of(run, out).astype(int)
    assert np.abs(result[16, 16] - (30, 90, 200)).max() <= 3
    assert (result[mask == 255] == rgb[mask == 255]).all()


def test_cv_inpaint_with_a_mask_of_another_size_fails_clearly(run):
    with pytest.raises(NodeExecutionError, match=r"node n \(cv_inpaint\): field mask: expected the size of image"):
        only_output(run, {"type": "cv_inpaint", "image": put_image(run, "i.png", np.zeros((4, 4, 3), np.uint8)),
                          "mask": put_image(run, "m.png", np.zeros((5, 5), np.uint8))})


def test_infill_lama_without_the_model_says_where_to_put_it(run, monkeypatch):
    monkeypatch.delenv("INVOKEAI_LAMA_MODEL", raising=False)
    rgba, _ = holed(16, 16)
    with pytest.raises(NodeExecutionError, match=r"node n \(infill_lama\): field image: LaMa infill needs the LaMa "
                                                 r"TorchScript model .*big-lama.pt"):
        only_output(run, {"type": "infill_lama", "image": put_image(run, "h.png", rgba, "RGBA")})


def test_infill_lama_runs_a_torchscript_model_from_the_model_root(run, tmp_path):
    torch = pytest.importorskip("torch")
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    class Fill(torch.nn.Module):
        """A stand-in for LaMa: paints the hole a fixed colour and checks the mask it got."""

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            colour = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
            return image * (1 - mask) + colour * mask

    root = tmp_path / "models"
    (root / "core/misc/lama").mkdir(parents=True)
    torch.jit.script(Fill()).save(str(root / "core/misc/lama/big-lama.pt"))
    run.services["models"] = ModelManager(ModelRegistry(str(root)), device="cpu")
    rgba, hole = holed(30, 20)  # not a multiple of 8: padded for the model, cropped after
    hole[:] = False
    hole[5:9, 3:11] = True
    rgba[..., 3] = 255
    rgba[hole] = 0
    out = only_output(run, {"type": "infill_lama", "image": put_image(run, "h.png", rgba, "RGBA")})
    result = pixels_of(run, out).astype(int)
    assert (out.width, out.height) == (30, 20)
    assert (np.abs(result[hole] - (51, 102, 153)) <= 1).all()
    assert (result[~hole] == rgba[~hole][:, :3]).all()
    assert any("lama:" in key for key in run.services["models"].cache.keys())


def test_canvas_output_saves_a_copy(run):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = only_output(run, {"type": "canvas_output", "image": put_image(run, "c.png", rgb, "RGB")})
    assert out.image.image_name != "c.png" and (out.width, out.height) == (3, 2)
    assert (pixels_of(run, out) == rgb).all()


def _canvas_inputs(run) -> tuple[dict, dict, dict, np.ndarray]:
    source = put_image(run, "s.png", np.full((24, 24, 3), 10, np.uint8), "RGB")
    target = put_image(run, "t.png", np.full((24, 24, 3), 250, np.uint8), "RGB")
    mask = np.full((24, 24), 255, np.uint8)
    mask[6:18, 6:18] = 0  # black: take the generated (target) image
    return source, target, put_image(run, "m.png", mask, "L"), mask


def test_canvas_paste_back_takes_the_target_where_the_mask_is_black(run):
    source, target, mask, mask_array = _canvas_inputs(run)
    out = only_output(run, {"type": "canvas_paste_back", "source_image": source, "target_image": target,
                            "mask": mask})
    result = pixels_of(run, out)
    assert (result[mask_array == 0] == 250).all() and (result[mask_array == 255] == 10).all()
    blurred = pixels_of(run, only_output(run, {"type": "canvas_paste_back", "source_image": source,
                                               "target_image": target, "mask": mask, "mask_blur": 2}))
    assert blurred[0, 0, 0] == 10 and blurred[12, 12, 0] == 250  # far from the seam: unchanged
    assert 10 < blurred[12, 5, 0] < 250  # at the seam: a blend


def test_canvas_paste_back_with_a_mask_of_another_size_fails_clearly(run):
    source, target, _, _ = _canvas_inputs(run)
    small = put_image(run, "small.png", np.zeros((8, 8), np.uint8), "L")
    with pytest.raises(NodeExecutionError, match=r"field mask: expected the size of source_image \(24x24\)"):
        only_output(run, {"type": "canvas_paste_back", "source_image": source, "target_image": target,
                          "mask": small})


def test_canvas_v2_mask_and_crop_with_and_without_a_source(run):
    source, target, mask, mask_array = _canvas_inputs(run)
    pasted = pixels_of(run, only_output(run, {"type": "canvas_v2_mask_and_crop", "source_image": source,
                                              "generated_image": target, "mask": mask}))
    assert (pasted[mask_array == 0] == 250).all() and (pasted[mask_array == 255] == 10).all()
    cropped = pixels_of(run, only_output(run, {"type": "canvas_v2_mask_and_crop", "generated_image": target,
                                               "mask": mask}))
    assert cropped.shape == (24, 24, 4)
    assert (cropped[mask_array == 0, 3] == 255).all() and (cropped[mask_array == 255, 3] == 0).all()
    assert (cropped[..., :3] == 250).all()


def test_image_panel_layout_gives_the_cell(run):
    out = only_output(run, {"type": "image_panel_layout", "width": 100, "height": 61, "num_cols": 3,
                            "num_rows": 2, "panel_col_idx": 2, "panel_row_idx": 1})
    assert (out.x_left, out.y_top, out.width, out.height) == (66, 30, 33, 30)
    whole = only_output(run, {"type": "image_panel_layout", "width": 40, "height": 20})
    assert (whole.x_left, whole.y_top, whole.width, whole.height) == (0, 0, 40, 20)


def test_image_panel_layout_refuses_an_index_outside_the_grid(run):
    with pytest.raises(NodeExecutionError, match=r"field panel_col_idx: expected a column index between 0 and 1"):
        only_output(run, {"type": "image_panel_layout", "width": 10, "height": 10, "num_cols": 2,
                          "panel_col_idx": 2})

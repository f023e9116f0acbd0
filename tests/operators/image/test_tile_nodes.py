"""Tile nodes: tile geometry worked out by hand from InvokeAI's rules, merging and blending at known pixels,
and a tiled round trip (calculate → iterate → tile_to_properties → img_crop → pair → collect → merge) through
the engine."""

from __future__ import annotations

import io
from typing import Any

import pytest

from helpers import edge, only_output, put_image, run_nodes

from invokeai_provider.errors import NodeExecutionError, NodeValidationError
from invokeai_provider.operators.image import tiles as tile_nodes
from invokeai_provider.models.image_util.tiling import Tile, TileError, box_blur, merge_tiles
from invokeai_provider.core.registry import InvocationRegistry

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")



def _pixels(run, image_field) -> Any:
    with Image.open(io.BytesIO(run.store.read("images", image_field.image_name))) as image:
        return np.array(image.convert("RGB"))


def _boxes(tiles) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    """(coords, overlap) of each tile, both as (top, bottom, left, right)."""
    def tblr(b):
        return (b.top, b.bottom, b.left, b.right)
    return [(tblr(t.coords), tblr(t.overlap)) for t in tiles]


def _tile(coords, overlap) -> dict[str, dict[str, int]]:
    keys = ("top", "bottom", "left", "right")
    return {"coords": dict(zip(keys, coords)), "overlap": dict(zip(keys, overlap))}


# --- declarations -------------------------------------------------------------------------------------

# type -> (class name, title, version, output type)
DECLARED = {
    "calculate_image_tiles": ("CalculateImageTilesInvocation", "Calculate Image Tiles", "1.0.1",
                              "calculate_image_tiles_output"),
    "calculate_image_tiles_even_split": ("CalculateImageTilesEvenSplitInvocation", "Calculate Image Tiles Even Split",
                                         "1.1.1", "calculate_image_tiles_output"),
    "calculate_image_tiles_min_overlap": ("CalculateImageTilesMinimumOverlapInvocation",
                                          "Calculate Image Tiles Minimum Overlap", "1.0.1",
                                          "calculate_image_tiles_output"),
    "tile_to_properties": ("TileToPropertiesInvocation", "Tile to Properties", "1.0.1", "tile_to_properties_output"),
    "pair_tile_image": ("PairTileImageInvocation", "Pair Tile with Image", "1.0.1", "pair_tile_image_output"),
    "merge_tiles_to_image": ("MergeTilesToImageInvocation", "Merge Tiles to Image", "1.1.1", "image_output"),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declaration_matches_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    name, title, version, output_type = DECLARED[node_type]
    assert (cls.__name__, cls.UIConfig.title, cls.UIConfig.version) == (name, title, version)
    assert (cls.UIConfig.tags, cls.UIConfig.category) == (["tiles"], "tiles")
    assert cls.output_class.get_type() == output_type


def _props(node_type: str) -> dict[str, Any]:
    return InvocationRegistry.get_invocation_class(node_type).model_json_schema()["properties"]


def test_field_defaults_and_constraints_match_invokeai():
    for node_type, size_fields in (("calculate_image_tiles", ("tile_width", "tile_height")),
                                   ("calculate_image_tiles_min_overlap", ("tile_width", "tile_height")),
                                   ("calculate_image_tiles_even_split", ())):
        props = _props(node_type)
        assert (props["image_width"]["default"], props["image_width"]["minimum"]) == (1024, 1)
        assert (props["image_height"]["default"], props["image_height"]["minimum"]) == (1024, 1)
        for field in size_fields:
            assert (props[field]["default"], props[field]["minimum"]) == (576, 1)
    assert (_props("calculate_image_tiles")["overlap"]["default"], _props("calculate_image_tiles")["overlap"]["minimum"]) \
        == (128, 0)
    assert _props("calculate_image_tiles_min_overlap")["min_overlap"]["default"] == 128
    even = _props("calculate_image_tiles_even_split")
    assert (even["num_tiles_x"]["default"], even["num_tiles_x"]["minimum"]) == (2, 1)
    assert (even["num_tiles_y"]["default"], even["num_tiles_y"]["minimum"]) == (2, 1)
    assert (even["overlap"]["default"], even["overlap"]["minimum"], even["overlap"]["multipleOf"]) == (128, 0, 8)

    merge = _props("merge_tiles_to_image")
    assert merge["blend_mode"]["default"] == "Seam" and merge["blend_mode"]["enum"] == ["Linear", "Seam"]
    assert merge["blend_mode"]["input"] == "direct"
    assert (merge["blend_amount"]["default"], merge["blend_amount"]["minimum"]) == (32, 0)
    assert merge["tiles_with_images"]["orig_required"] and {"metadata", "board"} <= set(merge)
    assert _props("tile_to_properties")["tile"]["orig_required"]
    assert _props("pair_tile_image")["image"]["orig_required"] and _props("pair_tile_image")["tile"]["orig_required"]


def test_output_fields_match_invokeai():
    props = InvocationRegistry.get_output_class("tile_to_properties_output").model_json_schema()["properties"]
    assert set(props) - {"type"} == {"coords_left", "coords_right", "coords_top", "coords_bottom", "width", "height",
                                     "overlap_top", "overlap_bottom", "overlap_left", "overlap_right"}
    assert set(InvocationRegistry.get_output_class("calculate_image_tiles_output").model_fields) == {"tiles", "type"}
    assert set(InvocationRegistry.get_output_class("pair_tile_image_output").model_fields) == {"tile_with_image",
                                                                                               "type"}


def test_tile_json_shape_is_invokeais():
    tile = Tile.model_validate(_tile((0, 576, 448, 1024), (0, 128, 128, 0)))
    assert tile.model_dump() == {"coords": {"top": 0, "bottom": 576, "left": 448, "right": 1024},
                                 "overlap": {"top": 0, "bottom": 128, "left": 128, "right": 0}}
    pair = tile_nodes.TileWithImage.model_validate({"tile": tile.model_dump(), "image": {"image_name": "a.png"}})
    assert pair.model_dump() == {"tile": tile.model_dump(), "image": {"image_name": "a.png"}}



# --- calculate_image_tiles ------------------------------------------------------------------------------


def test_calculate_image_tiles_defaults(run):
    out = only_output(run, {"type": "calculate_image_tiles"})
    # step 576 - 128 = 448; ceil((1024 - 128) / 448) = 2 tiles a side; the second ends at the edge
    assert _boxes(out.tiles) == [
        ((0, 576, 0, 576), (0, 128, 0, 128)), ((0, 576, 448, 1024), (0, 128, 128, 0)),
        ((448, 1024, 0, 576), (128, 0, 0, 128)), ((448, 1024, 448, 1024), (128, 0, 128, 0)),
    ]


def test_calculate_image_tiles_shifts_the_last_row_and_column_inside_the_image(run):
    out = only_output(run, {"type": "calculate_image_tiles", "image_width": 1000, "image_height": 600,
                            "tile_width": 400, "tile_height": 300, "overlap": 64})
    # x: step 336, ceil(936 / 336) = 3 → lefts 0, 336, 672; 672 + 400 > 1000 so the last moves to 600
    # y: step 236, ceil(536 / 236) = 3 → tops 0, 236, 472; 472 + 300 > 600 so the last moves to 300
    rows = [(0, 300), (236, 536), (300, 600)]
    cols = [(0, 400), (336, 736), (600, 1000)]
    row_overlaps = [(0, 64), (64, 236), (236, 0)]
    col_overlaps = [(0, 64), (64, 136), (136, 0)]
    expected = [((t, b, l, r), (ot, ob, ol, orr))
                for (t, b), (ot, ob) in zip(rows, row_overlaps) for (l, r), (ol, orr) in zip(cols, col_overlaps)]
    assert _boxes(out.tiles) == expected
    assert _boxes(out.tiles)[5] == ((236, 536, 600, 1000), (64, 236, 136, 0))


def test_calculate_image_tiles_exact_fit_without_overlap(run):
    out = only_output(run, {"type": "calculate_image_tiles", "image_width": 512, "image_height": 256,
                            "tile_width": 256, "tile_height": 256, "overlap": 0})
    assert _boxes(out.tiles) == [((0, 256, 0, 256), (0, 0, 0, 0)), ((0, 256, 256, 512), (0, 0, 0, 0))]


@pytest.mark.parametrize(("fields", "bad_field"), [
    ({"image_width": 500, "tile_width": 576}, "tile_width"),
    ({"image_height": 500, "tile_height": 576}, "tile_height"),
    ({"tile_width": 128, "overlap": 128}, "overlap"),
])
def test_calculate_image_tiles_refuses_tiles_that_do_not_fit(run, fields, bad_field):
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"calc": {"type": "calculate_image_tiles", **fields}})
    assert info.value.node_id == "calc" and info.value.cause.field == bad_field
    assert f"node calc (calculate_image_tiles): field {bad_field}" in str(info.value)


# --- calculate_image_tiles_even_split ---------------------------------------------------------------


def test_even_split_defaults(run):
    out = only_output(run, {"type": "calculate_image_tiles_even_split"})
    # tile = 8 * floor(((1024 + 128) // 2) / 8) = 576, starts 0 and 448, the last reaching the edge
    assert _boxes(out.tiles) == [
        ((0, 576, 0, 576), (0, 128, 0, 128)), ((0, 576, 448, 1024), (0, 128, 128, 0)),
        ((448, 1024, 0, 576), (128, 0, 0, 128)), ((448, 1024, 448, 1024), (128, 0, 128, 0)),
    ]


def test_even_split_rounds_tiles_to_multiples_of_8_and_widens_the_last(run):
    out = only_output(run, {"type": "calculate_image_tiles_even_split", "image_width": 1000, "image_height": 600,
                            "num_tiles_x": 3, "num_tiles_y": 1, "overlap": 0})
    # 1000 // 3 = 333 → 328; the last tile takes the remaining 344 px; one row takes the full height
    assert _boxes(out.tiles) == [((0, 600, 0, 328), (0, 0, 0, 0)), ((0, 600, 328, 656), (0, 0, 0, 0)),
                                 ((0, 600, 656, 1000), (0, 0, 0, 0))]


def test_even_split_with_overlap(run):
    out = only_output(run, {"type": "calculate_image_tiles_even_split", "image_width": 1000, "image_height": 512,
                            "num_tiles_x": 3, "num_tiles_y": 2, "overlap": 64})
    # x: (1000 + 2 * 64) // 3 = 376 (a multiple of 8), starts 0, 312, 624; y: (512 + 64) // 2 = 288, starts 0, 224
    assert _boxes(out.tiles) == [
        ((0, 288, 0, 376), (0, 64, 0, 64)), ((0, 288, 312, 688), (0, 64, 64, 64)),
        ((0, 288, 624, 1000), (0, 64, 64, 0)),
        ((224, 512, 0, 376), (64, 0, 0, 64)), ((224, 512, 312, 688), (64, 0, 64, 64)),
        ((224, 512, 624, 1000), (64, 0, 64, 0)),
    ]


def test_even_split_refuses_a_size_that_is_not_a_multiple_of_8(run):
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"split": {"type": "calculate_image_tiles_even_split", "image_width": 1001}})
    assert info.value.cause.field == "image_width"
    assert "node split (calculate_image_tiles_even_split): field image_width" in str(info.value)
    assert "divisible by 8" in str(info.value)


def test_even_split_refuses_an_overlap_as_large_as_the_tile(run):
    # two tiles across 16 px: 8 * floor(((16 + 8) // 2) / 8) = 8 px tiles, which cannot overlap by 8
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"split": {"type": "calculate_image_tiles_even_split", "image_width": 16, "image_height": 16,
                                  "overlap": 8}})
    assert info.value.cause.field == "overlap"


def test_even_split_overlap_must_be_a_multiple_of_8(run):
    with pytest.raises(NodeValidationError) as info:
        run_nodes(run, {"split": {"type": "calculate_image_tiles_even_split", "overlap": 12}})
    assert info.value.field == "overlap"


# --- calculate_image_tiles_min_overlap ----------------------------------------------------------------


def test_min_overlap_spreads_the_spare_overlap(run):
    out = only_output(run, {"type": "calculate_image_tiles_min_overlap", "image_width": 1000, "image_height": 701,
                            "tile_width": 400, "tile_height": 300, "min_overlap": 64})
    # x: ceil(936 / 336) = 3 tiles, lefts i * 600 // 2 = 0, 300, 600
    # y: ceil(637 / 236) = 3 tiles, tops i * 401 // 2 = 0, 200, 401 (rounded down)
    rows, row_overlaps = [(0, 300), (200, 500), (401, 701)], [(0, 100), (100, 99), (99, 0)]
    cols, col_overlaps = [(0, 400), (300, 700), (600, 1000)], [(0, 100), (100, 100), (100, 0)]
    assert _boxes(out.tiles) == [((t, b, l, r), (ot, ob, ol, orr))
                                 for (t, b), (ot, ob) in zip(rows, row_overlaps)
                                 for (l, r), (ol, orr) in zip(cols, col_overlaps)]


def test_min_overlap_cuts_tiles_down_to_a_smaller_image(run):
    out = only_output(run, {"type": "calculate_image_tiles_min_overlap", "image_width": 300, "image_height": 200})
    assert _boxes(out.tiles) == [((0, 200, 0, 300), (0, 0, 0, 0))]


def test_min_overlap_defaults_match_the_fixed_overlap_tiling(run):
    out = only_output(run, {"type": "calculate_image_tiles_min_overlap"})
    assert _boxes(out.tiles) == _boxes(only_output(run, {"type": "calculate_image_tiles"}).tiles)


def test_min_overlap_refuses_an_overlap_as_large_as_the_tile(run):
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"mo": {"type": "calculate_image_tiles_min_overlap", "tile_height": 100, "min_overlap": 100}})
    assert info.value.cause.field == "min_overlap"
    assert "node mo (calculate_image_tiles_min_overlap): field min_overlap" in str(info.value)


# --- tile_to_properties and pair_tile_image ---------------------------------------------------------------


def test_tile_to_properties(run):
    out = only_output(run, {"type": "tile_to_properties", "tile": _tile((236, 536, 600, 1000), (64, 236, 136, 0))})
    assert (out.coords_top, out.coords_bottom, out.coords_left, out.coords_right) == (236, 536, 600, 1000)
    assert (out.width, out.height) == (400, 300)
    assert (out.overlap_top, out.overlap_bottom, out.overlap_left, out.overlap_right) == (64, 236, 136, 0)


def test_pair_tile_image(run):
    tile = _tile((0, 64, 0, 64), (0, 16, 0, 16))
    out = only_output(run, {"type": "pair_tile_image", "image": {"image_name": "t.png"}, "tile": tile})
    assert out.model_dump(mode="json") == {"type": "pair_tile_image_output",
                                           "tile_with_image": {"tile": tile, "image": {"image_name": "t.png"}}}


# --- merging ------------------------------------------------------------------------------------------------


def _side_by_side(width: int, tile_width: int, overlap: int, height: int = 4) -> list[Tile]:
    """Two tiles in one row, ``overlap`` px over each other (the tiling nodes need taller tiles than that)."""
    return [Tile.model_validate(_tile((0, height, 0, tile_width), (0, 0, 0, overlap))),
            Tile.model_validate(_tile((0, height, width - tile_width, width), (0, 0, overlap, 0)))]


def test_linear_blend_ramps_across_the_middle_of_the_overlap():
    tiles = _side_by_side(24, 16, 8)  # (0, 16) and (8, 24): 8 px of overlap at 8..15
    left = np.full((4, 16, 3), 100, np.uint8)
    right = np.full((4, 16, 3), 200, np.uint8)
    merged = merge_tiles(tiles, [left, right], "Linear", 5)
    # the ramp (0, .25, .5, .75, 1) starts at 8 // 2 - 5 // 2 = 2 px into the overlap, i.e. at column 10
    expected = [100] * 11 + [125, 150, 175] + [200] * 10
    assert merged.shape == (4, 24, 3) and (merged == np.array(expected, np.uint8)[None, :, None]).all()


def test_linear_blend_between_rows_and_truncates_like_invokeai():
    tiles = [Tile.model_validate(_tile((0, 16, 0, 4), (0, 8, 0, 0))),
             Tile.model_validate(_tile((8, 24, 0, 4), (8, 0, 0, 0)))]
    top = np.zeros((16, 4, 3), np.uint8)
    bottom = np.full((16, 4, 3), 200, np.uint8)
    merged = merge_tiles(tiles, [top, bottom], "Linear", 4)
    # ramp (0, 1/3, 2/3, 1) from 8 // 2 - 4 // 2 = 2 px into the overlap (row 10); 66.67 and 133.33 truncate
    assert merged[:, 0, 0].tolist() == [0] * 11 + [66, 133] + [200] * 11


def test_merge_orders_tiles_by_position_not_by_list_order():
    tiles = _side_by_side(24, 16, 8)
    left = np.full((4, 16, 3), 100, np.uint8)
    right = np.full((4, 16, 3), 200, np.uint8)
    forward = merge_tiles(tiles, [left, right], "Linear", 5)
    assert np.array_equal(merge_tiles(tiles[::-1], [right, left], "Linear", 5), forward)


def test_seam_blend_without_blur_takes_the_incoming_tile_on_flat_overlaps():
    tiles = _side_by_side(24, 16, 8)
    merged = merge_tiles(tiles, [np.full((4, 16, 3), 100, np.uint8), np.full((4, 16, 3), 200, np.uint8)], "Seam", 0)
    # no difference to follow: the seam runs down the overlap's first column, everything right of it is incoming
    assert merged[:, :, 0].tolist() == [[100] * 8 + [200] * 16] * 4


def test_seam_blend_follows_the_column_where_the_tiles_agree():
    height = 12
    tiles = _side_by_side(24, 16, 8, height=height)
    left = np.full((height, 16, 3), 50, np.uint8)
    right = np.full((height, 16, 3), 200, np.uint8)
    # in the overlap the right tile differs from the left one by 12 * (x - 4)^2: they agree only at x = 4
    right[:, :8] = (50 + 12 * (np.arange(8) - 4) ** 2).astype(np.uint8)[None, :, None]
    merged = merge_tiles(tiles, [left, right], "Seam", 4)
    # away from the bottom rows the seam is at x = 4 (global column 12): the left tile before it, the right one
    # after; the 4 px box blur gives weights 1, 1, 1, .75, .5, .25, 0, 0 to the left tile over x = 0..7
    expected = [50] * 8 + [50, 50, 50, 53, 50, 59, 98, 158] + [200] * 8
    for row in range(height - 3):
        assert merged[row, :, 0].tolist() == expected, row


def test_seam_blend_between_rows_keeps_identical_pixels():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (56, 48, 3), dtype=np.uint8)
    tiles = tile_nodes.calc_tiles_with_overlap(56, 48, 48, 48, 40)  # rows (0, 48) and (8, 56)
    assert [t.overlap.top for t in tiles] == [0, 40]
    crops = [image[t.coords.top:t.coords.bottom, t.coords.left:t.coords.right] for t in tiles]
    # blur weights are multiples of 1 / 32**2, exact in binary: identical overlaps come back unchanged
    assert np.array_equal(merge_tiles(tiles, crops, "Seam", 32), image)


def test_box_blur_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for size, shape in ((1, (5, 7)), (2, (6, 9)), (4, (13, 8)), (5, (9, 12)), (32, (40, 90)), (7, (3, 20))):
        mask = (rng.random(shape) < 0.5).astype(np.float64)
        assert np.array_equal(box_blur(mask, size), cv2.blur(mask, (size, size))), size


def test_seam_refuses_an_overlap_too_narrow_for_the_blend():
    # 32 px of blur leaves no room for the seam inside 32 px of overlap (it needs 2 * 16 + 2)
    tiles = _side_by_side(96, 64, 32, height=8)
    images = [np.zeros((8, 64, 3), np.uint8)] * 2
    with pytest.raises(TileError) as info:
        merge_tiles(tiles, images, "Seam", 32)
    assert info.value.field == "blend_amount" and "at least 34 px" in str(info.value)
    assert merge_tiles(tiles, images, "Linear", 32).shape == (8, 96, 3)


def test_merge_node_refuses_a_blend_wider_than_the_overlap(run):
    tiles = _side_by_side(24, 16, 8)
    pairs = [{"tile": t.model_dump(), "image": put_image(run, f"t{i}.png", np.zeros((4, 16, 3), np.uint8))}
             for i, t in enumerate(tiles)]
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"m": {"type": "merge_tiles_to_image", "tiles_with_images": pairs, "blend_mode": "Linear",
                              "blend_amount": 9}})
    assert info.value.cause.field == "blend_amount"
    assert "node m (merge_tiles_to_image): field blend_amount" in str(info.value)


def test_merge_node_refuses_an_image_of_the_wrong_size(run):
    tile = _tile((0, 16, 0, 16), (0, 0, 0, 0))
    pairs = [{"tile": tile, "image": put_image(run, "small.png", np.zeros((8, 16, 3), np.uint8))}]
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"m": {"type": "merge_tiles_to_image", "tiles_with_images": pairs}})
    assert info.value.cause.field == "tiles_with_images" and "16x8 px but its tile is 16x16 px" in str(info.value)


def test_merge_node_refuses_an_empty_list(run):
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"m": {"type": "merge_tiles_to_image", "tiles_with_images": []}})
    assert info.value.cause.field == "tiles_with_images"


def test_merge_node_writes_an_rgb_image_as_large_as_the_tiles_reach(run):
    rgba = np.zeros((4, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 90, 255
    pairs = [{"tile": t.model_dump(), "image": put_image(run, f"t{i}.png", rgba)}
             for i, t in enumerate(_side_by_side(24, 16, 8))]
    out = only_output(run, {"type": "merge_tiles_to_image", "tiles_with_images": pairs, "blend_amount": 2})
    pixels = _pixels(run, out.image)
    assert (out.width, out.height) == (24, 4) and pixels.shape == (4, 24, 3)
    assert (pixels == np.array([90, 0, 0], np.uint8)).all()


# --- a tiled round trip through the engine -------------------------------------------------------------


def test_tiled_graph_reproduces_the_image_when_tiles_are_unchanged(run):
    rng = np.random.default_rng(11)
    original = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    nodes = {
        "img": {"type": "image", "image": put_image(run, "original.png", original)},
        # x: lefts 0, 56, 64 (the last shifted inside); y: tops 0, 40 → 6 tiles
        "tiles": {"type": "calculate_image_tiles", "tile_width": 96, "tile_height": 80, "overlap": 40},
        "each": {"type": "iterate"},
        "props": {"type": "tile_to_properties"},
        "crop": {"type": "img_crop"},  # RGBA out; the merge takes RGB
        "pair": {"type": "pair_tile_image"},
        "all": {"type": "collect"},
        "seam": {"type": "merge_tiles_to_image"},  # Seam, blend 32: weights k / 1024
        "linear": {"type": "merge_tiles_to_image", "blend_mode": "Linear", "blend_amount": 5},  # weights k / 4
    }
    edges = [
        edge("img", "width", "tiles", "image_width"), edge("img", "height", "tiles", "image_height"),
        edge("tiles", "tiles", "each", "collection"), edge("each", "item", "props", "tile"),
        edge("img", "image", "crop", "image"), edge("props", "coords_left", "crop", "x"),
        edge("props", "coords_top", "crop", "y"), edge("props", "width", "crop", "width"),
        edge("props", "height", "crop", "height"),
        edge("crop", "image", "pair", "image"), edge("each", "item", "pair", "tile"),
        edge("pair", "tile_with_image", "all", "item"),
        edge("all", "collection", "seam", "tiles_with_images"), edge("all", "collection", "linear", "tiles_with_images"),
    ]
    state = run_nodes(run, nodes, edges)
    assert not state.errors and len(state.execs_of("crop")) == 6
    [collected] = state.outputs_of("all")
    assert sorted(_boxes([p.tile for p in collected.collection])) == sorted(_boxes(
        tile_nodes.calc_tiles_with_overlap(120, 160, 80, 96, 40)))
    for merge in ("seam", "linear"):
        [out] = state.outputs_of(merge)
        assert (out.width, out.height) == (160, 120)
        assert np.array_equal(_pixels(run, out.image), original), merge


def test_tiled_graph_merges_changed_tiles_into_their_places(run):
    """Each tile painted one flat colour: outside the overlaps every pixel comes from its own tile."""
    tiles = tile_nodes.calc_tiles_with_overlap(64, 96, 40, 56, 16)  # lefts 0, 40; tops 0, 24
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    pairs = [{"tile": t.model_dump(),
              "image": put_image(run, f"c{i}.png", np.full((40, 56, 3), colours[i], np.uint8))}
             for i, t in enumerate(tiles)]
    out = only_output(run, {"type": "merge_tiles_to_image", "tiles_with_images": pairs, "blend_mode": "Linear",
                            "blend_amount": 0})
    pixels = _pixels(run, out.image)
    # no ramp: each overlap is cut at its middle (column 48, row 32)
    assert pixels[10, 10].tolist() == [255, 0, 0] and pixels[10, 90].tolist() == [0, 255, 0]
    assert pixels[60, 10].tolist() == [0, 0, 255] and pixels[60, 90].tolist() == [255, 255, 0]
    assert pixels[10, 47].tolist() == [255, 0, 0] and pixels[10, 48].tolist() == [0, 255, 0]
    assert pixels[31, 10].tolist() == [255, 0, 0] and pixels[32, 10].tolist() == [0, 0, 255]

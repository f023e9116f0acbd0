"""The model-free ControlNet preprocessors on tiny synthetic images, and the removed ``*_image_processor``
names, which load as the current nodes in graphs and workflows."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from helpers import edge, put_image, run_nodes

from invokeai_provider.graph.engine import run_graph
from invokeai_provider.errors import NodeExecutionError, UnknownNodeTypeError
from invokeai_provider.graph.graph import Graph
from invokeai_provider.core.invocation import Classification
from invokeai_provider.operators.image.io import ImageNodeError
from invokeai_provider.models.image_util.control_image import _thin, heuristic_resize
from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.graph.workflow import load_document, parse_workflow

NODES = {  # type: (version, category, classification, {input: default}) as in InvokeAI 6.11
    "canny_edge_detection": ("1.0.0", "controlnet", Classification.Stable,
                             {"low_threshold": 100, "high_threshold": 200}),
    "content_shuffle": ("1.0.0", "controlnet", Classification.Stable, {"scale_factor": 256}),
    "color_map": ("1.0.0", "controlnet", Classification.Stable, {"tile_size": 64}),
    "heuristic_resize": ("1.1.1", "image", Classification.Prototype, {"width": 512, "height": 512}),
}


def pixels(run, output) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(run.store.read("images", output.image.image_name)))
    assert (output.width, output.height) == image.size
    return np.asarray(image.convert("RGB")).astype(np.int32)


def output_of(run, node: dict, **extra_nodes: dict):
    [out] = run_nodes(run, {"n": node, **extra_nodes}).outputs_of("n")
    return out


@pytest.fixture
def square(run) -> dict:
    """32x32 black with a white 12x12 square at rows/columns 10..21."""
    array = np.zeros((32, 32, 3), np.uint8)
    array[10:22, 10:22] = 255
    return put_image(run, "square.png", array)


def test_definitions_match_invokeai():
    for node_type, (version, category, classification, defaults) in NODES.items():
        cls = InvocationRegistry.get_invocation_class(node_type)
        assert (cls.UIConfig.version, cls.UIConfig.category, cls.UIConfig.classification) == \
            (version, category, classification), node_type
        assert cls.get_output_annotation().get_type() == "image_output"
        fields = cls.model_fields
        assert {name: fields[name].default for name in defaults} == defaults, node_type
        inputs = set(cls.input_fields())
        mixins = {"metadata", "board"} if node_type != "heuristic_resize" else set()
        assert inputs == {"image", *defaults, *mixins}, node_type


# --- canny -----------------------------------------------------------------------------------------------


def test_canny_finds_the_border_of_a_square(run, square):
    out = pixels(run, output_of(run, {"type": "canny_edge_detection", "image": square}))
    edges = out[:, :, 0] > 0
    assert (out[:, :, 0] == out[:, :, 1]).all() and set(np.unique(out)) <= {0, 255}
    rows, cols = np.nonzero(edges)
    assert edges.any() and rows.min() >= 8 and rows.max() <= 23 and cols.min() >= 8 and cols.max() <= 23
    assert not edges[13:19, 13:19].any() and not edges[:6].any()  # flat inside and outside: no edges
    for side in (edges[9:11, 12:20], edges[21:23, 12:20], edges[12:20, 9:11], edges[12:20, 21:23]):
        assert side.any(axis=0 if side.shape[0] == 2 else 1).all()  # every side is traced


def test_canny_thresholds_above_the_gradient_find_nothing(run):
    ramp = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 2, (32, 1, 3))  # gradient of ~8 per pixel
    image = put_image(run, "ramp.png", ramp)
    out = pixels(run, output_of(run, {"type": "canny_edge_detection", "image": image,
                                      "low_threshold": 250, "high_threshold": 255}))
    assert not out.any()


# --- content shuffle ------------------------------------------------------------------------------------


def test_content_shuffle_scrambles_but_keeps_the_colours(run):
    rng = np.random.default_rng(1)
    palette = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)], np.uint8)
    blocks = palette[rng.integers(0, 4, size=(8, 8))]
    array = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)  # 64x64 of 8x8 solid blocks
    image = put_image(run, "blocks.png", array)
    out = pixels(run, output_of(run, {"type": "content_shuffle", "image": image, "scale_factor": 16}))
    assert out.shape == array.shape
    assert not np.array_equal(out, array)
    # every pixel samples the input (bilinearly): most are exactly one of its colours, none is new
    exact = (out[:, :, None, :] == palette[None, None].astype(np.int32)).all(-1).any(-1)
    assert exact.mean() > 0.8
    lo, hi = array.reshape(-1, 3).min(0), array.reshape(-1, 3).max(0)
    assert (out >= lo).all() and (out <= hi).all()


def test_content_shuffle_of_a_solid_image_is_the_same_image(run):
    image = put_image(run, "solid.png", np.full((20, 30, 3), (12, 200, 99), np.uint8))
    out = pixels(run, output_of(run, {"type": "content_shuffle", "image": image}))
    assert (out == (12, 200, 99)).all()


def test_content_shuffle_is_seeded_by_its_input(run):
    rng = np.random.default_rng(2)
    first = put_image(run, "a.png", rng.integers(0, 256, size=(48, 40, 3)))
    second = put_image(run, "b.png", rng.integers(0, 256, size=(48, 40, 3)))
    runs = [pixels(run, output_of(run, {"type": "content_shuffle", "image": img, "scale_factor": sf,
                                        "use_cache": False}))
            for img, sf in ((first, 8), (first, 8), (first, 16), (second, 8))]
    assert np.array_equal(runs[0], runs[1])  # same input, same picture
    assert not np.array_equal(runs[0], runs[2])


def test_content_shuffle_scale_factor_zero_fails_naming_the_field(run, square):
    with pytest.raises(NodeExecutionError) as info:
        run_nodes(run, {"n": {"type": "content_shuffle", "image": square, "scale_factor": 0}})
    cause = info.value.cause
    assert isinstance(cause, ImageNodeError) and cause.node_id == "n" and cause.field == "scale_factor"


# --- colour map ------------------------------------------------------------------------------------------


def test_color_map_gives_one_colour_per_tile(run):
    yy, xx = np.mgrid[0:32, 0:48]
    array = np.stack([xx * 5, yy * 7, 255 - xx * 3 - yy * 2], axis=2).astype(np.uint8)  # smooth ramps
    image = put_image(run, "ramps.png", array)
    out = pixels(run, output_of(run, {"type": "color_map", "image": image, "tile_size": 16}))
    assert out.shape == (32, 48, 3)
    for ty in range(2):
        for tx in range(3):
            tile = out[ty * 16:(ty + 1) * 16, tx * 16:(tx + 1) * 16].reshape(-1, 3)
            assert (tile == tile[0]).all()  # one colour per tile
            # the colour is a bicubic sample at the tile's centre: on a ramp, the tile's average
            mean = array[ty * 16:(ty + 1) * 16, tx * 16:(tx + 1) * 16].reshape(-1, 3).mean(0)
            assert np.abs(tile[0] - mean).max() <= 4


def test_color_map_keeps_solid_tiles_exactly(run):
    palette = np.array([(200, 10, 10), (10, 200, 10), (10, 10, 200), (240, 240, 240)], np.uint8)
    array = np.repeat(np.repeat(palette.reshape(2, 2, 3), 8, axis=0), 8, axis=1)  # 16x16, 8px tiles
    image = put_image(run, "tiles.png", array)
    out = pixels(run, output_of(run, {"type": "color_map", "image": image, "tile_size": 8}))
    assert np.array_equal(out, array)
    # a tile larger than the image is clamped to it: one colour for all
    whole = pixels(run, output_of(run, {"type": "color_map", "image": image}))
    assert (whole == whole[0, 0]).all()


# --- heuristic resize ------------------------------------------------------------------------------------


def test_heuristic_resize_output_size(run, square):
    out = output_of(run, {"type": "heuristic_resize", "image": square, "width": 50, "height": 20})
    assert (out.width, out.height) == (50, 20)
    assert pixels(run, out).shape == (20, 50, 3)


def test_heuristic_resize_keeps_a_binary_mask_binary(run):
    array = np.zeros((64, 64, 3), np.uint8)
    array[12:52, 16:56] = 255  # a filled 40x40 square: a mask, not a line drawing
    image = put_image(run, "mask.png", array)
    for size in ((128, 128), (32, 32), (90, 54)):
        out = pixels(run, output_of(run, {"type": "heuristic_resize", "image": image, "width": size[0],
                                          "height": size[1]}))
        assert set(np.unique(out)) <= {0, 255}, size  # no grey anti-aliasing
        white = (out[:, :, 0] == 255).mean()
        assert abs(white - (40 * 40) / (64 * 64)) < 0.03, size  # the square keeps its share of the image


def test_heuristic_resize_keeps_one_pixel_edges_thin(run):
    array = np.zeros((32, 32, 3), np.uint8)
    array[8, 4:28] = 255  # a horizontal and a vertical 1-px line
    array[4:28, 20] = 255
    image = put_image(run, "lines.png", array)
    out = pixels(run, output_of(run, {"type": "heuristic_resize", "image": image, "width": 80, "height": 80}))
    assert set(np.unique(out)) <= {0, 255}
    lit = out[:, :, 0] == 255
    assert lit[19:22, 12:68].any(axis=0).mean() > 0.9  # the horizontal line survives, scaled 2.5x
    assert lit[:, 10:48].sum(axis=0).max() <= 3  # ... and stays about one pixel thick
    assert lit[10:68, 49:53].any(axis=1).mean() > 0.9


def test_heuristic_resize_keeps_the_colours_of_a_segmentation_map(run):
    palette = np.array([(250, 0, 0), (0, 250, 0), (0, 0, 250), (90, 90, 90)], np.uint8)
    array = palette[np.random.default_rng(4).integers(0, 4, size=(6, 6))]
    array = np.repeat(np.repeat(array, 4, axis=0), 4, axis=1)
    image = put_image(run, "seg.png", array)
    out = pixels(run, output_of(run, {"type": "heuristic_resize", "image": image, "width": 37, "height": 29}))
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours <= {tuple(int(v) for v in c) for c in palette}  # nearest: no blended colours


def test_heuristic_resize_same_size_is_the_image():
    array = np.random.default_rng(5).integers(0, 256, size=(9, 7, 3)).astype(np.uint8)
    assert heuristic_resize(array, (7, 9)) is array


def test_thinning_reduces_a_thick_bar_to_a_line():
    bar = np.zeros((12, 30), np.uint8)
    bar[3:8, 2:28] = 255
    thin = _thin(bar)
    assert set(np.unique(thin)) <= {0, 255}
    assert (thin[:, 6:24] > 0).sum(axis=0).max() == 1 and (thin[:, 6:24] > 0).any(axis=0).all()


# --- old "processor" names ----------------------------------------------------------------------------------


def wf_node(node_id: str, node_type: str, version: str, **inputs) -> dict:
    return {"id": node_id, "type": "invocation", "position": {"x": 0, "y": 0},
            "data": {"id": node_id, "type": node_type, "version": version, "nodePack": "invokeai", "label": "",
                     "notes": "", "isOpen": True, "isIntermediate": True, "useCache": True,
                     "inputs": {name: ({"name": name, "label": ""} if value is ... else
                                       {"name": name, "label": "", "value": value})
                                for name, value in inputs.items()}}}


def wf_edge(source: str, handle: str, target: str, target_handle: str) -> dict:
    return {"id": f"{source}-{target}-{target_handle}", "type": "default", "source": source,
            "sourceHandle": handle, "target": target, "targetHandle": target_handle}


def old_canny_workflow(image: dict) -> dict:
    """As InvokeAI's own default workflows still hold it: canny_image_processor 1.3.3 with its old inputs;
    the threshold comes from an integer node, the tile size of an old colour map node is exposed."""
    nodes = [
        wf_node("img", "image", "1.0.2", image=image),
        wf_node("low", "integer", "1.0.1", value=60),
        wf_node("res", "integer", "1.0.1", value=256),
        wf_node("canny", "canny_image_processor", "1.3.3", board=..., metadata=..., image=...,
                detect_resolution=512, image_resolution=..., low_threshold=..., high_threshold=150),
        wf_node("cmap", "color_map_image_processor", "1.2.3", image=..., color_map_tile_size=8),
    ]
    edges = [wf_edge("img", "image", "canny", "image"), wf_edge("low", "value", "canny", "low_threshold"),
             wf_edge("res", "value", "canny", "image_resolution"), wf_edge("canny", "image", "cmap", "image")]
    return {"id": "old-wf", "name": "old canny", "author": "", "description": "", "version": "1", "contact": "",
            "tags": "", "notes": "", "meta": {"version": "3.0.0", "category": "user"},
            "exposedFields": [{"nodeId": "cmap", "fieldName": "color_map_tile_size"},
                              {"nodeId": "canny", "fieldName": "detect_resolution"}],
            "nodes": nodes, "edges": edges}


@pytest.fixture
def rings(run) -> dict:
    array = np.zeros((40, 40, 3), np.uint8)
    array[5:35, 5:35] = (200, 80, 20)
    array[12:28, 12:28] = (30, 60, 220)
    return put_image(run, "rings.png", array)


def test_old_canny_workflow_loads_as_the_current_nodes_and_runs(run, rings):
    wf = parse_workflow(old_canny_workflow(rings))
    g = wf.graph
    assert g.type_of("canny") == "canny_edge_detection" and g.type_of("cmap") == "color_map"
    assert (g.nodes["canny"].low_threshold, g.nodes["canny"].high_threshold) == (100, 150)  # edge sets low later
    assert g.nodes["cmap"].tile_size == 8
    assert sorted(str(e) for e in g.edges) == ["canny.image -> cmap.image", "img.image -> canny.image",
                                               "low.value -> canny.low_threshold"]  # the resolution edge is gone
    assert [(f.node_id, f.field_name) for f in wf.exposed_fields] == [("cmap", "tile_size")]
    g.validate()
    state = run_graph(g, run)
    [old] = state.outputs_of("canny")
    new = output_of(run, {"type": "canny_edge_detection", "image": rings, "low_threshold": 60,
                          "high_threshold": 150})
    assert pixels(run, old).any() and np.array_equal(pixels(run, old), pixels(run, new))
    [cmap] = state.outputs_of("cmap")
    direct = output_of(run, {"type": "color_map", "image": {"image_name": old.image.image_name}, "tile_size": 8})
    assert np.array_equal(pixels(run, cmap), pixels(run, direct))


def test_old_names_in_a_graph_document(run, rings):
    document = {"id": "g", "nodes": {
        "shuffle": {"id": "shuffle", "type": "content_shuffle_image_processor", "image": rings, "f": 8, "h": 512,
                    "w": 512, "detect_resolution": 512, "image_resolution": 512},
        "canny": {"id": "canny", "type": "canny_image_processor", "low_threshold": 50, "detect_resolution": 64},
    }, "edges": [edge("shuffle", "image", "canny", "image")]}
    doc = load_document(json.dumps(document))
    shuffle = doc.graph.nodes["shuffle"]
    assert shuffle.get_type() == "content_shuffle" and shuffle.scale_factor == 8
    assert doc.graph.to_dict()["nodes"]["canny"]["type"] == "canny_edge_detection"
    state = run_graph(doc.graph, run)
    [old] = state.outputs_of("shuffle")
    new = output_of(run, {"type": "content_shuffle", "image": rings, "scale_factor": 8})
    assert np.array_equal(pixels(run, old), pixels(run, new))


def test_old_mediapipe_processor_loads_as_the_face_detection_node():
    graph = Graph.from_dict({"nodes": {"face": {"id": "face", "type": "mediapipe_face_processor", "max_faces": 2,
                                                "min_confidence": 0.3, "detect_resolution": 512}}})
    face = graph.nodes["face"]
    assert face.get_type() == "mediapipe_face_detection" and (face.max_faces, face.min_confidence) == (2, 0.3)


def test_old_type_whose_replacement_is_not_built_fails_clearly(monkeypatch):
    from invokeai_provider.core import aliases
    monkeypatch.setitem(aliases.LEGACY_NODE_ALIASES, "future_image_processor",
                        aliases.NodeAlias("future_image_processor", "future_detection"))
    with pytest.raises(UnknownNodeTypeError) as info:
        Graph.from_dict({"nodes": {"f": {"id": "f", "type": "future_image_processor", "max_faces": 2}}})
    message = str(info.value)
    assert info.value.node_id == "f" and info.value.field == "type"
    assert '"future_image_processor"' in message and '"future_detection"' in message
    assert "not available" in message


def test_old_type_without_replacement_fails_clearly():
    with pytest.raises(UnknownNodeTypeError) as info:
        Graph.from_dict({"nodes": {"t": {"id": "t", "type": "tile_image_processor", "down_sampling_rate": 2}}})
    assert info.value.node_id == "t" and "tile_image_processor" in str(info.value)
    assert "no replacement" in str(info.value)


def test_unknown_field_of_an_old_type_is_still_refused():
    from invokeai_provider.errors import NodeValidationError

    with pytest.raises(NodeValidationError) as info:
        Graph.from_dict({"nodes": {"c": {"id": "c", "type": "canny_image_processor", "sigma": 2}}})
    assert info.value.node_id == "c" and info.value.field == "sigma"
    assert "canny_image_processor" in str(info.value) and "canny_edge_detection" in str(info.value)


def test_alias_table_targets_are_known_invokeai_nodes():
    from invokeai_provider.core.aliases import LEGACY_NODE_ALIASES

    current = {"canny_edge_detection", "content_shuffle", "color_map", "hed_edge_detection",
               "lineart_edge_detection", "lineart_anime_edge_detection", "pidi_edge_detection", "mlsd_detection",
               "normal_map", "mediapipe_face_detection", "dw_openpose_detection",
               "depth_anything_depth_estimation"}
    assert {a.new_type for a in LEGACY_NODE_ALIASES.values()} - {None} == current
    for alias in LEGACY_NODE_ALIASES.values():
        assert alias.old_type.endswith(("_processor",)) and not set(alias.renames) & alias.dropped
        if alias.new_type and InvocationRegistry.has_type(alias.new_type):
            inputs = InvocationRegistry.get_invocation_class(alias.new_type).input_fields()
            assert set(alias.renames.values()) <= set(inputs), alias.old_type


def test_a_registered_node_of_an_old_name_wins(monkeypatch, caplog):
    from invokeai_provider.core.aliases import alias_for

    assert alias_for("canny_image_processor") is not None
    assert alias_for("canny_edge_detection") is None and alias_for(None) is None
    with monkeypatch.context() as patch:  # a node pack that brings the old node back
        patch.setitem(InvocationRegistry._invocations, "canny_image_processor",
                      InvocationRegistry.get_invocation_class("canny_edge_detection"))
        assert alias_for("canny_image_processor") is None
    with caplog.at_level(logging.INFO):
        Graph.from_dict({"nodes": {"c": {"id": "c", "type": "canny_image_processor", "image_resolution": 9}}})
    assert "image_resolution" in caplog.text


def test_batch_data_into_an_old_field_uses_the_new_name(rings):
    doc = old_canny_workflow(rings)
    doc["nodes"].append(wf_node("sizes", "integer_batch", "1.0.0", integers=[4, 8], batch_group_id="None"))
    doc["edges"] += [wf_edge("sizes", "value", "cmap", "color_map_tile_size"),
                     wf_edge("sizes", "value", "canny", "detect_resolution")]
    wf = parse_workflow(doc)
    assert wf.batch_data == [[{"node_path": "cmap", "field_name": "tile_size", "items": [4, 8]}]]

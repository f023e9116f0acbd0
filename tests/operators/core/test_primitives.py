"""Primitive nodes: their declarations match InvokeAI and each one hands on the right value."""

from __future__ import annotations

import io

import pytest

from helpers import edge, graph_of as graph, only_output

from invokeai_provider.graph.engine import run_graph
from invokeai_provider.errors import (
    MissingInputError,
    NodeExecutionError,
    NodeValidationError,
    RequiredConnectionError,
)
from invokeai_provider.core.registry import InvocationRegistry


# type -> (class name, title, version, output type)
DECLARED = {
    "boolean": ("BooleanInvocation", "Boolean Primitive", "1.0.1", "boolean_output"),
    "boolean_collection": ("BooleanCollectionInvocation", "Boolean Collection Primitive", "1.0.2",
                           "boolean_collection_output"),
    "bounding_box": ("BoundingBoxInvocation", "Bounding Box", "1.0.0", "bounding_box_output"),
    "color": ("ColorInvocation", "Color Primitive", "1.0.1", "color_output"),
    "conditioning": ("ConditioningInvocation", "Conditioning Primitive", "1.0.1", "conditioning_output"),
    "conditioning_collection": ("ConditioningCollectionInvocation", "Conditioning Collection Primitive", "1.0.2",
                                "conditioning_collection_output"),
    "float": ("FloatInvocation", "Float Primitive", "1.0.1", "float_output"),
    "float_collection": ("FloatCollectionInvocation", "Float Collection Primitive", "1.0.2",
                         "float_collection_output"),
    "image": ("ImageInvocation", "Image Primitive", "1.0.2", "image_output"),
    "image_collection": ("ImageCollectionInvocation", "Image Collection Primitive", "1.0.2",
                         "image_collection_output"),
    "integer": ("IntegerInvocation", "Integer Primitive", "1.0.1", "integer_output"),
    "integer_collection": ("IntegerCollectionInvocation", "Integer Collection Primitive", "1.0.2",
                           "integer_collection_output"),
    "latents": ("LatentsInvocation", "Latents Primitive", "1.0.2", "latents_output"),
    "latents_collection": ("LatentsCollectionInvocation", "Latents Collection Primitive", "1.0.1",
                           "latents_collection_output"),
    "string": ("StringInvocation", "String Primitive", "1.0.1", "string_output"),
    "string_collection": ("StringCollectionInvocation", "String Collection Primitive", "1.0.2",
                          "string_collection_output"),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declaration_matches_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    name, title, version, output_type = DECLARED[node_type]
    assert cls.__name__ == name
    assert cls.UIConfig.title == title
    assert cls.UIConfig.version == version
    assert cls.UIConfig.category == "primitives"
    assert cls.UIConfig.tags[0] == "primitives"
    assert cls.model_fields["use_cache"].default is True
    assert cls.output_class.get_type() == output_type


@pytest.mark.parametrize("output_type", [
    "boolean_output", "boolean_collection_output", "integer_output", "integer_collection_output", "float_output",
    "float_collection_output", "string_output", "string_collection_output", "image_output",
    "image_collection_output", "latents_output", "latents_collection_output", "conditioning_output",
    "conditioning_collection_output", "color_output", "color_collection_output", "bounding_box_output",
    "bounding_box_collection_output", "denoise_mask_output", "mask_output", "video_output",
])
def test_output_types_registered(output_type):
    assert InvocationRegistry.get_output_class(output_type).get_type() == output_type


# --- scalar and list values ----------------------------------------------------------------------------


@pytest.mark.parametrize("node, expected", [
    ({"type": "boolean", "value": True}, True),
    ({"type": "boolean"}, False),
    ({"type": "integer", "value": -42}, -42),
    ({"type": "integer"}, 0),
    ({"type": "float", "value": 2.75}, 2.75),
    ({"type": "float"}, 0.0),
    ({"type": "string", "value": "a misty harbour at dawn"}, "a misty harbour at dawn"),
    ({"type": "string"}, ""),
])
def test_scalar_primitives_emit_their_value(run, node, expected):
    out = only_output(run, node)
    assert out.value == expected
    assert type(out.value) is type(expected)


@pytest.mark.parametrize("node, expected", [
    ({"type": "boolean_collection", "collection": [True, False, True]}, [True, False, True]),
    ({"type": "integer_collection", "collection": [3, 1, 2]}, [3, 1, 2]),
    ({"type": "float_collection", "collection": [0.5, 1]}, [0.5, 1.0]),
    ({"type": "string_collection", "collection": ["x", "y"]}, ["x", "y"]),
    ({"type": "string_collection"}, []),
])
def test_list_primitives_emit_their_list(run, node, expected):
    assert only_output(run, node).collection == expected


def test_integer_feeds_a_float_input(run):
    state = run_graph(graph({"i": {"type": "integer", "value": 7}, "f": {"type": "float"}},
                            [edge("i", "value", "f", "value")]), run)
    assert state.outputs_of("f")[0].value == 7.0


def test_string_is_a_textarea_in_the_schema():
    schema = InvocationRegistry.get_invocation_class("string").model_json_schema()
    assert schema["properties"]["value"]["ui_component"] == "textarea"


def test_wrong_literal_type_is_rejected_when_built():
    with pytest.raises(NodeValidationError, match="value"):
        graph({"n": {"type": "integer", "value": "not a number"}})


# --- color and bounding box ----------------------------------------------------------------------------


def test_color_defaults_to_opaque_black(run):
    assert only_output(run, {"type": "color"}).color.tuple() == (0, 0, 0, 255)


def test_color_passes_through(run):
    out = only_output(run, {"type": "color", "color": {"r": 12, "g": 200, "b": 99, "a": 0}})
    assert out.model_dump(mode="json")["color"] == {"r": 12, "g": 200, "b": 99, "a": 0}


def test_color_channel_out_of_range_is_rejected():
    with pytest.raises(NodeValidationError, match="color"):
        graph({"n": {"type": "color", "color": {"r": 256, "g": 0, "b": 0, "a": 255}}})


def test_bounding_box_from_corners(run):
    out = only_output(run, {"type": "bounding_box", "x_min": 4, "y_min": 8, "x_max": 40, "y_max": 30})
    box = out.bounding_box
    assert (box.x_min, box.y_min, box.x_max, box.y_max, box.score) == (4, 8, 40, 30, None)


# --- images --------------------------------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_primitive_reports_stored_size(run):
    run.store.write("images", "harbour.png", _png(13, 7))
    out = only_output(run, {"type": "image", "image": {"image_name": "harbour.png"}})
    assert out.image.image_name == "harbour.png"
    assert (out.width, out.height) == (13, 7)


def test_image_primitive_without_image_fails_when_run(run):
    with pytest.raises(NodeExecutionError) as info:
        run_graph(graph({"n": {"type": "image"}}), run)
    assert isinstance(info.value.cause, MissingInputError)
    assert "missing value or connection for field image" in str(info.value)


def test_image_collection_appends_its_images_to_the_incoming_list(run):
    state = run_graph(graph(
        {
            "first": {"type": "image_collection", "images": [{"image_name": "a.png"}, {"image_name": "b.png"}]},
            "second": {"type": "image_collection", "images": [{"image_name": "c.png"}]},
        },
        [edge("first", "collection", "second", "collection")],
    ), run)
    names = [i.image_name for i in state.outputs_of("second")[0].collection]
    assert names == ["a.png", "b.png", "c.png"]


def test_image_collection_empty_by_default(run):
    assert only_output(run, {"type": "image_collection"}).collection == []


def test_image_output_build_from_record():
    from invokeai_provider.operators.core.primitives import ImageOutput

    out = ImageOutput.build({"image_name": "n-0.png", "width": 64, "height": 48, "board_id": None})
    assert out.model_dump(mode="json") == {
        "image": {"image_name": "n-0.png"}, "width": 64, "height": 48, "type": "image_output"}


# --- latents and conditioning --------------------------------------------------------------------------


def test_latents_primitive_reports_pixel_size(run):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save

    run.store.write("tensors", "lat.safetensors", save({"tensor": torch.zeros(1, 4, 9, 12)}))
    out = only_output(run, {"type": "latents", "latents": {"latents_name": "lat", "seed": 5}})
    assert out.latents.latents_name == "lat"
    assert out.latents.seed is None  # InvokeAI rebuilds the field from the name only
    assert (out.width, out.height) == (96, 72)


def test_latents_output_build_reads_the_last_two_dimensions():
    from invokeai_provider.operators.core.primitives import LatentsOutput

    class Shaped:
        shape = (2, 16, 128, 64)

    out = LatentsOutput.build("l", Shaped(), seed=9)
    assert (out.width, out.height, out.latents.seed) == (512, 1024, 9)


def test_latents_primitive_needs_a_connection(run):
    with pytest.raises(NodeExecutionError) as info:
        run_graph(graph({"n": {"type": "latents"}}), run)
    assert isinstance(info.value.cause, RequiredConnectionError)
    assert "missing connections for field latents" in str(info.value)


def test_latents_collection_requires_its_list(run):
    with pytest.raises(NodeExecutionError) as info:
        run_graph(graph({"n": {"type": "latents_collection"}}), run)
    assert isinstance(info.value.cause, MissingInputError)


def test_latents_collection_passes_through(run):
    out = only_output(run, {"type": "latents_collection",
                       "collection": [{"latents_name": "l1"}, {"latents_name": "l2", "seed": 3}]})
    assert [(x.latents_name, x.seed) for x in out.collection] == [("l1", None), ("l2", 3)]


def test_conditioning_items_pass_through_iterate(run):
    state = run_graph(graph(
        {
            "many": {"type": "conditioning_collection",
                     "collection": [{"conditioning_name": "pos"}, {"conditioning_name": "neg"}]},
            "each": {"type": "iterate"},
            "one": {"type": "conditioning"},
        },
        [edge("many", "collection", "each", "collection"), edge("each", "item", "one", "conditioning")],
    ), run)
    assert [o.conditioning.conditioning_name for o in state.outputs_of("one")] == ["pos", "neg"]


def test_conditioning_primitive_needs_a_connection(run):
    with pytest.raises(NodeExecutionError) as info:
        run_graph(graph({"n": {"type": "conditioning"}}), run)
    assert isinstance(info.value.cause, RequiredConnectionError)


def test_required_inputs_are_marked_in_the_schema():
    props = InvocationRegistry.get_invocation_class("conditioning").model_json_schema()["properties"]
    assert props["conditioning"]["orig_required"] is True
    assert props["conditioning"]["input"] == "connection"
    props = InvocationRegistry.get_invocation_class("image_collection").model_json_schema()["properties"]
    assert props["images"]["input"] == "direct"
    assert props["collection"]["input"] == "connection"

"""Limits on what one run may ask for (`invokeai_provider.core.limits`): refused when the node is built, before any
model loads, with the option that sets the limit; configurable; invisible in the nodes' InvokeAI schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import put_image, sd1_graph
from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.errors import NodeExecutionError, NodeInputError, NodeValidationError
from invokeai_provider.graph.graph import Graph


def build(nodes: dict[str, Any]) -> Graph:
    return Graph.from_dict({"id": "g", "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": []})


def test_a_width_over_the_side_limit_names_node_field_and_option() -> None:
    with pytest.raises(NodeValidationError) as caught:
        build({"noise": {"type": "noise", "width": 100_000, "height": 64}})
    assert str(caught.value) == ('node noise (noise): field "width": 100,000 pixels; at most 16,384 allowed '
                                 "([invokeai] max_image_side, AIRFLOW__INVOKEAI__MAX_IMAGE_SIDE)")
    assert (caught.value.node_id, caught.value.field) == ("noise", "width")


def test_width_times_height_over_the_pixel_limit_is_refused() -> None:
    build({"ok": {"type": "noise", "width": 8192, "height": 8192}})
    with pytest.raises(NodeValidationError) as caught:
        build({"big": {"type": "img_resize", "width": 16384, "height": 8192}})
    assert str(caught.value) == ('node big (img_resize): field "width": 16384 x 8192 is 134,217,728 pixels; at most '
                                 "67,108,864 allowed ([invokeai] max_image_pixels, AIRFLOW__INVOKEAI__MAX_IMAGE_PIXELS)")


def test_an_over_long_prompt_is_refused_in_milliseconds() -> None:
    import time

    started = time.perf_counter()
    with pytest.raises(NodeValidationError) as caught:
        build({"pos": {"type": "compel", "prompt": "a cat, " * 150_000}})
    assert time.perf_counter() - started < 1  # parsing it took minutes
    assert str(caught.value) == ('node pos (compel): field "prompt": 1,050,000 characters; at most 10,000 allowed '
                                 "([invokeai] max_prompt_length, AIRFLOW__INVOKEAI__MAX_PROMPT_LENGTH)")
    for node_type, field in (("sdxl_compel_prompt", "style"), ("sdxl_refiner_compel_prompt", "style"),
                             ("dynamic_prompt", "prompt")):
        with pytest.raises(NodeValidationError, match=f'field "{field}": 10,001 characters'):
            build({"n": {"type": node_type, field: "x" * 10_001}})


def test_limits_follow_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__INVOKEAI__MAX_PROMPT_LENGTH", "12")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__MAX_IMAGE_SIDE", "256")
    build({"pos": {"type": "compel", "prompt": "twelve chars"}, "noise": {"type": "noise", "width": 256, "height": 256}})
    with pytest.raises(NodeValidationError, match="13 characters; at most 12 allowed"):
        build({"pos": {"type": "compel", "prompt": "thirteen char"}})
    with pytest.raises(NodeValidationError, match="264 pixels; at most 256 allowed"):
        build({"noise": {"type": "noise", "width": 64, "height": 264}})


def test_a_value_from_an_edge_is_checked_when_the_node_gets_it(run) -> None:
    from invokeai_provider.graph.engine import Engine, ExecutionState

    graph = Graph.from_dict({"id": "g", "nodes": {
        "w": {"id": "w", "type": "integer", "value": 50_000},
        "noise": {"id": "noise", "type": "noise"}},
        "edges": [{"source": {"node_id": "w", "field": "value"}, "destination": {"node_id": "noise", "field": "width"}}]})
    with pytest.raises(NodeExecutionError) as caught:
        Engine(run).run(ExecutionState(graph))
    assert isinstance(caught.value.cause, NodeInputError) and caught.value.field == "width"
    assert str(caught.value.cause) == ("node noise (noise): value from w.value does not fit field width: 50,000 pixels; "
                                       "at most 16,384 allowed ([invokeai] max_image_side, "
                                       "AIRFLOW__INVOKEAI__MAX_IMAGE_SIDE)")


def test_limits_leave_the_invokeai_schemas_unchanged() -> None:
    width = InvocationRegistry.get_invocation_class("noise").model_json_schema()["properties"]["width"]
    prompt = InvocationRegistry.get_invocation_class("compel").model_json_schema()["properties"]["prompt"]
    assert "maximum" not in width and "maxLength" not in prompt
    assert width["multipleOf"] == 8 and width["exclusiveMinimum"] == 0 and "multiple_of" not in width
    resized = InvocationRegistry.get_invocation_class("lresize").model_json_schema()["properties"]["width"]["anyOf"][0]
    assert (resized["minimum"], resized["multipleOf"]) == (64, 8) and "maximum" not in resized


def test_a_computed_size_over_the_limit_fails_before_the_image_is_made(run) -> None:
    from PIL import Image

    from invokeai_provider.graph.engine import Engine, ExecutionState

    image = put_image(run, "input", Image.new("RGB", (64, 64)))
    graph = build({"scale": {"type": "img_scale", "image": image, "scale_factor": 300.0}})
    with pytest.raises(NodeExecutionError) as caught:
        Engine(run).run(ExecutionState(graph))
    assert "field scale_factor: 300.0 scales the 64x64 image to 19200 x 19200 has a side over 16,384 pixels" \
        in str(caught.value)
    assert caught.value.field == "scale_factor"


class _NoLoads:
    """A model service that can look names up but fails the test if a model is loaded."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def load(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before the bad input was refused")

    get_config = load


def test_a_huge_width_in_a_text_to_image_graph_stops_before_any_model_loads(tmp_path, tiny_registry) -> None:
    from invokeai_provider.execution.graph_runs import TaskEnvironment, run_graph_in_process

    graph = sd1_graph(size=64)
    graph["nodes"]["noise"]["width"] = 100_000
    env = TaskEnvironment(dag_id="d", run_id="r", task_id="t", artifact_root=tmp_path.as_uri(), tenant="acme")
    with pytest.raises(NodeValidationError, match='node noise \\(noise\\): field "width": 100,000 pixels'):
        run_graph_in_process(graph, env, {"models": _NoLoads(tiny_registry)}, embedded_graph=None, workflow_json=None)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no image, tensor or manifest
    json.dumps(graph)  # the graph itself is untouched and still serialisable

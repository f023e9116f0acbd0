"""Param values → node field values (models stay names, images and boards become their objects)."""

from __future__ import annotations

from typing import Optional

from test_params import SD15_DAG_WORKFLOW, by_name

from invokeai_provider.compiler.param_values import to_node_value
from invokeai_provider.compiler.params import ParamSpec, param_specs
from invokeai_provider.graph.workflow import load_document


def test_to_node_value_conversions():
    def spec(kind: str, item_kind: Optional[str] = None) -> ParamSpec:
        return ParamSpec("x", None if kind == "batch" else "n", None if kind == "batch" else "f", {}, kind,
                         (0, 0) if kind == "batch" else None, item_kind)

    assert to_node_value(spec("model"), "tiny-sd15") == "tiny-sd15"
    assert to_node_value(spec("model"), "") is None
    assert to_node_value(spec("image"), "cat.png") == {"image_name": "cat.png"}
    assert to_node_value(spec("image"), ["a.png", "b.png"]) == [{"image_name": "a.png"}, {"image_name": "b.png"}]
    assert to_node_value(spec("image"), None) is None
    assert to_node_value(spec("board"), "board-1") == {"board_id": "board-1"}
    for empty in ("none", "", None, "auto"):
        assert to_node_value(spec("board"), empty) is None
    value = {"r": 1}
    copied = to_node_value(spec("value"), value)
    assert copied == value and copied is not value
    assert to_node_value(spec("value"), 7) == 7
    assert to_node_value(spec("batch", "image"), ["a.png"]) == [{"image_name": "a.png"}]
    assert to_node_value(spec("batch", "value"), None) == []


def test_to_node_value_gives_a_graph_that_validates():
    doc = load_document(SD15_DAG_WORKFLOW.read_text())
    specs = by_name(param_specs(doc))
    graph = doc.graph.to_dict()
    for name, value in [("seed", 1234), ("denoise_scheduler", "euler_a"), ("positive_prompt", "a cat")]:
        spec = specs[name]
        graph["nodes"][spec.node_id][spec.field_name] = to_node_value(spec, value)
    from invokeai_provider.graph.graph import Graph

    rebuilt = Graph.from_dict(graph)
    assert rebuilt.nodes["seed"].value == 1234 and rebuilt.nodes["scheduler"].scheduler == "euler_a"

"""Saved workflow → graph conversion (reference §2.6), for meta versions 3.0.0 and 4.0.0."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import SHARED_WORKFLOWS, wf_edge, wf_node, workflow

from invokeai_provider.graph.engine import run_graph
from invokeai_provider.errors import NodeFieldNotFoundError, WorkflowError
from invokeai_provider.graph.workflow import load_document, parse_workflow


def sum_workflow(version: str = "3.0.0", **extra: Any) -> dict[str, Any]:
    """a=2, b=3 → add (whose stale literal a=100 must be dropped) → multiply by 10."""
    nodes = [
        wf_node("a", "integer", value=2), wf_node("b", "integer", value=3),
        wf_node("sum", "add", label="Sum", a=100, b=...),
        {"id": "reroute", "type": "connector", "position": {"x": 0, "y": 0}, "data": {"id": "reroute"}},
        wf_node("times", "mul", a=..., b=10, use_cache=False),
        {"id": "note", "type": "notes", "position": {"x": 0, "y": 0}, "data": {"id": "note", "notes": "hi"}},
    ]
    edges = [wf_edge("a", "value", "sum", "a"), wf_edge("b", "value", "sum", "b"),
             wf_edge("sum", "value", "reroute", "value"), wf_edge("reroute", "value", "times", "a"),
             wf_edge("sum", "value", "times", "a", kind="collapsed"), wf_edge("a", "value", "sum", "a")]
    return workflow(nodes, edges, version=version, **extra)


@pytest.mark.parametrize("version", ["3.0.0", "4.0.0"])
def test_workflow_converts_and_runs(version, run_context):
    wf = parse_workflow(sum_workflow(version))
    g = wf.graph
    assert set(g.nodes) == {"a", "b", "sum", "times"}  # notes and connector nodes are gone
    assert sorted(str(e) for e in g.edges) == ["a.value -> sum.a", "b.value -> sum.b", "sum.value -> times.a"]
    assert g.nodes["times"].use_cache is False and g.nodes["sum"].use_cache is True
    state = run_graph(g, run_context)
    assert state.outputs_of("times")[0].value == 50  # the stale literal a=100 was dropped


def test_inputs_without_a_value_take_the_node_default():
    wf = parse_workflow(workflow([wf_node("x", "add", a=...)], []))
    assert wf.graph.nodes["x"].a == 0 and "a" not in wf.graph.nodes["x"].model_fields_set


def test_board_sentinels_are_dropped():
    wf = parse_workflow(workflow([wf_node("i", "integer", value=1, board="auto")], []))
    assert "board" not in wf.graph.nodes["i"].model_fields_set


def test_exposed_fields_keep_labels_in_order():
    wf = parse_workflow(sum_workflow(exposed=[{"nodeId": "b", "fieldName": "value"},
                                             {"nodeId": "times", "fieldName": "b"}]))
    assert [(f.node_id, f.field_name, f.label) for f in wf.exposed_fields] == [
        ("b", "value", "value label"), ("times", "b", "b label")]
    assert wf.node_label("sum") == "Sum" and wf.name == "Test workflow" and wf.notes == "n"


def test_form_tree_gives_order_sections_and_settings():
    form = {"rootElementId": "root", "elements": {
        "root": {"id": "root", "type": "container", "data": {"layout": "column", "children": ["h1", "f2", "div", "f1"]}},
        "h1": {"id": "h1", "type": "heading", "parentId": "root", "data": {"content": "Numbers"}},
        "div": {"id": "div", "type": "divider", "parentId": "root", "data": {}},
        "f1": {"id": "f1", "type": "node-field", "parentId": "root",
               "data": {"fieldIdentifier": {"nodeId": "b", "fieldName": "value"}, "showDescription": False,
                        "settings": {"type": "integer-field-config", "component": "slider", "min": 0, "max": 9}}},
        "f2": {"id": "f2", "type": "node-field", "parentId": "root",
               "data": {"fieldIdentifier": {"nodeId": "times", "fieldName": "b"}}},
    }}
    wf = parse_workflow(sum_workflow("4.0.0", form=form, exposed=[{"nodeId": "a", "fieldName": "value"}]))
    assert [(f.node_id, f.field_name) for f in wf.exposed_fields] == [("times", "b"), ("b", "value")]
    assert wf.exposed_fields[1].settings["component"] == "slider"
    assert wf.exposed_fields[1].show_description is False
    assert wf.exposed_fields[0].section == "Numbers"


def test_form_with_a_missing_child_is_refused():
    form = {"rootElementId": "root", "elements": {
        "root": {"id": "root", "type": "container", "data": {"layout": "column", "children": ["gone"]}}}}
    with pytest.raises(WorkflowError, match="child 'gone' does not exist"):
        parse_workflow(sum_workflow("4.0.0", form=form))


def test_exposed_field_that_does_not_exist_is_refused():
    with pytest.raises(NodeFieldNotFoundError, match=r"node b \(integer\) has no input 'nope'"):
        parse_workflow(sum_workflow(exposed=[{"nodeId": "b", "fieldName": "nope"}]))


def test_unsupported_meta_version_is_refused():
    with pytest.raises(WorkflowError, match="meta.version '2.0.0' is not supported"):
        parse_workflow(sum_workflow("2.0.0"))


def test_two_workflow_return_nodes_are_refused():
    doc = workflow([wf_node("r1", "workflow_return"), wf_node("r2", "workflow_return")], [])
    with pytest.raises(WorkflowError, match="at most one workflow_return node"):
        parse_workflow(doc)


def test_batch_nodes_become_zipped_and_product_batch_data():
    nodes = [
        wf_node("prompts", "string_batch", strings=["cat", "dog"], batch_group_id="Group 1"),
        wf_node("styles", "string_batch", strings=["oil", "ink"], batch_group_id="Group 1"),
        wf_node("seeds", "integer_batch", integers=[1, 2, 3], batch_group_id="None"),
        wf_node("p", "test_prompt", prompt=...), wf_node("s", "test_prompt", prompt=...), wf_node("seed", "integer"),
    ]
    edges = [wf_edge("prompts", "value", "p", "prompt"), wf_edge("styles", "value", "s", "prompt"),
             wf_edge("seeds", "value", "seed", "value")]
    wf = parse_workflow(workflow(nodes, edges))
    assert set(wf.graph.nodes) == {"p", "s", "seed"} and wf.graph.edges == []
    assert wf.batch_data == [
        [{"node_path": "p", "field_name": "prompt", "items": ["cat", "dog"]},
         {"node_path": "s", "field_name": "prompt", "items": ["oil", "ink"]}],
        [{"node_path": "seed", "field_name": "value", "items": [1, 2, 3]}],
    ]


def test_load_document_detects_graphs_and_workflows():
    graph_doc = {"id": "g", "nodes": {"a": {"id": "a", "type": "integer", "value": 1}}, "edges": []}
    doc = load_document(json.dumps(graph_doc))
    assert doc.workflow is None and doc.batch is None and list(doc.graph.nodes) == ["a"]
    doc = load_document(json.dumps(sum_workflow()))
    assert doc.workflow is not None and "times" in doc.graph.nodes


def test_load_document_reads_an_invokeai_batch_body():
    body = {"prepend": False, "batch": {"graph": {"id": "g", "nodes": {"p": {"id": "p", "type": "test_prompt"}},
                                                  "edges": []},
                                        "runs": 2, "data": [[{"node_path": "p", "field_name": "prompt",
                                                              "items": ["a", "b"]}]]}}
    doc = load_document(json.dumps(body))
    assert doc.batch is not None and doc.batch.session_count() == 4


@pytest.mark.skipif(not SHARED_WORKFLOWS.is_dir(), reason="shared InvokeAI workflows not present")
@pytest.mark.parametrize("name", ["text-to-image-sd15.json", "text-to-image-sdxl.json"])
def test_real_invokeai_workflows_flatten_the_same_way(name):
    """The real exported workflows: every default edge lands, connectors and collapsed edges do not."""
    from invokeai_provider.graph.workflow import _flatten_edges, _nodes_by_id

    raw = json.loads((SHARED_WORKFLOWS / name).read_text())
    nodes = _nodes_by_id(raw)
    invocations = {k: n for k, n in nodes.items() if n["type"] == "invocation"}
    edges = _flatten_edges(raw, nodes, invocations)
    defaults = [e for e in raw["edges"] if e["type"] == "default"]
    assert len(edges) == len({(e["source"], e["sourceHandle"], e["target"], e["targetHandle"]) for e in defaults})
    assert all(e["source"]["node_id"] in invocations and e["destination"]["node_id"] in invocations for e in edges)

"""Planning graphs into tasks, and joining task records across iteration scopes (no Airflow)."""

from __future__ import annotations

import json

import pytest

from helpers import REPO_ROOT, edge, graph, node
from invokeai_provider.graph.graph import Graph
from invokeai_provider.execution.instances import RecordIndex, build_instances, collect_groups
from invokeai_provider.compiler.plan import COLLECT_TASK, FANOUT, SEGMENT, Plan, build_plan
from invokeai_provider.graph.workflow import load_document


def plan_of(document: dict, **kwargs) -> Plan:
    return build_plan(Graph.from_dict(document), **kwargs)


def test_text_to_image_workflow_is_one_gpu_task_named_after_the_workflow() -> None:
    document = load_document((REPO_ROOT / "dags" / "workflows" / "sd15-text-to-image.json").read_text())
    plan = build_plan(document.graph, name=document.workflow.name)
    [task] = plan.tasks
    assert task.task_id == "sd1_5_text_to_image" and task.queue == "gpu" and task.kind == SEGMENT
    assert len(task.nodes) == len(document.graph.nodes) and not task.mapped
    by_node = build_plan(document.graph, granularity="node", node_labels={n: "" for n in document.graph.nodes})
    assert sorted(t.task_id for t in by_node.tasks) == sorted(document.graph.nodes)
    assert {t.task_id: t.queue for t in by_node.tasks}["denoise"] == "gpu"
    assert {t.task_id: t.queue for t in by_node.tasks}["seed"] == "default"


def chain_with_iteration() -> dict:
    return graph(
        node("ints", "integer_collection", collection=[1, 2, 3]),
        node("it", "iterate"),
        node("mul", "mul", b=10),
        node("add", "add", b=1),
        node("col", "collect"),
        node("total", "integer", value=5),
        edges=[edge("ints", "collection", "it", "collection"), edge("it", "item", "mul", "a"),
               edge("mul", "value", "add", "a"), edge("add", "value", "col", "item")])


def test_plans_are_deterministic_and_round_trip_through_json() -> None:
    first, second = plan_of(chain_with_iteration()), plan_of(chain_with_iteration())
    assert first.to_json() == second.to_json()
    assert Plan.from_dict(json.loads(first.to_json())).to_json() == first.to_json()
    assert first.content_hash != plan_of(chain_with_iteration(), granularity="node").content_hash


def test_iteration_becomes_a_mapped_segment_fed_by_its_only_upstream() -> None:
    plan = plan_of(chain_with_iteration())
    tasks = {t.task_id: t for t in plan.tasks}
    assert tasks["add"].nodes == ["mul", "add"] and tasks["add"].scope == ["it"] and tasks["add"].mapped
    assert tasks["add"].instances_from == "ints" and tasks["ints"].emits_for == ["add"]
    assert tasks["col"].kind == COLLECT_TASK and not tasks["col"].mapped
    assert "add.value" in tasks["add"].outputs and "ints.collection" in tasks["ints"].outputs


def test_node_granularity_adds_a_fan_out_where_a_mapped_task_reads_two_tasks() -> None:
    plan = plan_of(chain_with_iteration(), granularity="node")
    tasks = {t.task_id: t for t in plan.tasks}
    assert tasks["map_add"].kind == FANOUT and tasks["map_add"].upstream == ["ints", "mul"]
    assert tasks["add"].instances_from == "map_add"
    order = [t.task_id for t in plan.tasks]
    assert order.index("mul") < order.index("map_add") < order.index("add") < order.index("col")


def test_fusing_never_makes_a_cycle_between_tasks() -> None:
    # a feeds the iteration and, directly, the node after the collect: fusing a with after would loop
    document = graph(
        node("a", "range", start=0, stop=3, step=1),
        node("it", "iterate"),
        node("sq", "mul", b=2),
        node("col", "collect"),
        node("size", "integer", value=1),
        node("after", "add"),
        node("count", "add", b=0),
        edges=[edge("a", "collection", "it", "collection"), edge("it", "item", "sq", "a"),
               edge("sq", "value", "col", "item"), edge("it", "total", "count", "a"),
               edge("size", "value", "after", "b"), edge("count", "value", "after", "a")])
    plan = plan_of(document)
    ids = [t.task_id for t in plan.tasks]
    for position, task in enumerate(plan.tasks):
        assert all(ids.index(u) < position for u in task.upstream), task.task_id


def test_nodes_feeding_only_one_if_branch_are_guarded_in_node_granularity() -> None:
    document = graph(
        node("cond", "boolean", value=True),
        node("yes", "add", a=1, b=2),
        node("no", "sub", a=1, b=2),
        node("pick", "if"),
        edges=[edge("cond", "value", "pick", "condition"), edge("yes", "value", "pick", "true_input"),
               edge("no", "value", "pick", "false_input")])
    by_node = {t.task_id: t for t in plan_of(document, granularity="node").tasks}
    assert [(g.if_id, g.branch, g.condition.task_id) for g in by_node["no"].guards] == [("pick", "false_input", "cond")]
    assert by_node["pick"].guards == []
    [segment] = plan_of(document).tasks  # together in one segment, the engine's lazy if decides
    assert segment.guards == [] and set(segment.nodes) == {"cond", "yes", "no", "pick"}


def test_granularity_is_checked() -> None:
    from invokeai_provider.errors import InvokeAIProviderError

    with pytest.raises(InvokeAIProviderError, match="granularity 'task'"):
        plan_of(chain_with_iteration(), granularity="task")


def test_instances_follow_outer_major_order_and_collect_keeps_empty_groups() -> None:
    document = graph(
        node("outer", "integer_collection", collection=[0, 2]),
        node("o", "iterate"),
        node("inner", "range", start=0, step=1),
        node("i", "iterate"),
        node("m", "mul", b=3),
        node("c", "collect"),
        edges=[edge("outer", "collection", "o", "collection"), edge("o", "item", "inner", "stop"),
               edge("inner", "collection", "i", "collection"), edge("i", "item", "m", "a"),
               edge("m", "value", "c", "item")])
    plan = plan_of(document)
    tasks = {t.task_id: t for t in plan.tasks}
    index = RecordIndex({"outer": {"scope": [], "records": [{"path": [], "values": {"outer.collection": [0, 2]}}]}})
    inner = tasks["inner"]
    instances = build_instances(scope=inner.scope, inputs=inner.inputs, guards=[], nodes=inner.nodes,
                                literal_conditions={}, feeders=plan.axis_feeders, axis_labels=plan.axis_labels,
                                index=index)
    assert [(i["path"], i["inputs"]) for i in instances] == [([0], {"inner.stop": 0}), ([1], {"inner.stop": 2})]
    index.add("inner", [{"scope": ["o"], "records": [{"path": [0], "values": {"inner.collection": []}}]},
                        {"scope": ["o"], "records": [{"path": [1], "values": {"inner.collection": [0, 1]}}]}])
    m = tasks["m"]
    instances = build_instances(scope=m.scope, inputs=m.inputs, guards=[], nodes=m.nodes, literal_conditions={},
                                feeders=plan.axis_feeders, axis_labels=plan.axis_labels, index=index)
    assert [i["path"] for i in instances] == [[1, 0], [1, 1]]
    assert instances[1]["label"] == "o[1]=2, i[1]=1"
    index.add("m", [{"scope": ["o", "i"], "records": [{"path": [1, 1], "values": {"m.value": 3}}]},
                    {"scope": ["o", "i"], "records": [{"path": [1, 0], "values": {"m.value": 0}}]}])
    c = tasks["c"]
    groups = collect_groups(node_id="c", scope=c.scope, inputs=c.inputs, source_scopes=plan.scope_of,
                            feeders=plan.axis_feeders, index=index)
    assert groups == [{"path": [0], "values": {"c.collection": []}}, {"path": [1], "values": {"c.collection": [0, 3]}}]

"""Execution semantics (reference §2.3), ported as the acceptance scenarios of §6.3 in our own words."""

from __future__ import annotations

import json
import threading

import pytest
from helpers import edge, graph, node
from nodes_for_tests import CountedInvocation

from invokeai_provider.graph.engine import Engine, ExecutionState, run_graph
from invokeai_provider.errors import CanceledError, NodeExecutionError
from invokeai_provider.graph.graph import Graph


@pytest.fixture(autouse=True)
def _reset_counter() -> None:
    CountedInvocation.calls.clear()


def run(doc: dict, run_context) -> ExecutionState:
    return run_graph(Graph.from_dict(doc), run_context)


def values(state: ExecutionState, node_id: str, field: str = "value") -> list:
    return [getattr(o, field) for o in state.outputs_of(node_id)]


# 1
def test_linear_chain_runs_in_topological_order(run_context):
    doc = graph(node("use", "test_counted"), node("p", "test_prompt", prompt="Banana sushi"),
                edges=[edge("p", "prompt", "use", "value")])
    state = run(doc, run_context)
    assert state.is_complete() and not state.errors
    assert state.history == ["p", "use"]
    assert values(state, "use") == ["Banana sushi"]


# 2
def test_iterator_fans_out_through_math(run_context):
    doc = graph(
        node("r", "range", start=0, stop=3, step=1), node("it", "iterate"),
        node("m", "mul", b=10), node("a", "add", b=1),
        edges=[edge("r", "collection", "it", "collection"), edge("it", "item", "m", "a"), edge("m", "value", "a", "a")],
    )
    state = run(doc, run_context)
    assert values(state, "a") == [1, 11, 21]
    assert len(state.execs_of("a")) == 3


# 3
def test_iterate_then_collect_keeps_order(run_context):
    items = ["a", "b", "c", "d"]
    doc = graph(
        node("s", "string_collection", collection=items), node("it", "iterate"), node("pass", "test_counted"),
        node("c", "collect"),
        edges=[edge("s", "collection", "it", "collection"), edge("it", "item", "pass", "value"),
               edge("pass", "value", "c", "item")],
    )
    state = run(doc, run_context)
    assert values(state, "c", "collection") == [items]


# 4
def test_empty_collection_skips_body_and_collects_empty_list(run_context):
    doc = graph(
        node("s", "string_collection", collection=[]), node("it", "iterate"), node("body", "test_counted"),
        node("c", "collect"), node("consumer", "test_counted"),
        node("s2", "integer_collection", collection=[]), node("it2", "iterate"), node("body2", "test_counted"),
        node("c2", "collect"), node("consumer2", "test_counted"),
        edges=[edge("s", "collection", "it", "collection"), edge("it", "item", "body", "value"),
               edge("body", "value", "c", "item"), edge("c", "collection", "consumer", "value"),
               edge("s2", "collection", "it2", "collection"), edge("it2", "item", "body2", "value"),
               edge("body2", "value", "c2", "item"), edge("c2", "collection", "consumer2", "value")],
    )
    state = run(doc, run_context)
    assert state.is_complete() and not state.errors
    assert state.execs_of("body") == [] and state.execs_of("body2") == []
    assert values(state, "consumer") == [[]] and values(state, "consumer2") == [[]]
    assert [call[1] for call in CountedInvocation.calls] == [[], []]


def nested_range_graph(stop_offset: int = 2, *extra_nodes: dict, extra_edges: tuple = ()) -> dict:
    """outer range [0,1] → iterate → inner range(start=10·i, stop=start+offset) → iterate → add(b=0)."""
    return graph(
        node("outer", "range", start=0, stop=2, step=1), node("outer_it", "iterate"),
        node("start", "mul", b=10), node("stop", "add", b=stop_offset),
        node("inner", "range", step=1), node("inner_it", "iterate"), node("body", "add", b=0), *extra_nodes,
        edges=[edge("outer", "collection", "outer_it", "collection"), edge("outer_it", "item", "start", "a"),
               edge("start", "value", "stop", "a"), edge("start", "value", "inner", "start"),
               edge("stop", "value", "inner", "stop"), edge("inner", "collection", "inner_it", "collection"),
               edge("inner_it", "item", "body", "a"), *extra_edges],
    )


# 5
def test_nested_iterators_run_outer_major(run_context):
    state = run(nested_range_graph(), run_context)
    assert values(state, "body") == [0, 1, 10, 11]
    assert [n.path for n in state.execs_of("body")] == [(0, 0), (0, 1), (1, 0), (1, 1)]


# 6
def test_collector_is_scoped_to_the_enclosing_iteration(run_context):
    doc = nested_range_graph(2, node("c", "collect"), node("consumer", "test_counted"),
                             extra_edges=(edge("body", "value", "c", "item"), edge("c", "collection", "consumer", "value")))
    state = run(doc, run_context)
    assert values(state, "consumer") == [[0, 1], [10, 11]]


def test_empty_inner_groups_stay_separate_empty_lists(run_context):
    # outer item i gets the inner list [10i, 10i + 1, ...] of length 2i: empty for i = 0, [10, 11] for i = 1
    doc = graph(
        node("outer", "range", start=0, stop=2, step=1), node("outer_it", "iterate"),
        node("start", "mul", b=10), node("count", "mul", b=2),
        node("inner", "test_int_list"), node("inner_it", "iterate"), node("body", "add", b=0),
        node("c", "collect"), node("consumer", "test_counted"),
        edges=[edge("outer", "collection", "outer_it", "collection"), edge("outer_it", "item", "start", "a"),
               edge("outer_it", "item", "count", "a"), edge("start", "value", "inner", "start"),
               edge("count", "value", "inner", "count"), edge("inner", "collection", "inner_it", "collection"),
               edge("inner_it", "item", "body", "a"), edge("body", "value", "c", "item"),
               edge("c", "collection", "consumer", "value")],
    )
    state = run(doc, run_context)
    assert values(state, "consumer") == [[], [10, 11]]


# 7
def test_chained_collectors_keep_the_outer_scope(run_context):
    # per outer item: collect the inner items, iterate that list again, collect again → one group per outer item
    doc = nested_range_graph(
        2, node("c1", "collect"), node("again", "iterate"), node("double", "mul", b=2), node("c2", "collect"),
        node("consumer", "test_counted"),
        extra_edges=(edge("body", "value", "c1", "item"), edge("c1", "collection", "again", "collection"),
                     edge("again", "item", "double", "a"), edge("double", "value", "c2", "item"),
                     edge("c2", "collection", "consumer", "value")))
    state = run(doc, run_context)
    assert values(state, "consumer") == [[0, 2], [20, 22]]


# 8
def test_collector_accepts_mixed_sources_of_one_type(run_context):
    doc = graph(node("p", "test_prompt", prompt="Banana"), node("s", "string", value="Sushi"), node("c", "collect"),
                edges=[edge("p", "prompt", "c", "item"), edge("s", "value", "c", "item")])
    state = run(doc, run_context)
    assert set(values(state, "c", "collection")[0]) == {"Banana", "Sushi"}


# 10
def lazy_if_graph(condition: bool) -> dict:
    return graph(
        node("cond", "boolean", value=condition),
        node("shared", "test_prompt", prompt="shared"),
        node("t", "test_counted"), node("f", "test_counted"),
        node("f_parent", "test_prompt", prompt="only-false"),
        node("choose", "if"), node("sink", "test_counted"), node("shared_sink", "test_counted"),
        edges=[edge("cond", "value", "choose", "condition"), edge("shared", "prompt", "t", "value"),
               edge("f_parent", "prompt", "f", "value"), edge("shared", "prompt", "shared_sink", "value"),
               edge("t", "value", "choose", "true_input"), edge("f", "value", "choose", "false_input"),
               edge("choose", "value", "sink", "value")],
    )


@pytest.mark.parametrize("condition", [True, False])
def test_lazy_if_runs_only_the_selected_branch(run_context, condition):
    state = run(lazy_if_graph(condition), run_context)
    taken, not_taken = ("t", "f") if condition else ("f", "t")
    assert values(state, "sink") == (["shared"] if condition else ["only-false"])
    ran = [call[0] for call in CountedInvocation.calls]
    assert taken in ran and not_taken not in ran
    # the skipped node is in the history but has no result
    assert not_taken in state.history and state.outputs_of(not_taken) == []
    # the shared ancestor still runs exactly once
    assert state.history.count("shared") == 1
    if condition:
        assert "f_parent" in state.history and state.outputs_of("f_parent") == []


def test_distant_exclusive_ancestors_are_skipped(run_context):
    doc = graph(
        node("cond", "boolean", value=True), node("far", "test_counted", value="far"), node("near", "test_counted"),
        node("t", "test_prompt", prompt="yes"), node("choose", "if"),
        edges=[edge("cond", "value", "choose", "condition"), edge("far", "value", "near", "value"),
               edge("near", "value", "choose", "false_input"), edge("t", "prompt", "choose", "true_input")],
    )
    state = run(doc, run_context)
    assert CountedInvocation.calls == []
    assert values(state, "choose") == ["yes"]


def test_nested_ifs_resolve_inner_and_outer(run_context):
    doc = graph(
        node("outer_cond", "boolean", value=True), node("inner_cond", "boolean", value=False),
        node("a", "test_counted", value="a"), node("b", "test_counted", value="b"), node("c", "test_counted", value="c"),
        node("inner", "if"), node("outer", "if"),
        edges=[edge("inner_cond", "value", "inner", "condition"), edge("a", "value", "inner", "true_input"),
               edge("b", "value", "inner", "false_input"), edge("outer_cond", "value", "outer", "condition"),
               edge("inner", "value", "outer", "true_input"), edge("c", "value", "outer", "false_input")],
    )
    state = run(doc, run_context)
    assert values(state, "outer") == ["b"]
    assert [call[1] for call in CountedInvocation.calls] == ["b"]


def test_if_inside_an_iterator_resolves_per_iteration(run_context):
    # condition = (item == 1); true branch gives the item × 100, false branch the item + 1000
    doc = graph(
        node("r", "range", start=0, stop=3, step=1), node("it", "iterate"),
        node("minus_one", "sub", b=1), node("is_one", "test_is_zero"),
        node("times", "mul", b=100), node("plus", "add", b=1000), node("choose", "if"), node("c", "collect"),
        edges=[edge("r", "collection", "it", "collection"), edge("it", "item", "minus_one", "a"),
               edge("minus_one", "value", "is_one", "value"), edge("is_one", "value", "choose", "condition"),
               edge("it", "item", "times", "a"), edge("it", "item", "plus", "a"),
               edge("times", "value", "choose", "true_input"), edge("plus", "value", "choose", "false_input"),
               edge("choose", "value", "c", "item")],
    )
    state = run(doc, run_context)
    assert values(state, "c", "collection") == [[1000, 100, 1002]]
    assert [n.status for n in state.execs_of("times")] == ["skipped", "done", "skipped"]
    assert [n.status for n in state.execs_of("plus")] == ["done", "skipped", "done"]


# 12
def test_resume_after_serialisation_does_not_rerun_finished_nodes(run_context):
    doc = graph(
        node("s", "string_collection", collection=["x", "y", "z"]), node("it", "iterate"),
        node("body", "test_counted"), node("c", "collect"), node("end", "test_counted"),
        edges=[edge("s", "collection", "it", "collection"), edge("it", "item", "body", "value"),
               edge("body", "value", "c", "item"), edge("c", "collection", "end", "value")],
    )
    g = Graph.from_dict(doc)
    g.validate()
    # string_collection, three iterate copies, then two of the three bodies
    partial = Engine(run_context).run(ExecutionState(g), max_nodes=6)
    assert not partial.is_complete()
    ran_before = list(CountedInvocation.calls)
    assert [c[1] for c in ran_before] == ["x", "y"]

    restored = ExecutionState.from_json(json.dumps(json.loads(partial.to_json())))
    finished = Engine(run_context).run(restored)
    assert finished.is_complete() and not finished.errors
    ran_after = CountedInvocation.calls[len(ran_before):]
    assert {c[0] for c in ran_after}.isdisjoint({c[0] for c in ran_before})
    assert values(finished, "end") == [["x", "y", "z"]]
    assert finished.history[:len(partial.history)] == partial.history


# 15
def test_required_connection_is_checked_when_the_node_runs(run_context):
    doc = graph(node("n", "test_needs_connection"))
    g = Graph.from_dict(doc)
    g.validate()  # valid at build time
    with pytest.raises(NodeExecutionError, match="missing connections for field value") as info:
        Engine(run_context).run(ExecutionState(g))
    assert info.value.node_id == "n"


def test_node_failure_names_the_node_and_stops_the_run(run_context):
    doc = graph(node("p", "test_prompt", prompt="x"), node("boom", "test_error"), node("after", "test_counted"),
                edges=[edge("p", "prompt", "boom", "value"), edge("boom", "value", "after", "value")])
    state = ExecutionState(Graph.from_dict(doc))
    with pytest.raises(NodeExecutionError, match=r"Node boom \(test_error\) failed: RuntimeError") as info:
        Engine(run_context).run(state)
    assert info.value.node_id == "boom"
    assert state.errors and "boom" in state.errors and state.is_complete()
    assert CountedInvocation.calls == []


def test_cancel_flag_stops_between_nodes(run_context):
    doc = graph(node("a", "test_counted", value=1), node("b", "test_counted"),
                edges=[edge("a", "value", "b", "value")])
    cancel_after_first = threading.Event()

    def on_complete(state, exec_node):
        run_context.cancel_event.set()
        cancel_after_first.set()

    state = ExecutionState(Graph.from_dict(doc))
    with pytest.raises(CanceledError):
        Engine(run_context, on_node_complete=on_complete).run(state)
    assert cancel_after_first.is_set()
    assert [c[0] for c in CountedInvocation.calls] == ["a"]
    assert state.canceled


def test_timings_are_recorded_per_exec_node(run_context):
    state = run(nested_range_graph(), run_context)
    assert set(state.timings) == set(state.exec_nodes)
    assert all(t >= 0 for t in state.timings.values())


def test_leaf_outputs_list_every_copy_in_iteration_order(run_context):
    state = run(nested_range_graph(), run_context)
    leaves = state.leaf_outputs()
    assert list(leaves) == ["body"]
    assert [o["value"] for o in leaves["body"]] == [0, 1, 10, 11]
    assert all(o["type"] == "integer_output" for o in leaves["body"])


def test_two_independent_iterators_multiply(run_context):
    doc = graph(
        node("xs", "range", start=0, stop=2, step=1), node("ys", "range", start=10, stop=13, step=1),
        node("ix", "iterate"), node("iy", "iterate"), node("sum", "add"),
        edges=[edge("xs", "collection", "ix", "collection"), edge("ys", "collection", "iy", "collection"),
               edge("ix", "item", "sum", "a"), edge("iy", "item", "sum", "b")],
    )
    state = run(doc, run_context)
    assert values(state, "sum") == [10, 11, 12, 11, 12, 13]

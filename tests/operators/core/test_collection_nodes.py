"""Integer collection nodes: range, range_of_size and random_range."""

from __future__ import annotations

import pytest

from helpers import edge, graph_of as graph, only_output

from invokeai_provider.graph.engine import run_graph
from invokeai_provider.errors import NodeExecutionError, NodeValidationError
from invokeai_provider.core.registry import InvocationRegistry


def collection_of(run, node: dict) -> list:
    return only_output(run, node).collection


# type -> (class name, title, version, use_cache)
DECLARED = {
    "range": ("RangeInvocation", "Integer Range", "1.0.0", True),
    "range_of_size": ("RangeOfSizeInvocation", "Integer Range of Size", "1.0.0", True),
    "random_range": ("RandomRangeInvocation", "Random Range", "1.0.1", False),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declaration_matches_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    name, title, version, use_cache = DECLARED[node_type]
    assert cls.__name__ == name
    assert (cls.UIConfig.title, cls.UIConfig.version, cls.UIConfig.category) == (title, version, "batch")
    assert cls.model_fields["use_cache"].default is use_cache
    assert cls.output_class.get_type() == "integer_collection_output"


@pytest.mark.parametrize("node_type, expected", [
    ("range", {"start": 0, "stop": 10, "step": 1}),
    ("range_of_size", {"start": 0, "size": 1, "step": 1}),
    ("random_range", {"low": 0, "high": 2147483647, "size": 1, "seed": 0}),
])
def test_default_values(node_type, expected):
    assert InvocationRegistry.get_invocation_class(node_type)(id="x").literal_values() == expected


# --- range ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, expected", [
    ({}, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ({"start": 0, "stop": 10, "step": 3}, [0, 3, 6, 9]),
    ({"start": -4, "stop": 2, "step": 2}, [-4, -2, 0]),
    ({"start": 0, "stop": 5, "step": -1}, []),  # a negative step never reaches a larger stop
])
def test_range(run, fields, expected):
    assert collection_of(run, {"type": "range", **fields}) == expected


@pytest.mark.parametrize("start, stop", [(5, 5), (8, 3)])
def test_range_stop_must_exceed_start(start, stop):
    with pytest.raises(NodeValidationError, match="stop must be greater than start") as info:
        graph({"n": {"type": "range", "start": start, "stop": stop}})
    assert info.value.field == "stop"


def test_range_zero_step_fails_when_run(run):
    with pytest.raises(NodeExecutionError) as info:
        run_graph(graph({"n": {"type": "range", "step": 0}}), run)
    assert isinstance(info.value.cause, ValueError)


# --- range_of_size -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, expected", [
    ({}, [0]),
    ({"start": 10, "size": 4, "step": -3}, [10, 7, 4, 1]),
    ({"start": 100, "size": 3, "step": 25}, [100, 125, 150]),
])
def test_range_of_size(run, fields, expected):
    assert collection_of(run, {"type": "range_of_size", **fields}) == expected


@pytest.mark.parametrize("size", [0, -2])
def test_range_of_size_needs_a_positive_size(size):
    with pytest.raises(NodeValidationError, match="size"):
        graph({"n": {"type": "range_of_size", "size": size}})


# --- random_range --------------------------------------------------------------------------------------


def test_random_range_matches_numpy_default_rng(run):
    np = pytest.importorskip("numpy")
    expected = [int(v) for v in np.random.default_rng(42).integers(low=-50, high=50, size=6)]
    out = collection_of(run, {"type": "random_range", "low": -50, "high": 50, "size": 6, "seed": 42})
    assert out == expected
    assert all(type(v) is int and -50 <= v < 50 for v in out)


def test_random_range_same_seed_same_list_other_seed_other_list(run):
    node = {"type": "random_range", "high": 1_000_000, "size": 8}
    a = collection_of(run, {**node, "seed": 1})
    b = collection_of(run, {**node, "seed": 1})
    c = collection_of(run, {**node, "seed": 2})
    assert a == b
    assert a != c


@pytest.mark.parametrize("seed", [-1, 4_294_967_296])
def test_random_range_seed_bounds(seed):
    with pytest.raises(NodeValidationError, match="seed"):
        graph({"n": {"type": "random_range", "seed": seed}})


def test_random_range_accepts_largest_seed(run):
    assert len(collection_of(run, {"type": "random_range", "size": 3, "seed": 4_294_967_295})) == 3


# --- in a graph ----------------------------------------------------------------------------------------


def test_range_drives_an_iteration(run):
    state = run_graph(graph(
        {
            "r": {"type": "range", "start": 1, "stop": 4},
            "each": {"type": "iterate"},
            "square": {"type": "integer_math", "operation": "EXP", "b": 2},
            "all": {"type": "collect"},
        },
        [
            edge("r", "collection", "each", "collection"),
            edge("each", "item", "square", "a"),
            edge("square", "value", "all", "item"),
        ],
    ), run)
    assert state.outputs_of("all")[0].collection == [1, 4, 9]

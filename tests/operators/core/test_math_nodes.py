"""Math nodes: declarations, results (including InvokeAI's rounding quirks) and build-time checks."""

from __future__ import annotations

import math

import pytest

from helpers import edge, graph_of as graph, only_output

from invokeai_provider.graph.engine import run_graph
from invokeai_provider.errors import NodeExecutionError, NodeInputError, NodeValidationError
from invokeai_provider.core.registry import InvocationRegistry


def value_of(run, node: dict):
    return only_output(run, node).value


# type -> (class name, title, version, use_cache, output type)
DECLARED = {
    "add": ("AddInvocation", "Add Integers", "1.0.1", True, "integer_output"),
    "sub": ("SubtractInvocation", "Subtract Integers", "1.0.1", True, "integer_output"),
    "mul": ("MultiplyInvocation", "Multiply Integers", "1.0.1", True, "integer_output"),
    "div": ("DivideInvocation", "Divide Integers", "1.0.1", True, "integer_output"),
    "integer_math": ("IntegerMathInvocation", "Integer Math", "1.0.1", True, "integer_output"),
    "float_math": ("FloatMathInvocation", "Float Math", "1.0.1", True, "float_output"),
    "float_to_int": ("FloatToIntegerInvocation", "Float To Integer", "1.0.1", True, "integer_output"),
    "round_float": ("RoundInvocation", "Round Float", "1.0.1", True, "float_output"),
    "rand_int": ("RandomIntInvocation", "Random Integer", "1.0.1", False, "integer_output"),
    "rand_float": ("RandomFloatInvocation", "Random Float", "1.0.1", False, "float_output"),
    "float_range": ("FloatLinearRangeInvocation", "Float Range", "1.0.1", True, "float_collection_output"),
}


@pytest.mark.parametrize("node_type", sorted(DECLARED))
def test_declaration_matches_invokeai(node_type):
    cls = InvocationRegistry.get_invocation_class(node_type)
    name, title, version, use_cache, output_type = DECLARED[node_type]
    assert cls.__name__ == name
    assert (cls.UIConfig.title, cls.UIConfig.version, cls.UIConfig.category) == (title, version, "math")
    assert cls.model_fields["use_cache"].default is use_cache
    assert cls.output_class.get_type() == output_type


def _defaults(node_type: str) -> dict:
    cls = InvocationRegistry.get_invocation_class(node_type)
    return cls(id="x").literal_values()


@pytest.mark.parametrize("node_type, expected", [
    ("add", {"a": 0, "b": 0}),
    ("div", {"a": 0, "b": 0}),
    ("integer_math", {"operation": "ADD", "a": 1, "b": 1}),
    ("float_math", {"operation": "ADD", "a": 1.0, "b": 1.0}),
    ("rand_int", {"low": 0, "high": 2147483647}),
    ("rand_float", {"low": 0.0, "high": 1.0, "decimals": 2}),
    ("float_to_int", {"value": 0.0, "multiple": 1, "method": "Nearest"}),
    ("round_float", {"value": 0.0, "decimals": 0}),
    ("float_range", {"start": 5.0, "stop": 10.0, "steps": 30}),
])
def test_default_values(node_type, expected):
    assert _defaults(node_type) == expected


# --- add / sub / mul / div -----------------------------------------------------------------------------


@pytest.mark.parametrize("node_type, a, b, expected", [
    ("add", 19, 23, 42),
    ("sub", 5, 12, -7),
    ("mul", -6, 7, -42),
    ("div", 7, 2, 3),
    ("div", -7, 2, -3),  # truncates toward zero, unlike floor division (-4)
    ("div", 9, -3, -3),
])
def test_integer_arithmetic(run, node_type, a, b, expected):
    assert value_of(run, {"type": node_type, "a": a, "b": b}) == expected


def test_div_by_zero_fails_when_run(run):
    with pytest.raises(NodeExecutionError) as info:
        run_graph(graph({"n": {"type": "div", "a": 1, "b": 0}}), run)
    assert isinstance(info.value.cause, ZeroDivisionError)


def test_chained_through_edges(run):
    state = run_graph(graph(
        {
            "x": {"type": "integer", "value": 6},
            "y": {"type": "integer", "value": 4},
            "sum": {"type": "add"},
            "twice": {"type": "mul", "b": 2},
        },
        [edge("x", "value", "sum", "a"), edge("y", "value", "sum", "b"), edge("sum", "value", "twice", "a")],
    ), run)
    assert state.outputs_of("twice")[0].value == 20


# --- integer_math --------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation, a, b, expected", [
    ("ADD", 3, 4, 7),
    ("SUB", 3, 4, -1),
    ("MUL", 3, 4, 12),
    ("DIV", -9, 4, -2),
    ("EXP", 2, 10, 1024),
    ("EXP", 5, 0, 1),
    ("MOD", -7, 3, 2),  # Python's modulus takes the divisor's sign
    ("MOD", 7, -3, -2),
    ("ABS", -11, 99, 11),
    ("MIN", 8, -2, -2),
    ("MAX", 8, -2, 8),
])
def test_integer_math(run, operation, a, b, expected):
    assert value_of(run, {"type": "integer_math", "operation": operation, "a": a, "b": b}) == expected


@pytest.mark.parametrize("operation, b, message", [
    ("DIV", 0, "Cannot divide by zero"),
    ("MOD", 0, "Cannot divide by zero"),
    ("EXP", -1, "Result of exponentiation is not an integer"),
])
def test_integer_math_rejects_unrepresentable_results_when_built(operation, b, message):
    with pytest.raises(NodeValidationError, match=message) as info:
        graph({"n": {"type": "integer_math", "operation": operation, "a": 5, "b": b}})
    assert info.value.node_id == "n"
    assert info.value.field == "b"


def test_integer_math_zero_divisor_is_fine_for_other_operations(run):
    assert value_of(run, {"type": "integer_math", "operation": "MUL", "a": 5, "b": 0}) == 0


def test_integer_math_rejects_unknown_operation():
    with pytest.raises(NodeValidationError, match="operation"):
        graph({"n": {"type": "integer_math", "operation": "ROOT", "a": 5, "b": 2}})


def test_integer_math_checks_a_divisor_arriving_on_an_edge(run):
    nodes = {"zero": {"type": "integer", "value": 0}, "n": {"type": "integer_math", "operation": "DIV", "a": 5}}
    with pytest.raises(NodeExecutionError) as info:
        run_graph(graph(nodes, [edge("zero", "value", "n", "b")]), run)
    assert isinstance(info.value.cause, NodeInputError)
    assert "Cannot divide by zero" in str(info.value)


# --- float_math ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation, a, b, expected", [
    ("ADD", 1.5, 2.25, 3.75),
    ("SUB", 1.5, 2.25, -0.75),
    ("MUL", 1.5, -2.0, -3.0),
    ("DIV", 1.0, 8.0, 0.125),
    ("EXP", 9.0, 0.5, 3.0),
    ("EXP", 2.0, -2.0, 0.25),
    ("SQRT", 6.25, 100.0, 2.5),
    ("ABS", -0.5, 0.0, 0.5),
    ("MIN", 0.1, 0.2, 0.1),
    ("MAX", 0.1, 0.2, 0.2),
])
def test_float_math(run, operation, a, b, expected):
    assert value_of(run, {"type": "float_math", "operation": operation, "a": a, "b": b}) == pytest.approx(expected)


def test_float_math_sqrt_of_negative_is_nan(run):
    assert math.isnan(value_of(run, {"type": "float_math", "operation": "SQRT", "a": -4.0}))


@pytest.mark.parametrize("operation, a, b, message", [
    ("DIV", 3.0, 0.0, "Cannot divide by zero"),
    ("EXP", 0.0, -1.0, "Cannot raise zero to a negative power"),
    ("EXP", -8.0, 1 / 3, "Root operation resulted in a complex number"),
    ("EXP", 10.0, 1000.0, "too large"),
])
def test_float_math_rejects_bad_operands_when_built(operation, a, b, message):
    with pytest.raises(NodeValidationError, match=message):
        graph({"n": {"type": "float_math", "operation": operation, "a": a, "b": b}})


def test_float_math_takes_integer_on_an_edge(run):
    state = run_graph(graph(
        {"i": {"type": "integer", "value": 3}, "n": {"type": "float_math", "operation": "DIV", "b": 4.0}},
        [edge("i", "value", "n", "a")],
    ), run)
    assert state.outputs_of("n")[0].value == 0.75


# --- float_to_int / round_float ------------------------------------------------------------------------


@pytest.mark.parametrize("value, multiple, method, expected", [
    (2.5, 1, "Nearest", 2),  # round half to even
    (3.5, 1, "Nearest", 4),
    (21.0, 8, "Nearest", 24),
    (19.9, 8, "Nearest", 16),
    (21.0, 8, "Floor", 16),
    (-21.0, 8, "Floor", -24),
    (17.0, 8, "Ceiling", 24),
    (-17.0, 8, "Ceiling", -16),
    (-21.0, 8, "Truncate", -16),
    (23.9, 8, "Truncate", 16),
    (7.0, 1, "Floor", 7),
])
def test_float_to_int(run, value, multiple, method, expected):
    out = value_of(run, {"type": "float_to_int", "value": value, "multiple": multiple, "method": method})
    assert out == expected
    assert type(out) is int


def test_float_to_int_multiple_must_be_positive():
    with pytest.raises(NodeValidationError, match="multiple"):
        graph({"n": {"type": "float_to_int", "value": 3.0, "multiple": 0}})


def test_float_to_int_rejects_unknown_method():
    with pytest.raises(NodeValidationError, match="method"):
        graph({"n": {"type": "float_to_int", "value": 3.0, "method": "Up"}})


@pytest.mark.parametrize("value, decimals, expected", [
    (3.14159, 2, 3.14),
    (2.5, 0, 2.0),
    (1234.5, -2, 1200.0),
    (-0.0049, 2, -0.0),
])
def test_round_float(run, value, decimals, expected):
    assert value_of(run, {"type": "round_float", "value": value, "decimals": decimals}) == expected


# --- random numbers ------------------------------------------------------------------------------------


def test_rand_int_uses_numpys_global_generator(run):
    np = pytest.importorskip("numpy")
    np.random.seed(2024)
    expected = int(np.random.randint(10, 1000))
    np.random.seed(2024)
    assert value_of(run, {"type": "rand_int", "low": 10, "high": 1000}) == expected


def test_rand_int_single_value_range(run):
    assert value_of(run, {"type": "rand_int", "low": 41, "high": 42}) == 41


def test_rand_int_default_bounds(run):
    assert 0 <= value_of(run, {"type": "rand_int"}) < 2147483647


def test_rand_float_rounds_to_requested_places(run):
    np = pytest.importorskip("numpy")
    np.random.seed(7)
    expected = round(float(np.random.uniform(2.0, 3.0)), 3)
    np.random.seed(7)
    out = value_of(run, {"type": "rand_float", "low": 2.0, "high": 3.0, "decimals": 3})
    assert out == expected
    assert 2.0 <= out <= 3.0
    assert round(out, 3) == out


def test_random_nodes_are_not_cached_by_default():
    g = graph({"i": {"type": "rand_int"}, "f": {"type": "rand_float"}})
    assert g.nodes["i"].use_cache is False
    assert g.nodes["f"].use_cache is False


# --- float_range ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("start, stop, steps, expected", [
    (0.0, 1.0, 5, [0.0, 0.25, 0.5, 0.75, 1.0]),
    (10.0, 4.0, 4, [10.0, 8.0, 6.0, 4.0]),
    (3.0, 9.0, 1, [3.0]),
    (3.0, 9.0, 0, []),
])
def test_float_range(run, start, stop, steps, expected):
    state = run_graph(graph({"n": {"type": "float_range", "start": start, "stop": stop, "steps": steps}}), run)
    assert state.outputs_of("n")[0].collection == pytest.approx(expected)


def test_float_range_defaults_span_five_to_ten(run):
    state = run_graph(graph({"n": {"type": "float_range"}}), run)
    values = state.outputs_of("n")[0].collection
    assert len(values) == 30
    assert values[0] == 5.0 and values[-1] == 10.0
    assert all(type(v) is float for v in values)
    gaps = {round(b - a, 9) for a, b in zip(values, values[1:])}
    assert gaps == {round(5 / 29, 9)}

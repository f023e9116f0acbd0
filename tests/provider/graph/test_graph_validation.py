"""Parsing and validation (reference §2.2 and scenario 9): every bad input is refused with a message that
names the node, the field and what was expected, before anything runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import edge, graph, node

from invokeai_provider.errors import (
    CyclicalGraphError,
    DuplicateNodeIdError,
    GraphParseError,
    InvalidEdgeError,
    NodeFieldNotFoundError,
    NodeIdMismatchError,
    NodeNotFoundError,
    NodeValidationError,
    UnknownNodeTypeError,
)
from invokeai_provider.graph.graph import Graph
from invokeai_provider.core.invocation import BaseInvocation
from invokeai_provider.core.typecompat import are_connection_types_compatible


def validate(doc: dict[str, Any]) -> Graph:
    g = Graph.from_dict(doc)
    g.validate()
    return g


def test_valid_graph_round_trips_through_json():
    doc = graph(node("a", "integer", value=3), node("b", "add", b=4), edges=[edge("a", "value", "b", "a")])
    g = validate(doc)
    again = Graph.from_json(json.dumps(g.to_dict()))
    again.validate()
    assert again.to_dict() == g.to_dict()
    assert again.nodes["b"].b == 4


def test_malformed_json_says_where():
    with pytest.raises(GraphParseError, match="line 1, column"):
        Graph.from_json('{"nodes": {')


def test_unknown_node_type_names_the_node():
    with pytest.raises(UnknownNodeTypeError, match='node n1: unknown node type "not_a_node"') as info:
        Graph.from_dict(graph(node("n1", "not_a_node")))
    assert info.value.node_id == "n1" and info.value.field == "type"


def test_unknown_literal_field_lists_the_expected_fields():
    with pytest.raises(NodeValidationError, match=r'node a \(add\): unknown field "c"; expected one of: a, b') as info:
        Graph.from_dict(graph(node("a", "add", c=1)))
    assert info.value.field == "c"


def test_wrong_literal_type_says_what_was_expected():
    with pytest.raises(NodeValidationError, match=r'node a \(add\): field "a" .*expected int') as info:
        Graph.from_dict(graph(node("a", "add", a="many")))
    assert info.value.node_id == "a" and info.value.field == "a"


def test_duplicate_node_id():
    doc = graph(node("a", "integer"))
    doc["nodes"]["b"] = node("a", "integer")
    g = Graph.from_dict(doc)
    with pytest.raises(DuplicateNodeIdError, match="node id a is used by more than one node"):
        g.validate()


def test_node_key_must_equal_its_id():
    doc = {"nodes": {"key": node("other", "integer")}, "edges": []}
    with pytest.raises(NodeIdMismatchError, match='node key "key" differs from its id "other"'):
        validate(doc)


def test_edge_to_missing_node():
    doc = graph(node("a", "integer"), edges=[edge("a", "value", "ghost", "a")])
    with pytest.raises(NodeNotFoundError, match="destination node ghost does not exist") as info:
        validate(doc)
    assert info.value.node_id == "ghost"


def test_edge_from_missing_output_field_lists_the_outputs():
    doc = graph(node("a", "integer"), node("b", "add"), edges=[edge("a", "nope", "b", "a")])
    with pytest.raises(NodeFieldNotFoundError, match=r'node a \(integer\) has no output field "nope"; expected one of: value'):
        validate(doc)


def test_edge_to_missing_input_field():
    doc = graph(node("a", "integer"), node("b", "add"), edges=[edge("a", "value", "b", "c")])
    with pytest.raises(NodeFieldNotFoundError, match=r'node b \(add\) has no input field "c"') as info:
        validate(doc)
    assert (info.value.node_id, info.value.field) == ("b", "c")


def test_second_edge_into_one_input():
    doc = graph(node("a", "integer"), node("b", "integer"), node("c", "add"),
                edges=[edge("a", "value", "c", "a"), edge("b", "value", "c", "a")])
    with pytest.raises(InvalidEdgeError, match=r"input c.a already has an edge from a.value") as info:
        validate(doc)
    assert (info.value.node_id, info.value.field) == ("c", "a")


def test_collect_item_takes_many_edges():
    doc = graph(node("a", "integer"), node("b", "integer"), node("c", "collect"),
                edges=[edge("a", "value", "c", "item"), edge("b", "value", "c", "item")])
    validate(doc)


@pytest.mark.parametrize("length", [2, 12])
def test_cycles_short_and_long_are_refused(length):
    nodes = [node(f"n{i}", "add") for i in range(length)]
    edges = [edge(f"n{i}", "value", f"n{(i + 1) % length}", "a") for i in range(length)]
    with pytest.raises(CyclicalGraphError, match="cycle through nodes"):
        validate(graph(*nodes, edges=edges))


def test_is_valid_answers_without_raising():
    assert Graph.from_dict(graph(node("a", "integer"))).is_valid()
    cyclic = graph(node("a", "add"), node("b", "add"), edges=[edge("a", "value", "b", "a"), edge("b", "value", "a", "a")])
    assert not Graph.from_dict(cyclic).is_valid()


def test_int_goes_into_float_but_float_not_into_int():
    validate(graph(node("i", "integer"), node("f", "float_math"), edges=[edge("i", "value", "f", "a")]))
    doc = graph(node("f", "float"), node("i", "add"), edges=[edge("f", "value", "i", "a")])
    with pytest.raises(InvalidEdgeError, match=r"field a of node i \(add\) expects int, but f.value gives float") as info:
        validate(doc)
    assert (info.value.node_id, info.value.field) == ("i", "a")


def test_type_rules_match_invokeai():
    assert are_connection_types_compatible(int, float)
    assert not are_connection_types_compatible(float, int)
    assert are_connection_types_compatible(int, str) and are_connection_types_compatible(float, str)
    assert are_connection_types_compatible(str, Any) and are_connection_types_compatible(Any, int)
    assert are_connection_types_compatible(int, int | list[int])  # polymorphic inputs
    assert are_connection_types_compatible(int | None, int | list[int] | None)
    assert not are_connection_types_compatible(str, int | list[int])
    assert are_connection_types_compatible(bool, int)  # a subclass into its base


def test_iterator_needs_exactly_one_list_input():
    with pytest.raises(InvalidEdgeError, match="iterator node it: an iterator needs one edge"):
        validate(graph(node("it", "iterate")))
    doc = graph(node("a", "integer"), node("it", "iterate"), edges=[edge("a", "value", "it", "collection")])
    with pytest.raises(InvalidEdgeError, match="collection input must be a list, got int"):
        validate(doc)


def test_iterator_item_must_fit_its_destinations():
    doc = graph(node("s", "string_collection", collection=["a"]), node("it", "iterate"), node("m", "add"),
                edges=[edge("s", "collection", "it", "collection"), edge("it", "item", "m", "a")])
    with pytest.raises(InvalidEdgeError, match=r"its item \(str\) cannot go to m.a"):
        validate(doc)


def test_iterator_fed_by_collector_checks_the_collected_type():
    doc = graph(node("s", "string", value="x"), node("c", "collect"), node("it", "iterate"), node("m", "add"),
                edges=[edge("s", "value", "c", "item"), edge("c", "collection", "it", "collection"),
                       edge("it", "item", "m", "a")])
    with pytest.raises(InvalidEdgeError, match=r"the collected items \(str\) cannot go to m.a"):
        validate(doc)


def test_collector_needs_an_input():
    doc = graph(node("c", "collect"), node("sink", "test_string_list"), edges=[edge("c", "collection", "sink", "collection")])
    with pytest.raises(InvalidEdgeError, match="collector node c: a collector needs at least one edge"):
        validate(doc)


def test_collector_refuses_mixed_item_types():
    doc = graph(node("s", "string"), node("i", "integer"), node("c", "collect"),
                edges=[edge("s", "value", "c", "item"), edge("i", "value", "c", "item")])
    with pytest.raises(InvalidEdgeError, match="collected items must be of a single type, got int, str"):
        validate(doc)


def test_collector_output_must_go_to_a_list_of_the_same_type():
    into_scalar = graph(node("s", "string"), node("c", "collect"), node("p", "test_prompt"),
                        edges=[edge("s", "value", "c", "item"), edge("c", "collection", "p", "prompt")])
    with pytest.raises(InvalidEdgeError, match="must go to a list input, but p.prompt expects str"):
        validate(into_scalar)
    wrong_items = graph(node("i", "integer"), node("c", "collect"), node("sink", "test_string_list"),
                        edges=[edge("i", "value", "c", "item"), edge("c", "collection", "sink", "collection")])
    with pytest.raises(InvalidEdgeError, match=r"its items \(int\) do not fit sink.collection"):
        validate(wrong_items)
    validate(graph(node("s", "string"), node("c", "collect"), node("sink", "test_string_list"),
                   edges=[edge("s", "value", "c", "item"), edge("c", "collection", "sink", "collection")]))


def test_node_fields_are_optional_when_built_and_keep_their_original_requirement():
    from invokeai_provider.core.registry import InvocationRegistry

    cls = InvocationRegistry.get_invocation_class("test_needs_connection")
    built = cls(id="x")  # no value yet: an edge may bring it
    assert built.value is None
    extra = cls.model_fields["value"].json_schema_extra
    assert extra["orig_required"] is True and extra["input"] == "connection"
    assert cls.input_type("value") is int


def test_decorator_refuses_bad_definitions():
    from invokeai_provider.errors import InvalidNodeDefinitionError
    from invokeai_provider.core.invocation import invocation

    class NoVersion(BaseInvocation):
        def invoke(self, context):  # noqa: ANN001, ANN201 - deliberately unannotated
            return None

    with pytest.raises(InvalidNodeDefinitionError, match="must be annotated to return"):
        invocation("test_bad_output")(NoVersion)
    with pytest.raises(InvalidNodeDefinitionError, match='invalid version "one"'):
        invocation("test_bad_version", version="one")(NoVersion)
    with pytest.raises(InvalidNodeDefinitionError, match="no whitespace"):
        invocation("has space")(NoVersion)

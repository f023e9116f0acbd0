"""Constraints a Param takes from the fields its value reaches through primitive nodes.

Saved workflows expose a primitive (``string``, ``integer`` …) whose value an edge carries to the field that
uses it: a prompt to ``compel.prompt``, a width to ``noise.width``. The primitive's own field has no bounds,
so without this the trigger form would take a 1 MB prompt or a width of 100 and the run would fail later
in a task. A value passes through a node unchanged when that node's one input is also the name of an output
(a primitive's ``value``, the scheduler node's ``scheduler``); every field reached that way (through chains
of such nodes too) adds its constraints to the Param, for single values and for batch items alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from invokeai_provider.compiler.param_schema import apply_constraints

if TYPE_CHECKING:
    from invokeai_provider.core.invocation import BaseInvocation
    from invokeai_provider.graph.graph import Graph

__all__ = ["apply_fed_constraints", "fed_fields", "passes_through"]


def passes_through(node_class: type["BaseInvocation"], field_name: str) -> bool:
    """Whether the node's output ``field_name`` is its one input of that name, unchanged (a relay)."""
    return (list(node_class.input_fields()) == [field_name]
            and field_name in node_class.get_output_annotation().model_fields)


def fed_fields(graph: "Graph", node_id: str, field_name: str) -> Iterator[tuple[str, str]]:
    """(node id, field) of every input a value set on ``node_id.field_name`` reaches unchanged."""
    seen: set[str] = set()
    pending = [(node_id, field_name)] if passes_through(type(graph.nodes[node_id]), field_name) else []
    while pending:
        current, field = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for edge in graph.output_edges(current, field):
            target, target_field = edge.destination.node_id, edge.destination.field
            yield target, target_field
            if passes_through(type(graph.nodes[target]), target_field):
                pending.append((target, target_field))


def apply_fed_constraints(schema: dict[str, Any], graph: "Graph", node_id: str, field_name: str) -> None:
    """Tightens ``schema`` (a Param's, or a batch item's) by the constraints of every field the value reaches."""
    for target, target_field in fed_fields(graph, node_id, field_name):
        info = type(graph.nodes[target]).input_fields().get(target_field)
        if info is not None:
            apply_constraints(schema, info, None, target, target_field)

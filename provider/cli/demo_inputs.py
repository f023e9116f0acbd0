"""Which trigger-form Param (or node field) of a demo workflow sets its prompt, model, seed, steps and size.

Workflows name their Params after their labels (``noise_width`` in one, ``width`` in another), and people re-wire
them, so the demo does not hard-code names: it starts from the node input that matters (the noise node's
``width``) and walks back along edges through pass-through nodes (primitives, whose ``value`` output is their
``value`` input) to the exposed field that feeds it. An input that no form field feeds is set on the node itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from invokeai_provider.compiler.fed_constraints import passes_through
from invokeai_provider.errors import InvokeAIProviderError

if TYPE_CHECKING:
    from invokeai_provider.compiler.params import ParamSpec
    from invokeai_provider.graph.workflow import Document

__all__ = ["InputPath", "Target", "resolve_input", "set_argument"]


@dataclass(frozen=True)
class InputPath:
    """A node input, found from a node type: ``InputPath("noise", "width")``, or with hops along edges:
    ``InputPath("denoise_latents", "positive_conditioning", ("prompt",))`` is the ``prompt`` input of the node
    whose output feeds the denoise node's positive conditioning."""

    node_type: str
    field: str
    hops: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ".".join((self.node_type, self.field, *self.hops))


@dataclass(frozen=True)
class Target:
    """Where a value goes: a Param of the DAG (``param``) or, when no form field feeds the input, the node field."""

    param: str | None
    node_id: str
    field: str


def _unique_node(document: "Document", node_type: str, path: InputPath) -> str:
    found = [node_id for node_id, node in document.graph.nodes.items() if node.get_type() == node_type]
    if len(found) != 1:
        raise InvokeAIProviderError(f"cannot find where {path} is set: the workflow has {len(found)} "
                                    f"{node_type!r} nodes, expected exactly one")
    return found[0]


def _feeding_edge(document: "Document", node_id: str, field: str) -> Any:
    return next((e for e in document.graph.edges if e.destination.node_id == node_id and e.destination.field == field),
                None)


def resolve_input(document: "Document", specs: Sequence["ParamSpec"], path: InputPath) -> Target:
    """The Param that sets ``path``'s input, else the node field itself (when no edge feeds it)."""
    node_id, field = _unique_node(document, path.node_type, path), path.field
    for hop in path.hops:
        edge = _feeding_edge(document, node_id, field)
        if edge is None:
            raise InvokeAIProviderError(f"cannot find where {path} is set: {node_id}.{field} has no incoming edge")
        node_id, field = edge.source.node_id, hop
    by_input = {(s.node_id, s.field_name): s.name for s in specs if s.node_id is not None}
    seen: set[tuple[str, str]] = set()
    while (node_id, field) not in seen:
        seen.add((node_id, field))
        if (node_id, field) in by_input:
            return Target(by_input[node_id, field], node_id, field)
        edge = _feeding_edge(document, node_id, field)
        if edge is None:
            return Target(None, node_id, field)
        source = edge.source
        if not passes_through(type(document.graph.nodes[source.node_id]), source.field):
            raise InvokeAIProviderError(f"cannot set {path}: {node_id}.{field} is computed by {source} (not a form "
                                        "field or a pass-through node)")
        node_id, field = source.node_id, source.field  # a relay (primitive): its one input is its output
    raise InvokeAIProviderError(f"cannot set {path}: the edges into {node_id}.{field} form a loop")


def set_argument(target: Target, value: Any) -> str:
    """The ``run --set`` argument that gives ``target`` the value (JSON, so a prompt like ``42`` stays a string)."""
    text = json.dumps(value)
    return f"{target.param}={text}" if target.param else f"{target.node_id}.{target.field}={text}"

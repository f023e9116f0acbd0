"""``--set NODE_ID.FIELD=VALUE``: parsing the assignments and writing them into a graph (``graph run``, ``run``,
and the embedded Airflow run's document patching)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from invokeai_provider.errors import InvokeAIProviderError, NodeFieldNotFoundError, NodeNotFoundError

__all__ = ["apply_overrides", "parse_set"]


def parse_set(assignments: Sequence[str]) -> list[tuple[str, str, Any]]:
    """``NODE_ID.FIELD=VALUE``: VALUE is read as JSON when it parses, else taken as a string."""
    parsed = []
    for assignment in assignments:
        target, sep, raw = assignment.partition("=")
        node_id, dot, field = target.rpartition(".")
        if not sep or not dot or not node_id or not field:
            raise InvokeAIProviderError(f"--set {assignment!r}: expected NODE_ID.FIELD=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parsed.append((node_id, field, value))
    return parsed


def apply_overrides(graph_dict: dict[str, Any], overrides: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """Writes ``--set`` values into a graph dict; a field fed by an edge cannot be set."""
    from invokeai_provider.core.registry import InvocationRegistry

    nodes = {k: dict(v) for k, v in graph_dict["nodes"].items()}
    fed = {(e["destination"]["node_id"], e["destination"]["field"]): e["source"] for e in graph_dict["edges"]}
    for node_id, field, value in overrides:
        if node_id not in nodes:
            raise NodeNotFoundError(f"--set {node_id}.{field}: no node {node_id!r} in the graph", node_id=node_id)
        node_class = InvocationRegistry.get_invocation_class(nodes[node_id]["type"])
        if field not in node_class.input_fields():
            raise NodeFieldNotFoundError(
                f"--set {node_id}.{field}: node {node_id} ({node_class.get_type()}) has no input {field!r}; expected "
                f"one of: {', '.join(node_class.input_fields())}", node_id=node_id, field=field)
        if (node_id, field) in fed:
            source = fed[(node_id, field)]
            raise NodeFieldNotFoundError(
                f"--set {node_id}.{field}: the field is fed by an edge from {source['node_id']}.{source['field']}",
                node_id=node_id, field=field)
        nodes[node_id][field] = value
    return {**graph_dict, "nodes": nodes}

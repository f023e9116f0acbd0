"""Small builders for graph dicts in InvokeAI's JSON shape."""

from __future__ import annotations

from typing import Any


def node(node_id: str, node_type: str, **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, **fields}


def edge(source: str, source_field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {"source": {"node_id": source, "field": source_field},
            "destination": {"node_id": destination, "field": destination_field}}


def graph(*nodes: dict[str, Any], edges: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"id": "g", "nodes": {n["id"]: n for n in nodes}, "edges": list(edges)}

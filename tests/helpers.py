"""Small builders for graph dicts in InvokeAI's JSON shape."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from invokeai_provider.graph import Graph

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_WORKFLOWS = REPO_ROOT.parent / "shared" / "invokeai-workflows"


def node(node_id: str, node_type: str, **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, **fields}


def edge(source: str, source_field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {"source": {"node_id": source, "field": source_field},
            "destination": {"node_id": destination, "field": destination_field}}


def graph(*nodes: dict[str, Any], edges: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"id": "g", "nodes": {n["id"]: n for n in nodes}, "edges": list(edges)}


def graph_of(nodes: dict[str, dict[str, Any]], edges: list[dict[str, Any]] | None = None) -> "Graph":
    """A parsed graph from nodes keyed by id (their dicts without the id)."""
    from invokeai_provider.graph import Graph

    return Graph.from_dict({"nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges or []})


def run_nodes(run: Any, nodes: dict[str, dict[str, Any]], edges: list[dict[str, Any]] | None = None) -> Any:
    """Validates and runs the graph; returns the execution state."""
    from invokeai_provider.engine import run_graph

    return run_graph(graph_of(nodes, edges), run)


def only_output(run: Any, node: dict[str, Any]) -> Any:
    """Runs one node alone and returns its single output."""
    [out] = run_nodes(run, {"n": node}).outputs_of("n")
    return out


def task_states(run: dict[str, Any]) -> dict[tuple[str, int], str]:
    return {(t["task_id"], t["map_index"]): t["state"] for t in run["tasks"]}


def uri_path(uri: str) -> Path:
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path))


def png_pixels(uri: str) -> bytes:
    from PIL import Image

    with Image.open(uri_path(uri)) as image:
        return image.convert("RGB").tobytes()

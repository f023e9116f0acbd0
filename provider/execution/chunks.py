"""Mapped tasks in chunks: each mapped task instance runs several items (batch sessions or iteration paths).

One mapped task instance per item costs Airflow's per-task overhead (process start, DAG parse, XCom,
heartbeat) for every image and caps a run at ``[core] max_map_length`` items. So the task that feeds a
mapped task groups its items into chunks of ``map_chunk_size`` (larger when the items would otherwise
need more than ``max_map_length`` instances); each chunk's items run in one engine call, their denoise
nodes sharing UNet passes. An item keeps its position in the whole item list (``first`` + its index in the
chunk), which names its objects exactly as a chunk of one would, so chunking never changes names.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

LABEL_LIMIT = 240  # Airflow's rendered_map_index column


def effective_chunk_size(count: int, configured: int, max_instances: int) -> int:
    """The configured size, or the smallest size that keeps ``count`` items within ``max_instances`` chunks."""
    return max(configured, math.ceil(count / max_instances) if count else 1, 1)


def chunk_ranges(count: int, size: int) -> list[tuple[int, int]]:
    """(first, last) item positions of each chunk, last inclusive."""
    return [(first, min(first + size, count) - 1) for first in range(0, count, size)]


def describe_ranges(ranges: Sequence[tuple[int, int]], shown: int = 3) -> str:
    """``0-15, 16-31, …, 9984-9999`` (the first ``shown`` and the last)."""
    parts = [f"{a}-{b}" if a != b else str(a) for a, b in ranges]
    if len(parts) > shown + 1:
        parts = parts[:shown] + ["…", parts[-1]]
    return ", ".join(parts)


def chunk_label(items: Sequence[dict[str, Any]], first: int) -> str:
    """``items 16-31: s16 … | s31 …``; a chunk of one keeps its item's label."""
    if len(items) == 1:
        return str(items[0].get("label") or "")[:LABEL_LIMIT]
    head = f"items {first}-{first + len(items) - 1}"
    room = max((LABEL_LIMIT - len(head) - 8) // 2, 0)
    ends = [str(items[0].get("label") or "")[:room], str(items[-1].get("label") or "")[:room]]
    return f"{head}: {ends[0]} … {ends[1]}"[:LABEL_LIMIT] if any(ends) else head


def chunk_instances(instances: Sequence[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The mapped task's instance list: one chunk per ``size`` items, in item order."""
    chunks = []
    for first, last in chunk_ranges(len(instances), size):
        items = list(instances[first:last + 1])
        chunks.append({"first": first, "items": items, "label": chunk_label(items, first)})
    return chunks


def is_chunk(instance: Any) -> bool:
    return isinstance(instance, dict) and isinstance(instance.get("items"), list) and "first" in instance

"""InvokeAI batches (reference §2.5): zipped groups, a product across groups, repeated ``runs`` times.

Each session is a list of field values written into the graph's node dicts, exactly as InvokeAI's
``enqueue_batch`` does (so a batch may even set a field that also has an edge; the edge wins at run time).
"""

from __future__ import annotations

import itertools
import math
import uuid
from typing import Any, Iterator, Optional, Union

from pydantic import BaseModel, Field, StrictStr, field_validator

from invokeai_provider.core.fields import ImageField, VideoField
from invokeai_provider.errors import (
    BatchDuplicateNodeFieldError,
    BatchItemsTypeError,
    BatchValidationError,
    BatchZippedLengthError,
    NodeFieldNotFoundError,
    NodeNotFoundError,
)
from invokeai_provider.graph.graph import Graph

BatchItem = Union[StrictStr, float, int, ImageField, VideoField, list[Union[StrictStr, float, int, ImageField]]]


class BatchDatum(BaseModel):
    node_path: str = Field(description="The node into which this batch data collection will be substituted.")
    field_name: str = Field(description="The field into which this batch data collection will be substituted.")
    items: list[BatchItem] = Field(default_factory=list, description="The list of items to substitute into the node/field.")


class FieldValue(BaseModel):
    """One substituted value of one session (InvokeAI's NodeFieldValue)."""

    node_path: str
    field_name: str
    value: Any


class Batch(BaseModel):
    """The data half of InvokeAI's Batch: the graph is given separately, already parsed."""

    batch_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    origin: Optional[str] = None
    destination: Optional[str] = None
    data: Optional[list[list[BatchDatum]]] = None
    runs: int = Field(default=1, ge=1)

    @field_validator("data")
    @classmethod
    def _no_empty_lists(cls, data: Optional[list[list[BatchDatum]]]) -> Optional[list[list[BatchDatum]]]:
        """An empty list would make a run of no sessions that looks like a success: refused instead."""
        for group in data or []:
            for datum in group:
                if not datum.items:
                    raise BatchValidationError(
                        f"batch data for {datum.node_path}.{datum.field_name} has no items; a batch list needs at "
                        "least one", node_id=datum.node_path, field=datum.field_name)
        return data

    @field_validator("data")
    @classmethod
    def _zipped_lengths(cls, data: Optional[list[list[BatchDatum]]]) -> Optional[list[list[BatchDatum]]]:
        for group_index, group in enumerate(data or []):
            lengths = {(d.node_path, d.field_name): len(d.items) for d in group}
            if len(set(lengths.values())) > 1:
                detail = ", ".join(f"{n}.{f}={count}" for (n, f), count in lengths.items())
                raise BatchZippedLengthError(
                    f"batch group {group_index}: zipped items must all have the same length, got {detail}")
        return data

    @field_validator("data")
    @classmethod
    def _item_types(cls, data: Optional[list[list[BatchDatum]]]) -> Optional[list[list[BatchDatum]]]:
        for group in data or []:
            for datum in group:
                if not datum.items or all(isinstance(i, (int, float)) for i in datum.items):
                    continue
                first = type(datum.items[0])
                for item in datum.items:
                    if type(item) is not first:
                        raise BatchItemsTypeError(
                            f"batch data for {datum.node_path}.{datum.field_name}: all items must have the same type "
                            f"(first is {first.__name__}, found {type(item).__name__})",
                            node_id=datum.node_path, field=datum.field_name)
        return data

    @field_validator("data")
    @classmethod
    def _unique_fields(cls, data: Optional[list[list[BatchDatum]]]) -> Optional[list[list[BatchDatum]]]:
        seen: set[tuple[str, str]] = set()
        for group in data or []:
            for datum in group:
                pair = (datum.node_path, datum.field_name)
                if pair in seen:
                    raise BatchDuplicateNodeFieldError(
                        f"batch data sets {datum.node_path}.{datum.field_name} more than once; each node field may "
                        "appear once", node_id=datum.node_path, field=datum.field_name)
                seen.add(pair)
        return data

    def check_against(self, graph: Graph) -> None:
        """The batch's nodes and fields exist in the graph, and the graph itself is valid."""
        graph.validate()
        for group in self.data or []:
            for datum in group:
                if datum.node_path not in graph.nodes:
                    raise NodeNotFoundError(f"batch data names node {datum.node_path}, which is not in the graph",
                                            node_id=datum.node_path, field=datum.field_name)
                if datum.field_name not in type(graph.nodes[datum.node_path]).input_fields():
                    raise NodeFieldNotFoundError(
                        f"batch data names field {datum.field_name!r}, which node {datum.node_path} "
                        f"({graph.type_of(datum.node_path)}) does not have",
                        node_id=datum.node_path, field=datum.field_name)

    def session_count(self) -> int:
        """runs × Π(group length), computed without building the product."""
        if not self.data:
            return self.runs
        return self.runs * math.prod(len(group[0].items) if group else 0 for group in self.data)

    def sessions(self, maximum: Optional[int] = None) -> Iterator[list[FieldValue]]:
        """Field values per session: nested-loop order with the first group outermost, then repeated per run."""
        produced = 0
        for _ in range(self.runs):
            groups = [list(zip(*[[(d, item) for item in d.items] for d in group])) for group in (self.data or [])]
            for combination in itertools.product(*groups):
                if maximum is not None and produced >= maximum:
                    return
                produced += 1
                yield [FieldValue(node_path=d.node_path, field_name=d.field_name, value=_plain(item))
                       for zipped in combination for d, item in zipped]


def _plain(item: Any) -> Any:
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json")
    if isinstance(item, list):
        return [_plain(i) for i in item]
    return item


def apply_field_values(graph_dict: dict[str, Any], values: list[FieldValue]) -> dict[str, Any]:
    """A copy of the graph dict with each value written into its node (InvokeAI's substitution)."""
    nodes = {key: dict(node) for key, node in graph_dict["nodes"].items()}
    for value in values:
        nodes[value.node_path][value.field_name] = value.value
    return {**graph_dict, "nodes": nodes}


def expand_batch(graph: Graph, batch: Batch, maximum: Optional[int] = None) -> tuple[list[Graph], int]:
    """Validates the batch against the graph and returns (one graph per session, requested count).

    ``maximum`` caps how many sessions are built; the requested count still reports the full product.
    """
    batch.check_against(graph)
    base = graph.to_dict()
    graphs = [Graph.from_dict(apply_field_values(base, values)) for values in batch.sessions(maximum)]
    return graphs, batch.session_count()

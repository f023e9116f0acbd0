"""Joining task outputs across iteration scopes, at run time (no Airflow import).

Every compiled task returns ``{"scope": [axes], "records": [{"path": [...], "values": {...}}], ...}``: one
record per iteration path it produced (a mapped instance: one; a collect reduce: one per outer group).
From those records a mapped task's instance list is built (one instance per iteration path of its scope,
in InvokeAI's outer-major order, with the boundary values it reads), and collect nodes gather their items.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Optional

from invokeai_provider.compiler.plan import SESSION_AXIS, TRUE_INPUT, BoundaryInput, Guard, Source
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.graph.graph import COLLECTION_FIELD

Path = tuple[int, ...]
Assignment = dict[str, int]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # an upstream instance that was skipped (lazy if) or produced nothing


class RecordIndex:
    """Task id -> (scope, {path: values}) over the outputs pulled from upstream tasks."""

    def __init__(self, upstream: Mapping[str, Any]) -> None:
        self._tasks: dict[str, tuple[tuple[str, ...], dict[Path, dict[str, Any]]]] = {}
        for task_id, pulled in upstream.items():
            self.add(task_id, pulled)

    def add(self, task_id: str, pulled: Any) -> None:
        scope: tuple[str, ...] = ()
        by_path: dict[Path, dict[str, Any]] = {}
        for output in _outputs(pulled):
            scope = tuple(output.get("scope") or ())
            for record in output.get("records") or []:
                by_path[tuple(record["path"])] = record.get("values") or {}
        self._tasks[task_id] = (scope, by_path)

    def lookup(self, task_id: str, key: str, assignment: Assignment) -> Any:
        if task_id not in self._tasks:
            return MISSING  # the upstream task was skipped as a whole
        scope, by_path = self._tasks[task_id]
        try:
            path = tuple(assignment[axis] for axis in scope)
        except KeyError as exc:
            raise InvokeAIProviderError(f"task {task_id}: its scope axis {exc.args[0]} is not in the reader's scope") \
                from None
        values = by_path.get(path)
        if values is None or key not in values:
            return MISSING
        return values[key]


def _outputs(pulled: Any) -> Iterable[dict[str, Any]]:
    """A task's pulled XCom: one output dict (unmapped) or a sequence of them (a mapped task's instances)."""
    if pulled is None:
        return []
    if isinstance(pulled, Mapping):
        return [pulled]
    if hasattr(pulled, "__len__") and hasattr(pulled, "__getitem__"):
        # a mapped task's lazy XCom sequence: index it, iterating probes one past the end
        return [p for p in (pulled[i] for i in range(len(pulled))) if isinstance(p, Mapping)]
    return [p for p in pulled if isinstance(p, Mapping)]


def value_of(source: Source, assignment: Assignment, items: dict[str, tuple[Any, int]], index: RecordIndex) -> Any:
    """The value a boundary source holds at one iteration path."""
    if source.kind == "iterate":
        if source.node_id not in items:
            raise InvokeAIProviderError(f"iterate node {source.node_id} is not an axis of the reading task")
        item, total = items[source.node_id]
        return {"item": item, "index": assignment[source.node_id], "total": total}.get(source.field, MISSING)
    return index.lookup(str(source.task_id), f"{source.node_id}.{source.field}", assignment)


def enumerate_paths(scope: Iterable[str], feeders: Mapping[str, Source],
                    index: RecordIndex) -> list[tuple[Assignment, dict[str, tuple[Any, int]]]]:
    """Every iteration path of a scope (outer-major), with each axis's item and collection length."""
    paths: list[tuple[Assignment, dict[str, tuple[Any, int]]]] = [({}, {})]
    scope = list(scope)
    for axis in scope:
        feeder = feeders[axis]
        expanded = []
        for assignment, items in paths:
            collection = value_of(feeder, assignment, items, index)
            if collection is MISSING or collection is None:
                continue
            if not isinstance(collection, list):
                raise InvokeAIProviderError(
                    f"iterate node {axis}: field {COLLECTION_FIELD} expected a list, got {type(collection).__name__}",
                    node_id=axis, field=COLLECTION_FIELD)
            for position, item in enumerate(collection):
                expanded.append(({**assignment, axis: position}, {**items, axis: (item, len(collection))}))
        paths = expanded
    paths.sort(key=lambda p: tuple(p[0][axis] for axis in scope))
    return paths


def guard_selected(guard: Guard, literal_condition: Any, assignment: Assignment,
                   items: dict[str, tuple[Any, int]], index: RecordIndex) -> Optional[bool]:
    """Whether the guarded branch is taken (None when the condition's producer was skipped)."""
    if guard.condition is None:
        condition = literal_condition
    else:
        condition = value_of(guard.condition, assignment, items, index)
        if condition is MISSING:
            return None
    return bool(condition) == (guard.branch == TRUE_INPUT)


def short_text(value: Any, limit: int = 48) -> str:
    if isinstance(value, Mapping) and "image_name" in value:
        value = value["image_name"]
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def instance_label(scope: list[str], assignment: Assignment, items: dict[str, tuple[Any, int]],
                   axis_labels: Mapping[str, str]) -> str:
    """A readable map_index label: ``prompts[2]=a red fox`` or ``s1 positive.value=a cat``."""
    parts = []
    for axis in scope:
        item, _ = items[axis]
        if axis == SESSION_AXIS:
            values = " ".join(f"{fv['node_path']}.{fv['field_name']}={short_text(fv['value'], 32)}" for fv in item)
            parts.append(f"s{assignment[axis]} {values}".strip())
        else:
            parts.append(f"{axis_labels.get(axis, axis)}[{assignment[axis]}]={short_text(item)}")
    return ", ".join(parts)[:240]


def build_instances(*, scope: list[str], inputs: list[BoundaryInput], guards: list[Guard], nodes: list[str],
                    literal_conditions: Mapping[str, Any], feeders: Mapping[str, Source],
                    axis_labels: Mapping[str, str], index: RecordIndex) -> list[dict[str, Any]]:
    """The instances of a task: one per iteration path, with the boundary values and batch values it reads.

    An instance whose guard is not selected carries ``skip`` (the task instance skips itself, so the UI
    shows it as skipped); a boundary value whose producer was skipped is left out.
    """
    member = set(nodes)
    instances = []
    for assignment, items in enumerate_paths(scope, feeders, index):
        values = {}
        for boundary in inputs:
            value = value_of(boundary.source, assignment, items, index)
            if value is not MISSING:
                values[f"{boundary.node_id}.{boundary.field}"] = value
        skip = None
        for guard in guards:
            selected = guard_selected(guard, literal_conditions.get(guard.if_id), assignment, items, index)
            if not selected:
                skip = f"branch {guard.branch} of if node {guard.if_id} was not taken"
                break
        field_values = []
        if SESSION_AXIS in items:
            field_values = [fv for fv in items[SESSION_AXIS][0] if fv["node_path"] in member]
        instances.append({
            "path": [assignment[axis] for axis in scope],
            "label": instance_label(scope, assignment, items, axis_labels),
            "inputs": values,
            "field_values": field_values,
            "skip": skip,
        })
    return instances


def collect_groups(*, node_id: str, scope: list[str], inputs: list[BoundaryInput], source_scopes: Mapping[str, list[str]],
                   feeders: Mapping[str, Source], index: RecordIndex) -> list[dict[str, Any]]:
    """A collect node's output per outer group (empty groups included), items in iteration order.

    ``collection`` inputs come first (their lists concatenated), then ``item`` inputs sorted by iteration
    path and source node, as the engine does.
    """
    groups = [assignment for assignment, _ in enumerate_paths(scope, feeders, index)]
    gathered: dict[Path, list[tuple[int, Path, str, Any]]] = {tuple(g[a] for a in scope): [] for g in groups}
    for boundary in inputs:
        source_scope = source_scopes[boundary.source.node_id]
        if boundary.source.kind == "iterate" and boundary.source.node_id not in source_scope:
            source_scope = [*source_scope, boundary.source.node_id]
        is_item = boundary.field != COLLECTION_FIELD
        for assignment, items in enumerate_paths(source_scope, feeders, index):
            value = value_of(boundary.source, assignment, items, index)
            if value is MISSING:
                continue
            group = tuple(assignment[a] for a in scope)
            if group not in gathered:
                continue
            path = tuple(assignment[a] for a in source_scope)
            gathered[group].append((1 if is_item else 0, path, boundary.source.node_id, value))
    records = []
    for group, members in gathered.items():
        members.sort(key=lambda m: (m[0], m[1], m[2]))
        collection: list[Any] = []
        for is_item, _, _, value in members:
            if is_item or not isinstance(value, list):
                collection.append(value)
            else:
                collection.extend(value)
        records.append({"path": list(group), "values": {f"{node_id}.{COLLECTION_FIELD}": collection}})
    return records

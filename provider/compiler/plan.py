"""Graph → Plan: which nodes run together in which Airflow task, on which queue, mapped over what.

A Plan is pure data (JSON round-trip, no Airflow import), so it is cheap to build, cache and print:

- every node has a *scope*: the iterate nodes it sits in, outer first (the batch-session axis first when
  the document has a batch);
- ``iterate`` nodes are not tasks: they become mapping axes. A task in a non-empty scope is mapped, one
  instance per iteration path, in InvokeAI's outer-major order;
- ``collect`` nodes become reduce tasks that gather items in iteration order;
- other nodes are grouped into *segments*: with ``granularity="segment"`` connected nodes of one scope
  share a task (unless that would make a cycle between tasks), so a text-to-image graph is one GPU task;
  with ``granularity="node"`` each node is its own task;
- nodes that feed only one branch of a lazy ``if`` carry a *guard*: their task skips itself when the
  branch is not taken (downstream tasks use the ``none_failed`` trigger rule);
- a mapped task's instance list is computed by its only upstream task when that task is unmapped and
  feeds no other mapped task (the list is that task's ``return_value``, which Airflow maps over),
  otherwise by a small fan-out task of its own (``map_<task>``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.graph.graph import COLLECT, COLLECTION_FIELD, IF, ITERATE, Graph

SESSION_AXIS = "__batch__"
SESSIONS_TASK = "batch_sessions"
SEGMENT, COLLECT_TASK, SESSIONS, FANOUT = "segment", "collect", "sessions", "fanout"
GRANULARITIES = ("segment", "node")
TRUE_INPUT, FALSE_INPUT = "true_input", "false_input"

# Families of cheap, side-effect-free nodes: a root node of these (no input edges, deterministic)
# is copied into every segment that uses it instead of becoming a task of its own.
_FOLDABLE_MODULES = ("primitives", "math_nodes", "string_nodes", "model_loader_nodes", "collection_nodes")


@dataclass(frozen=True)
class Source:
    """Where a value crossing a task boundary comes from.

    kind ``task``: output ``field`` of node ``node_id`` in task ``task_id``'s records;
    kind ``iterate``: ``item``/``index``/``total`` of iterate node ``node_id`` at the instance's path;
    kind ``sessions``: the batch session's field values (``node_id`` is SESSION_AXIS).
    """

    kind: str
    node_id: str
    field: str
    task_id: Optional[str] = None


@dataclass(frozen=True)
class BoundaryInput:
    node_id: str
    field: str
    source: Source


@dataclass(frozen=True)
class Guard:
    """The task runs only when ``if_id`` selects ``branch``; ``condition`` is None for a literal condition."""

    if_id: str
    branch: str
    condition: Optional[Source] = None


@dataclass
class TaskPlan:
    task_id: str
    kind: str
    nodes: list[str]
    scope: list[str]
    queue: str  # "gpu" or "default"
    inputs: list[BoundaryInput] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # "node.field" values other tasks read
    upstream: list[str] = field(default_factory=list)
    instances_from: Optional[str] = None  # the task computing this mapped task's instance list
    emits_for: list[str] = field(default_factory=list)  # for a fan-out / emitter: the mapped tasks it feeds
    image_producing: bool = False

    @property
    def mapped(self) -> bool:
        """Segments in an iteration run once per path; collect and fan-out tasks run once."""
        return self.kind == SEGMENT and bool(self.scope)


@dataclass
class Plan:
    graph: dict[str, Any]
    granularity: str
    tasks: list[TaskPlan]
    scope_of: dict[str, list[str]]  # node id -> axes
    axis_feeders: dict[str, Source]  # iterate node id (or SESSION_AXIS) -> its collection's source
    axis_labels: dict[str, str]
    node_labels: dict[str, str]
    leaves: list[str]

    def task(self, task_id: str) -> TaskPlan:
        for task in self.tasks:
            if task.task_id == task_id:
                return task
        raise KeyError(task_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        def source(raw: Optional[dict[str, Any]]) -> Optional[Source]:
            return Source(**raw) if raw else None

        tasks = []
        for raw in data["tasks"]:
            raw = dict(raw)
            raw["inputs"] = [BoundaryInput(i["node_id"], i["field"], Source(**i["source"])) for i in raw["inputs"]]
            raw["guards"] = [Guard(g["if_id"], g["branch"], source(g["condition"])) for g in raw["guards"]]
            tasks.append(TaskPlan(**raw))
        return cls(graph=data["graph"], granularity=data["granularity"], tasks=tasks, scope_of=data["scope_of"],
                   axis_feeders={k: Source(**v) for k, v in data["axis_feeders"].items()},
                   axis_labels=data["axis_labels"], node_labels=data["node_labels"], leaves=data["leaves"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def slug(text: str) -> str:
    """A task-id-safe form of a label or node id: lower case, [a-z0-9_], no leading digit problems."""
    cleaned = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return cleaned[:60].strip("_") or "node"


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def node_display_name(graph: Graph, node_id: str, label: str) -> str:
    """A node's label, else its id, else (for generated ids) its type and the id's first characters."""
    if label:
        return label
    if _UUID.match(node_id):
        return f"{graph.type_of(node_id)}_{node_id[:8]}"
    return node_id


def _is_foldable(graph: Graph, node_id: str) -> bool:
    node = graph.nodes[node_id]
    module = type(node).__module__.rsplit(".", 1)[-1]
    return (not graph.input_edges(node_id) and module in _FOLDABLE_MODULES and bool(node.use_cache)
            and graph.type_of(node_id) not in (ITERATE, COLLECT, IF))


def _is_gpu(graph: Graph, node_id: str) -> bool:
    return bool(type(graph.nodes[node_id]).UIConfig.gpu)


def node_class_produces_images(node_class: type) -> bool:
    """Nodes whose output carries an image (they save it): their tasks record Asset events."""
    return bool(node_class.produces_images())  # type: ignore[attr-defined]


def _produces_images(graph: Graph, node_id: str) -> bool:
    return node_class_produces_images(type(graph.nodes[node_id]))


class _Planner:
    def __init__(self, graph: Graph, granularity: str, node_labels: dict[str, str], has_batch: bool,
                 name: str) -> None:
        from invokeai_provider.graph.engine import ExecutionState

        if granularity not in GRANULARITIES:
            raise InvokeAIProviderError(f"granularity {granularity!r}: expected one of {', '.join(GRANULARITIES)}")
        self.graph = graph
        self.granularity = granularity
        self.node_labels = node_labels
        self.name = name
        analysis = ExecutionState(graph)  # static axes, topological order and lazy-if exclusivity
        self.order = analysis.order
        prefix = (SESSION_AXIS,) if has_batch else ()
        self.axes = {n: prefix + analysis.axes[n] for n in self.order}
        self.exclusive = {n: frozenset(pairs) for n, pairs in analysis.exclusive.items()}
        self.folded: set[str] = set()

    def excl(self, node_id: str) -> frozenset[tuple[str, str]]:
        return self.exclusive.get(node_id, frozenset())

    # --- grouping nodes into segments ---------------------------------------------------------

    def _fusable(self, parent: str, child: str) -> bool:
        g = self.graph
        if self.granularity == "node" or self.axes[parent] != self.axes[child]:
            return False
        if {g.type_of(parent), g.type_of(child)} & {ITERATE, COLLECT}:
            return False
        if self.excl(parent) == self.excl(child):
            return True
        # an if node may run together with the nodes that feed only one of its branches
        return g.type_of(child) == IF and {p for p in self.excl(parent) if p[0] != child} == set(self.excl(child))

    def segments(self) -> dict[str, list[str]]:
        """Segment root id -> member nodes (topological order); foldable roots may appear in several."""
        g = self.graph
        self.folded = folded = {n for n in self.order if self.granularity == "segment" and _is_foldable(g, n)
                  and all(g.type_of(c) not in (ITERATE, COLLECT) for c in g.children(n)) and g.children(n)}
        parent_of: dict[str, str] = {}

        def find(x: str) -> str:
            while parent_of[x] != x:
                parent_of[x] = parent_of[parent_of[x]]
                x = parent_of[x]
            return x

        seg_of: dict[str, str] = {}
        reach: dict[str, set[str]] = {}  # node -> segments it depends on through another task
        seg_reach: dict[str, set[str]] = {}

        def contributions(node: str, inside: set[str]) -> set[str]:
            result: set[str] = set()
            for p in g.parents(node):
                if p in folded:
                    continue
                if p not in seg_of:  # an iterate node: what it depends on, without a task of its own
                    result |= {find(r) for r in reach[p]}
                    continue
                root = find(seg_of[p])
                result |= {find(r) for r in reach[p]}
                if root not in inside:
                    result.add(root)
            return result

        if self.granularity == "node":  # nothing fuses, so no reachability to track
            return {n: [n] for n in self.order if g.type_of(n) != ITERATE}
        for node in self.order:
            if node in folded:
                continue
            if g.type_of(node) == ITERATE:
                reach[node] = contributions(node, set())
                continue
            candidates: list[str] = []
            for p in g.parents(node):
                if p in folded or p not in seg_of or not self._fusable(p, node):
                    continue
                root = find(seg_of[p])
                if root not in candidates:
                    candidates.append(root)
            inside: set[str] = set()
            for root in candidates:
                trial = inside | {root}
                contrib = contributions(node, trial)
                reaches = set(contrib)
                for r in trial:
                    reaches |= {find(x) for x in seg_reach[r]}
                if not (trial & reaches):
                    inside = trial
            if inside:
                target = sorted(inside, key=self.order.index)[0]
                for other in inside - {target}:
                    parent_of[other] = target
                    seg_reach[target] |= seg_reach.pop(other)
            else:
                target = node
                parent_of[node] = node
                seg_reach[node] = set()
            seg_of[node] = target
            reach[node] = contributions(node, inside or {target})
            seg_reach[target] |= reach[node]

        members: dict[str, list[str]] = {}
        for node in self.order:
            if node in seg_of:
                members.setdefault(find(seg_of[node]), []).append(node)
        for node in sorted(folded, key=self.order.index, reverse=True):
            for root in sorted({find(seg_of[c]) for c in g.children(node) if c in seg_of}, key=self.order.index):
                members[root].insert(0, node)
        # a folded node whose consumers are all folded too, or only iterate nodes, gets its own task
        placed = {n for nodes in members.values() for n in nodes}
        for node in self.order:
            if node not in placed and g.type_of(node) != ITERATE:
                members[node] = [node]
                seg_of[node] = node
                parent_of[node] = node
        return {root: sorted(nodes, key=self.order.index) for root, nodes in members.items()}


def build_plan(graph: Graph, *, granularity: str = "segment", node_labels: Optional[dict[str, str]] = None,
               has_batch: bool = False, name: str = "") -> Plan:
    """Plans the tasks of a validated graph. Deterministic: the same graph gives the same plan."""
    graph.validate()
    labels = dict(node_labels or {})
    planner = _Planner(graph, granularity, labels, has_batch, name)
    g = graph
    segments = planner.segments()
    display = {n: node_display_name(g, n, labels.get(n, "")) for n in planner.order}

    # task ids: from the node labels/ids; a whole-graph segment is named after the workflow
    task_nodes: list[tuple[str, list[str]]] = []
    for root in sorted(segments, key=planner.order.index):
        task_nodes.append((root, segments[root]))
    used: set[str] = {SESSIONS_TASK}
    task_ids: dict[str, str] = {}
    for root, nodes in task_nodes:
        if len(nodes) == 1:
            base = slug(display[nodes[0]])
        elif len(nodes) == len(g.nodes) - sum(1 for n in g.nodes if g.type_of(n) == ITERATE) and name:
            base = slug(name)
        else:
            gpu_nodes = [n for n in nodes if _is_gpu(g, n)]
            base = slug(display[(gpu_nodes or nodes)[-1]])
        candidate, counter = base, 2
        while candidate in used or f"map_{candidate}" in used:
            candidate, counter = f"{base}_{counter}", counter + 1
        used.add(candidate)
        task_ids[root] = candidate

    owner: dict[str, str] = {}  # node -> task id (for folded copies: the first segment that holds it)
    for root, nodes in task_nodes:
        for n in nodes:
            owner.setdefault(n, task_ids[root])

    axis_feeders: dict[str, Source] = {}
    if has_batch:
        axis_feeders[SESSION_AXIS] = Source("sessions", SESSION_AXIS, "sessions", SESSIONS_TASK)
    for n in planner.order:
        if g.type_of(n) == ITERATE:
            edge = g.input_edges(n, COLLECTION_FIELD)[0]
            axis_feeders[n] = _source_for(g, edge.source.node_id, edge.source.field, owner)

    tasks: list[TaskPlan] = []
    if has_batch:
        tasks.append(TaskPlan(SESSIONS_TASK, SESSIONS, [], [], "default"))
    for root, nodes in task_nodes:
        members = set(nodes)
        kind = COLLECT_TASK if g.type_of(root) == COLLECT else SEGMENT
        inputs = []
        for n in nodes:
            for edge in g.input_edges(n):
                if edge.source.node_id in members:
                    continue
                inputs.append(BoundaryInput(n, edge.destination.field,
                                            _source_for(g, edge.source.node_id, edge.source.field, owner)))
        guards = _guards(planner, g, nodes, owner)
        scope = list(planner.axes[root])
        queue = "gpu" if any(_is_gpu(g, n) for n in nodes) else "default"
        tasks.append(TaskPlan(task_ids[root], kind, list(nodes), scope, queue, inputs, guards,
                              image_producing=any(_produces_images(g, n) for n in nodes)))

    by_id = {t.task_id: t for t in tasks}
    task_position = {t.task_id: i for i, t in enumerate(tasks)}
    # outputs each task must publish, and upstream dependencies
    for task in tasks:
        sources = [i.source for i in task.inputs] + [gd.condition for gd in task.guards if gd.condition]
        for axis in _needed_axes(task, planner, axis_feeders):
            sources.append(axis_feeders[axis])
        deps: list[str] = []
        for src in sources:
            if src.kind == "iterate":
                continue
            if src.task_id not in deps and src.task_id != task.task_id:
                deps.append(src.task_id)
            if src.kind == "task":
                producer = by_id[src.task_id]
                key = f"{src.node_id}.{src.field}"
                if key not in producer.outputs:
                    producer.outputs.append(key)
        task.upstream = sorted(deps, key=task_position.__getitem__)
    leaves = list(g.leaves())  # their whole outputs are published too, so results are readable in XCom
    tasks = _dependency_order(tasks)
    # mapped tasks: who computes their instance list
    final: list[TaskPlan] = []
    for task in tasks:
        if task.mapped and task.kind == SEGMENT:
            unmapped = [d for d in task.upstream if not by_id[d].mapped]
            if len(task.upstream) == 1 and unmapped and not by_id[unmapped[0]].emits_for:
                emitter = by_id[unmapped[0]]
                emitter.emits_for.append(task.task_id)
                task.instances_from = emitter.task_id
            else:
                fan = TaskPlan(f"map_{task.task_id}", FANOUT, [], [], "default", upstream=list(task.upstream),
                               emits_for=[task.task_id])
                final.append(fan)
                task.instances_from = fan.task_id
                task.upstream = [fan.task_id]
        final.append(task)
    for task in final:
        task.outputs.sort()
    return Plan(graph=g.to_dict(), granularity=granularity, tasks=final,
                scope_of={n: list(planner.axes[n]) for n in planner.order},
                axis_feeders=axis_feeders,
                axis_labels={a: (display.get(a, a) if a != SESSION_AXIS else "batch") for a in axis_feeders},
                node_labels={n: display[n] for n in planner.order}, leaves=leaves)


def _dependency_order(tasks: list[TaskPlan]) -> list[TaskPlan]:
    """Tasks with every upstream before its readers, otherwise in planning order (deterministic)."""
    position = {t.task_id: i for i, t in enumerate(tasks)}
    waiting = {t.task_id: len(t.upstream) for t in tasks}
    readers: dict[str, list[str]] = {}
    for t in tasks:
        for u in t.upstream:
            readers.setdefault(u, []).append(t.task_id)
    ready = [position[t.task_id] for t in tasks if not t.upstream]
    heapq.heapify(ready)
    ordered = []
    while ready:
        task = tasks[heapq.heappop(ready)]
        ordered.append(task)
        for reader in readers.get(task.task_id, []):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, position[reader])
    if len(ordered) != len(tasks):
        stuck = sorted(set(position) - {t.task_id for t in ordered})
        raise InvokeAIProviderError(f"planning made a cycle between tasks {stuck}; please report this graph")
    return ordered


def _source_for(g: Graph, node_id: str, field_name: str, owner: dict[str, str]) -> Source:
    if g.type_of(node_id) == ITERATE:
        return Source("iterate", node_id, field_name)
    return Source("task", node_id, field_name, owner[node_id])


def _needed_axes(task: TaskPlan, planner: _Planner, feeders: dict[str, Source]) -> list[str]:
    """Axes whose feeders a task needs: its own scope (mapped segments) or the groups it reduces over."""
    g = planner.graph
    if task.kind == SEGMENT:
        return list(task.scope)
    if task.kind == COLLECT_TASK:
        axes: list[str] = []
        for edge in g.input_edges(task.nodes[0]):
            for axis in planner.axes[edge.source.node_id]:
                if axis not in axes:
                    axes.append(axis)
            if g.type_of(edge.source.node_id) == ITERATE and edge.source.node_id not in axes:
                axes.append(edge.source.node_id)
        return axes
    return []


def _guards(planner: _Planner, g: Graph, nodes: list[str], owner: dict[str, str]) -> list[Guard]:
    """Branch guards shared by every node of a task, except those whose if node runs in the task itself."""
    own = [n for n in nodes if n not in planner.folded] or nodes
    shared = set.intersection(*(set(planner.excl(n)) for n in own)) if own else set()
    guards = []
    for if_id, branch in sorted(shared, key=lambda p: (planner.order.index(p[0]), p[1])):
        if if_id in nodes:
            continue
        edges = g.input_edges(if_id, "condition")
        condition = _source_for(g, edges[0].source.node_id, edges[0].source.field, owner) if edges else None
        guards.append(Guard(if_id, branch, condition))
    return guards

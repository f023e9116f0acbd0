"""In-process graph execution with InvokeAI's semantics (reference §2.3).

Source nodes are *materialized* into exec nodes, one per combination of the iterations they sit in:

- an exec node's *scope* is a tuple of ``(iterate node id, index)`` pairs, outer iterators first; its
  iteration path is the indices alone, so sorting by path gives InvokeAI's outer-major order;
- a normal node gets one exec node per consistent combination of its parents' exec nodes (parents under
  different iterators multiply; parents under the same iterator must agree on its index);
- an ``iterate`` node gets one exec node per item of each exec copy of its input (none for an empty list);
- a ``collect`` node collapses the innermost iterator of its items and keeps the enclosing scopes: one
  exec node per outer group, empty groups included, items ordered by (iteration path, exec id);
- an ``if`` node is lazy: nodes that feed only one of its branches wait for the condition, and the
  unselected branch's exec nodes are recorded as skipped, with no result.

The whole state is JSON-serialisable (`ExecutionState.to_json`), so a half-run graph resumes where it
stopped without re-running finished nodes.
"""

from __future__ import annotations

import copy
import heapq
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from pydantic import ValidationError

from invokeai_provider.core.context import InvocationContext, RunContext
from invokeai_provider.core.invocation import BaseInvocation, BaseInvocationOutput
from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.core.typecompat import type_name
from invokeai_provider.errors import CanceledError, InvokeAIProviderError, NodeExecutionError, NodeInputError
from invokeai_provider.graph.graph import COLLECT, COLLECTION_FIELD, IF, ITEM_FIELD, ITERATE, Graph, validation_problem

log = logging.getLogger(__name__)

Scope = tuple[tuple[str, int], ...]

PENDING, DONE, SKIPPED, FAILED = "pending", "done", "skipped", "failed"
TRUE_INPUT, FALSE_INPUT, CONDITION = "true_input", "false_input", "condition"


def scope_path(scope: Scope) -> tuple[int, ...]:
    return tuple(index for _, index in scope)


def _compatible(a: Scope, b: Scope) -> bool:
    """One scope is a prefix of the other (the same iteration seen at two depths)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def exec_id_for(source_id: str, scope: Scope) -> str:
    return source_id if not scope else f"{source_id}#{'.'.join(str(i) for i in scope_path(scope))}"


@dataclass
class ExecNode:
    exec_id: str
    source_id: str
    scope: Scope
    # (destination field, parent exec id, parent output field), in hydration order
    inputs: list[tuple[str, str, str]] = field(default_factory=list)
    index: Optional[int] = None  # the item index of an iterate copy
    status: str = PENDING

    @property
    def path(self) -> tuple[int, ...]:
        return scope_path(self.scope)

    def to_dict(self) -> dict[str, Any]:
        return {"exec_id": self.exec_id, "source_id": self.source_id, "scope": [list(p) for p in self.scope],
                "inputs": [list(i) for i in self.inputs], "index": self.index, "status": self.status}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExecNode":
        return cls(data["exec_id"], data["source_id"], tuple((s, int(i)) for s, i in data["scope"]),
                   [tuple(i) for i in data["inputs"]], data.get("index"), data["status"])  # type: ignore[misc]


class ExecutionState:
    """A graph's progress: exec nodes, results, skipped nodes, errors, timings and if resolutions."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.exec_nodes: dict[str, ExecNode] = {}
        self.by_source: dict[str, list[str]] = {}
        self.results: dict[str, BaseInvocationOutput] = {}
        self.errors: dict[str, str] = {}
        self.history: list[str] = []
        self.timings: dict[str, float] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.if_selection: dict[str, str] = {}  # if exec id -> selected branch field
        self.cached: list[str] = []  # exec ids whose output came from the node cache (nothing ran)
        self.canceled = False
        self._analyse()

    # --- static analysis of the source graph ------------------------------------------------------

    def _analyse(self) -> None:
        g = self.graph
        self.order = g.topological_order
        self.position = {node_id: i for i, node_id in enumerate(self.order)}
        self.axes: dict[str, tuple[str, ...]] = {}
        for node_id in self.order:
            self.axes[node_id] = self._static_axes(node_id)
        # source id -> [(if node id, branch field)] for nodes that feed only that branch
        self.exclusive: dict[str, list[tuple[str, str]]] = {}
        for node_id in self.order:
            if g.type_of(node_id) == IF:
                for branch in (TRUE_INPUT, FALSE_INPUT):
                    for member in self._branch_exclusive(node_id, branch):
                        self.exclusive.setdefault(member, []).append((node_id, branch))

    def _sorted_axes(self, axes: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(set(axes), key=self.position.__getitem__))

    def _static_axes(self, node_id: str) -> tuple[str, ...]:
        g = self.graph
        node_type = g.type_of(node_id)
        if node_type == ITERATE:
            parents = g.input_edges(node_id, COLLECTION_FIELD)
            base = self.axes[parents[0].source.node_id] if parents else ()
            return (*base, node_id)
        collected: list[str] = []
        for edge in g.input_edges(node_id):
            parent_axes = self.axes[edge.source.node_id]
            if node_type == COLLECT and edge.destination.field == ITEM_FIELD:
                parent_axes = parent_axes[:-1]
            collected.extend(parent_axes)
        return self._sorted_axes(collected)

    def _branch_exclusive(self, if_id: str, branch: str) -> set[str]:
        g = self.graph
        edges = g.input_edges(if_id, branch)
        if not edges:
            return set()
        source = edges[0].source.node_id
        members = {source} | g.ancestors(source)
        changed = True
        while changed:
            changed = False
            for member in list(members):
                for edge in g.output_edges(member):
                    dst = edge.destination
                    if dst.node_id == if_id and dst.field == branch:
                        continue
                    if dst.node_id not in members:
                        members.discard(member)
                        changed = True
                        break
        return members

    # --- queries ----------------------------------------------------------------------------------

    def is_materialized(self, source_id: str) -> bool:
        return source_id in self.by_source

    def execs_of(self, source_id: str) -> list[ExecNode]:
        return [self.exec_nodes[e] for e in self.by_source.get(source_id, [])]

    def is_complete(self) -> bool:
        if self.errors or self.canceled:
            return True
        return len(self.by_source) == len(self.graph.nodes) and all(
            n.status in (DONE, SKIPPED) for n in self.exec_nodes.values())

    def outputs_of(self, source_id: str) -> list[BaseInvocationOutput]:
        """The outputs of every executed copy of a source node, in iteration order."""
        execs = sorted(self.execs_of(source_id), key=lambda n: (n.path, n.exec_id))
        return [self.results[n.exec_id] for n in execs if n.exec_id in self.results]

    def leaf_outputs(self) -> dict[str, list[dict[str, Any]]]:
        return {leaf: [o.model_dump(mode="json") for o in self.outputs_of(leaf)] for leaf in self.graph.leaves()}

    # --- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph.to_dict(),
            "exec_nodes": [n.to_dict() for n in self.exec_nodes.values()],
            "materialized_empty": [s for s, execs in self.by_source.items() if not execs],
            "results": {k: v.model_dump(mode="json") for k, v in self.results.items()},
            "errors": self.errors,
            "history": self.history,
            "timings": self.timings,
            "records": self.records,
            "if_selection": self.if_selection,
            "cached": self.cached,
            "canceled": self.canceled,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExecutionState":
        state = cls(Graph.from_dict(data["graph"]))
        for raw in data["exec_nodes"]:
            node = ExecNode.from_dict(raw)
            state.exec_nodes[node.exec_id] = node
            state.by_source.setdefault(node.source_id, []).append(node.exec_id)
        for source_id in data.get("materialized_empty", []):
            state.by_source.setdefault(source_id, [])
        for exec_id, raw in data["results"].items():
            state.results[exec_id] = InvocationRegistry.get_output_class(raw["type"]).model_validate(raw)
        state.errors = dict(data.get("errors", {}))
        state.history = list(data.get("history", []))
        state.timings = dict(data.get("timings", {}))
        state.records = dict(data.get("records", {}))
        state.if_selection = dict(data.get("if_selection", {}))
        state.cached = list(data.get("cached", []))
        state.canceled = bool(data.get("canceled", False))
        return state

    @classmethod
    def from_json(cls, text: str) -> "ExecutionState":
        return cls.from_dict(json.loads(text))


class Engine:
    """Runs an ExecutionState to completion (or for a bounded number of nodes) in this process.

    Readiness is tracked incrementally (a count of unfinished parents per exec node and a heap of ready
    ones), so the cost per node does not grow with the size of the graph.
    """

    def __init__(self, run: RunContext,
                 on_node_complete: Optional[Callable[[ExecutionState, ExecNode], None]] = None) -> None:
        self.run_context = run
        self.on_node_complete = on_node_complete

    # --- public -----------------------------------------------------------------------------------

    def run(self, state: ExecutionState, max_nodes: Optional[int] = None) -> ExecutionState:
        """Executes ready nodes until the graph completes, ``max_nodes`` have run, or a node fails.

        A node failure is recorded in ``state.errors`` and raised as NodeExecutionError; cancellation
        raises CanceledError. Both leave the state consistent, so it can be inspected or serialised.
        """
        self._reset(state)
        executed = 0
        while not state.is_complete():
            if max_nodes is not None and executed >= max_nodes:
                break
            if self.run_context.cancel_event.is_set():
                state.canceled = True
                raise CanceledError("run canceled between nodes")
            self._materialize(state)
            node = self._pop_ready(state)
            if node is None:
                if state.is_complete():
                    break
                pending = [n.exec_id for n in state.exec_nodes.values() if n.status == PENDING]
                raise InvokeAIProviderError(
                    f"engine stalled: pending {pending[:10]}, not yet expanded {self._unmaterialized[:10]}")
            self._execute(state, node)
            self._finished(state, node)
            executed += 1
        return state

    # --- readiness bookkeeping (rebuilt from the state, so a restored state resumes) --------------

    def _reset(self, state: ExecutionState) -> None:
        self._state = state
        self._unmaterialized = [s for s in state.order if not state.is_materialized(s)]
        self._children: dict[str, list[str]] = {}
        self._waiting: dict[str, int] = {}
        self._ready: list[tuple[tuple[Any, ...], str]] = []
        self._parked: list[str] = []  # ready but deferred by an unresolved if
        self._changed = True
        for node in state.exec_nodes.values():
            self._register(state, node)

    def _register(self, state: ExecutionState, node: ExecNode) -> None:
        parents = {parent for _, parent, _ in node.inputs}
        for parent in parents:
            self._children.setdefault(parent, []).append(node.exec_id)
        self._waiting[node.exec_id] = sum(1 for p in parents if state.exec_nodes[p].status == PENDING)
        if node.status == PENDING and self._waiting[node.exec_id] == 0:
            self._push(state, node)
        if state.graph.type_of(node.source_id) == IF and node.status == PENDING:
            self._try_resolve_if(state, node)

    def _push(self, state: ExecutionState, node: ExecNode) -> None:
        # nodes that only feed an if branch go last, so conditions resolve first
        key = (node.source_id in state.exclusive, state.position[node.source_id], node.path, node.exec_id)
        heapq.heappush(self._ready, (key, node.exec_id))

    def _finished(self, state: ExecutionState, node: ExecNode) -> None:
        """A node is done or skipped: release its children and resolve ifs it decides."""
        self._changed = True
        for child_id in self._children.get(node.exec_id, []):
            self._waiting[child_id] -= 1
            child = state.exec_nodes[child_id]
            if child.status != PENDING:
                continue
            if state.graph.type_of(child.source_id) == IF:
                self._try_resolve_if(state, child)
            if self._waiting[child_id] == 0:
                self._push(state, child)

    def _pop_ready(self, state: ExecutionState) -> Optional[ExecNode]:
        while self._ready:
            _, exec_id = heapq.heappop(self._ready)
            node = state.exec_nodes[exec_id]
            if node.status != PENDING:
                continue
            if self._deferred(state, node):
                self._parked.append(exec_id)
                continue
            return node
        return None

    # --- materialization --------------------------------------------------------------------------

    def _materialize(self, state: ExecutionState) -> None:
        """Expands every source node whose parents are expanded (iterate: whose input has run)."""
        if not self._changed or not self._unmaterialized:
            return
        self._changed = False
        g = state.graph
        still: list[str] = []
        for source_id in self._unmaterialized:
            ready = all(state.is_materialized(p) for p in g.parents(source_id))
            if ready and g.type_of(source_id) == ITERATE:
                feeder = g.input_edges(source_id, COLLECTION_FIELD)[0].source.node_id
                ready = not any(n.status == PENDING for n in state.execs_of(feeder))
            if not ready:
                still.append(source_id)
                continue
            node_type = g.type_of(source_id)
            if node_type == ITERATE:
                new = self._expand_iterate(state, source_id)
            elif node_type == COLLECT:
                new = self._expand_collect(state, source_id)
            else:
                new = self._expand_normal(state, source_id)
            new.sort(key=lambda n: (n.path, n.exec_id))
            state.by_source[source_id] = [n.exec_id for n in new]
            for node in new:
                state.exec_nodes[node.exec_id] = node
                self._skip_if_branch_resolved_away(state, node)
                self._register(state, node)
        self._unmaterialized = still

    def _canonical(self, state: ExecutionState, assignment: dict[str, int]) -> Scope:
        return tuple((axis, assignment[axis]) for axis in state._sorted_axes(assignment))

    def _expand_normal(self, state: ExecutionState, source_id: str) -> list[ExecNode]:
        g = state.graph
        combos: list[tuple[dict[str, int], dict[str, str]]] = [({}, {})]
        for parent in g.parents(source_id):
            merged = []
            for assignment, chosen in combos:
                for parent_exec in state.execs_of(parent):
                    if all(assignment.get(axis, idx) == idx for axis, idx in parent_exec.scope):
                        merged.append(({**assignment, **dict(parent_exec.scope)}, {**chosen, parent: parent_exec.exec_id}))
            combos = merged
        nodes = []
        for assignment, chosen in combos:
            scope = self._canonical(state, assignment)
            inputs = [(e.destination.field, chosen[e.source.node_id], e.source.field) for e in g.input_edges(source_id)]
            nodes.append(ExecNode(exec_id_for(source_id, scope), source_id, scope, inputs))
        return nodes

    def _expand_iterate(self, state: ExecutionState, source_id: str) -> list[ExecNode]:
        edge = state.graph.input_edges(source_id, COLLECTION_FIELD)[0]
        nodes = []
        for feeder in state.execs_of(edge.source.node_id):
            if feeder.status != DONE:
                continue  # a skipped feeder yields no items
            collection = getattr(state.results[feeder.exec_id], edge.source.field) or []
            for index in range(len(collection)):
                scope = (*feeder.scope, (source_id, index))
                nodes.append(ExecNode(exec_id_for(source_id, scope), source_id, scope,
                                      [(COLLECTION_FIELD, feeder.exec_id, edge.source.field)], index=index))
        return nodes

    def _expand_collect(self, state: ExecutionState, source_id: str) -> list[ExecNode]:
        g = state.graph
        keys: set[Scope] = set()
        members: list[tuple[str, ExecNode, str]] = []  # (destination field, parent exec, source field)
        for edge in g.input_edges(source_id):
            parent = edge.source.node_id
            parent_axes = state.axes[parent]
            is_item = edge.destination.field == ITEM_FIELD
            depth = max(len(parent_axes) - 1, 0) if is_item else len(parent_axes)
            for parent_exec in state.execs_of(parent):
                members.append((edge.destination.field, parent_exec, edge.source.field))
                keys.add(parent_exec.scope[:depth])
            # groups known from the iterators themselves, so empty iterations still get their (empty) group
            for axis in parent_axes:
                axis_axes = state.axes[axis]
                if len(axis_axes) >= depth and axis_axes[:depth] == parent_axes[:depth]:
                    keys.update(n.scope[:depth] for n in state.execs_of(axis))
                feeder = g.input_edges(axis, COLLECTION_FIELD)[0].source.node_id
                if len(state.axes[feeder]) <= depth and state.axes[feeder] == parent_axes[:len(state.axes[feeder])]:
                    keys.update(n.scope for n in state.execs_of(feeder))
        if not keys:
            keys.add(())
        final = sorted((k for k in keys if not any(o != k and o[:len(k)] == k for o in keys)), key=scope_path)
        nodes = []
        for key in final:
            collections = [(f, p, s) for f, p, s in members if f == COLLECTION_FIELD and key[:len(p.scope)] == p.scope]
            items = [(f, p, s) for f, p, s in members if f == ITEM_FIELD and _compatible(p.scope, key)]
            items.sort(key=lambda m: (m[1].path, m[1].exec_id))
            inputs = [(f, p.exec_id, s) for f, p, s in collections + items]
            nodes.append(ExecNode(exec_id_for(source_id, key), source_id, key, inputs))
        return nodes

    # --- lazy if ----------------------------------------------------------------------------------

    def _matching_ifs(self, state: ExecutionState, if_id: str, scope: Scope) -> list[ExecNode]:
        return [n for n in state.execs_of(if_id) if _compatible(n.scope, scope)]

    def _skip_if_branch_resolved_away(self, state: ExecutionState, node: ExecNode) -> None:
        for if_id, branch in state.exclusive.get(node.source_id, []):
            for if_exec in self._matching_ifs(state, if_id, node.scope):
                selected = state.if_selection.get(if_exec.exec_id)
                if selected is not None and selected != branch:
                    node.status = SKIPPED
                    state.history.append(node.exec_id)
                    return

    def _deferred(self, state: ExecutionState, node: ExecNode) -> bool:
        for if_id, _branch in state.exclusive.get(node.source_id, []):
            if any(n.exec_id not in state.if_selection for n in self._matching_ifs(state, if_id, node.scope)):
                return True
        return False

    def _mark_skipped(self, state: ExecutionState, node: ExecNode) -> None:
        if node.status == PENDING:
            node.status = SKIPPED
            state.history.append(node.exec_id)
            self._finished(state, node)

    def _try_resolve_if(self, state: ExecutionState, if_exec: ExecNode) -> None:
        """Resolves an if once its condition is known, and skips the exec nodes of the branch not taken."""
        if if_exec.exec_id in state.if_selection:
            return
        if_id = if_exec.source_id
        condition_inputs = [i for i in if_exec.inputs if i[0] == CONDITION]
        if condition_inputs:
            _, parent, field_name = condition_inputs[0]
            if state.exec_nodes[parent].status != DONE:
                return
            condition = bool(getattr(state.results[parent], field_name))
        else:
            condition = bool(state.graph.nodes[if_id].condition)  # type: ignore[attr-defined]
        selected, unselected = (TRUE_INPUT, FALSE_INPUT) if condition else (FALSE_INPUT, TRUE_INPUT)
        state.if_selection[if_exec.exec_id] = selected
        for source_id, branches in state.exclusive.items():
            if (if_id, unselected) in branches:
                for member in state.execs_of(source_id):
                    if _compatible(member.scope, if_exec.scope):
                        self._mark_skipped(state, member)
        for exec_id in self._parked:  # what waited on this if may go now
            self._push(state, state.exec_nodes[exec_id])
        self._parked.clear()

    # --- execution --------------------------------------------------------------------------------

    def _hydrate(self, state: ExecutionState, node: ExecNode) -> BaseInvocation:
        source = state.graph.nodes[node.source_id]
        invocation = source.model_copy(deep=True)
        node_type = source.get_type()
        if node_type == COLLECT:
            collected: list[Any] = []
            for dest_field, parent, field_name in node.inputs:
                value = getattr(state.results[parent], field_name)
                if dest_field == COLLECTION_FIELD:
                    collected.extend(copy.deepcopy(value) if isinstance(value, list) else [copy.deepcopy(value)])
                else:
                    collected.append(copy.deepcopy(value))
            object.__setattr__(invocation, "collection", collected)
            object.__setattr__(invocation, "item", None)
            return invocation
        if node_type == ITERATE:
            _, parent, field_name = node.inputs[0]
            object.__setattr__(invocation, "collection", getattr(state.results[parent], field_name))
            object.__setattr__(invocation, "index", node.index)
            return invocation
        unselected = None
        if node_type == IF:  # only the condition and the selected branch are hydrated
            unselected = FALSE_INPUT if state.if_selection.get(node.exec_id) == TRUE_INPUT else TRUE_INPUT
        for dest_field, parent, field_name in node.inputs:
            if state.exec_nodes[parent].status != DONE or dest_field == unselected:
                continue
            value = copy.deepcopy(getattr(state.results[parent], field_name))
            try:
                setattr(invocation, dest_field, value)
            except ValidationError as exc:
                first = exc.errors()[0]
                problem = (f": {validation_problem(first)}" if first.get("type") == "value_error" else
                           f" (expected {type_name(type(invocation).input_type(dest_field))}): {first.get('msg')}")
                raise NodeInputError(
                    f"node {node.source_id} ({node_type}): value from {parent}.{field_name} does not fit field "
                    f"{dest_field}{problem}",
                    node_id=node.source_id, field=dest_field) from None
        return invocation

    def _execute(self, state: ExecutionState, node: ExecNode) -> None:
        node_type = state.graph.type_of(node.source_id)
        started = time.perf_counter()
        try:
            invocation = self._hydrate(state, node)
            context = InvocationContext(self.run_context, invocation, node.exec_id)
            cache = self.run_context.node_cache
            key = cache.key(invocation) if cache is not None else None
            hit = False
            if key is None:
                output = invocation.invoke_internal(context)
            else:  # InvokeAI's invocation cache: a hit runs nothing and writes no records
                device = self.run_context.services.get("device")
                output, hit = cache.get_or_compute(
                    key, lambda: invocation.invoke_internal(context), keep=lambda: not context.records,
                    waiting=getattr(device, "waiting", None), cancel_event=self.run_context.cancel_event)
        except CanceledError:
            state.canceled = True
            raise
        except Exception as exc:
            node.status = FAILED
            error = exc if isinstance(exc, NodeExecutionError) else NodeExecutionError(
                node.source_id, node_type, node.exec_id, exc)
            state.errors[node.exec_id] = str(error)
            state.timings[node.exec_id] = time.perf_counter() - started
            raise error from exc
        state.timings[node.exec_id] = time.perf_counter() - started
        state.results[node.exec_id] = output
        if hit:
            state.cached.append(node.exec_id)
        if context.records:
            state.records[node.exec_id] = context.records
        node.status = DONE
        state.history.append(node.exec_id)
        if self.on_node_complete is not None:
            self.on_node_complete(state, node)


def run_graph(graph: Graph, run: RunContext, max_nodes: Optional[int] = None) -> ExecutionState:
    """Validates and runs a graph in this process; the returned state holds every result."""
    graph.validate()
    return Engine(run).run(ExecutionState(graph), max_nodes=max_nodes)

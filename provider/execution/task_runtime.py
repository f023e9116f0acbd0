"""What a compiled task does when it runs: no Airflow import, so it is testable and reusable by a runtime.

A task receives the compiled document (plan, params, workflow), its own task id, the run's Param values,
and either its upstream tasks' outputs (unmapped) or its instance (mapped: a chunk of items, see
`invokeai_provider.execution.chunks`). It runs its nodes with the engine (`invokeai_provider.execution.graph_runs`),
publishes the boundary values other tasks read, and computes the instance lists of the mapped tasks it feeds.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from invokeai_provider.compiler.plan import COLLECT_TASK, FANOUT, SEGMENT, SESSION_AXIS, SESSIONS, Plan, TaskPlan
from invokeai_provider.config import airflow_max_map_length, settings
from invokeai_provider.errors import BatchZippedLengthError, InvokeAIProviderError
from invokeai_provider.execution.chunks import chunk_instances, chunk_label, effective_chunk_size, is_chunk
from invokeai_provider.execution.graph_runs import GraphJob, TaskEnvironment, run_graphs
from invokeai_provider.execution.instances import RecordIndex, build_instances, collect_groups

log = logging.getLogger(__name__)

RECORDS_KEY = "invokeai_records"  # what other compiled tasks read; return_value is for people and mapping


@dataclass
class CompiledDocument:
    """Everything a DAG's tasks need at run time, built once per DAG-file parse."""

    plan: Plan
    param_specs: list[Any] = field(default_factory=list)  # invokeai_provider.compiler.params.ParamSpec
    workflow_json: Optional[dict[str, Any]] = None
    batch: Optional[dict[str, Any]] = None  # the document's Batch as a dict
    name: str = ""
    doc_md: str = ""  # the DAG's docs, made once per compile
    chunk_size: Optional[int] = None  # items per mapped task instance; None: [invokeai] map_chunk_size at run time

    def effective_chunk_size(self, items: int) -> int:
        """Items per chunk for a mapped task of ``items`` items: the configured size, made larger where the
        items would otherwise need more than ``[core] max_map_length`` mapped instances."""
        configured = self.chunk_size or settings("map_chunk_size").map_chunk_size
        return effective_chunk_size(items, configured, airflow_max_map_length())


def graph_with_params(compiled: CompiledDocument, params: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's graph dict with the run's Param values written into the nodes they set."""
    from invokeai_provider.compiler.param_values import to_node_value

    graph = copy.deepcopy(compiled.plan.graph)
    for spec in compiled.param_specs:
        if spec.kind == "batch" or spec.node_id is None or spec.name not in params:
            continue
        node = graph["nodes"].get(spec.node_id)
        if node is None:
            continue
        value = to_node_value(spec, params[spec.name])
        if value is None:
            node.pop(spec.field_name, None)
        else:
            node[spec.field_name] = value
    return graph


def literal_conditions(graph: dict[str, Any], task: TaskPlan) -> dict[str, Any]:
    return {g.if_id: graph["nodes"][g.if_id].get("condition", False) for g in task.guards if g.condition is None}


def emitted_instances(compiled: CompiledDocument, graph: dict[str, Any], task: TaskPlan,
                      index: RecordIndex) -> dict[str, list[dict[str, Any]]]:
    """Instance lists of the mapped tasks this task feeds (at most one: it becomes the return value): one
    instance per chunk of items (`invokeai_provider.execution.chunks`)."""
    plan = compiled.plan
    result = {}
    for target_id in task.emits_for:
        target = plan.task(target_id)
        items = build_instances(
            scope=target.scope, inputs=target.inputs, guards=target.guards, nodes=target.nodes,
            literal_conditions=literal_conditions(graph, target), feeders=plan.axis_feeders,
            axis_labels=plan.axis_labels, index=index)
        result[target_id] = chunk_instances(items, compiled.effective_chunk_size(len(items)))
    return result


def run_task(compiled: CompiledDocument, env: TaskEnvironment, *, upstream: Optional[Mapping[str, Any]] = None,
             instance: Optional[Mapping[str, Any]] = None,
             services: Optional[dict[str, Any]] = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs one compiled task. Returns (its output records, instance lists of the mapped tasks it feeds).

    Raises SkipTask when the instance's branch guard is not selected.
    """
    plan = compiled.plan
    task = plan.task(env.task_id)
    graph = graph_with_params(compiled, env.params)
    index = RecordIndex(upstream or {})
    if task.kind == SESSIONS:
        output = _run_sessions(compiled, env)
        index.add(task.task_id, output)
    elif task.kind == FANOUT:
        output = {"scope": [], "records": []}
    elif task.kind == COLLECT_TASK:
        output = {"scope": task.scope, "records": collect_groups(
            node_id=task.nodes[0], scope=task.scope, inputs=task.inputs, source_scopes=plan.scope_of,
            feeders=plan.axis_feeders, index=index)}
        index.add(task.task_id, output)
    elif task.kind == SEGMENT:
        if instance is None:
            items = build_instances(scope=task.scope, inputs=task.inputs, guards=task.guards, nodes=task.nodes,
                                    literal_conditions=literal_conditions(graph, task),
                                    feeders=plan.axis_feeders, axis_labels=plan.axis_labels, index=index)
            if len(items) != 1:
                raise InvokeAIProviderError(f"task {task.task_id}: expected one instance, got {len(items)}")
            first: Optional[int] = None
        elif is_chunk(instance):
            items, first = list(instance["items"]), int(instance["first"])
        else:  # one item, from a DAG run that began before chunking
            items, first = [dict(instance)], env.map_index
        skipped = [item for item in items if item.get("skip")]
        if len(skipped) == len(items):
            raise SkipTask(str(skipped[0]["skip"]) if len(items) == 1 else
                           f"every item of the chunk skips itself ({skipped[0]['skip']})")
        output = run_segment(compiled, task, graph, items, first, env, services or {})
        index.add(task.task_id, output)
    else:
        raise InvokeAIProviderError(f"task {task.task_id}: unknown kind {task.kind!r}")
    return output, emitted_instances(compiled, graph, task, index)


class SkipTask(Exception):
    """The task's lazy-if branch was not taken: the operator turns this into AirflowSkipException."""


def _run_sessions(compiled: CompiledDocument, env: TaskEnvironment) -> dict[str, Any]:
    """The batch's sessions (field values per session), with batch Params applied."""
    from invokeai_provider.graph.batch import Batch

    raw = copy.deepcopy(compiled.batch or {})
    given: dict[int, dict[str, int]] = {}  # zip group -> Param name -> how many items the run gave
    for spec in compiled.param_specs:
        if spec.kind == "batch" and spec.name in env.params and spec.batch_index is not None:
            group, datum = spec.batch_index
            raw["data"][group][datum]["items"] = list(env.params[spec.name] or [])
            given.setdefault(group, {})[spec.name] = len(raw["data"][group][datum]["items"])
    for counts in given.values():
        if len(set(counts.values())) > 1:
            raise BatchZippedLengthError(
                "batch Params zipped together must have the same number of items, got "
                + ", ".join(f"{name} {count}" for name, count in counts.items()))
    batch = Batch.model_validate(raw)
    sessions = [[fv.model_dump(mode="json") for fv in values] for values in batch.sessions()]
    env.logger.info("batch: %d sessions", len(sessions))
    return {"scope": [], "records": [{"path": [], "values": {f"{SESSION_AXIS}.sessions": sessions}}]}


def run_segment(compiled: CompiledDocument, task: TaskPlan, graph: dict[str, Any], items: Sequence[Mapping[str, Any]],
                first: Optional[int], env: TaskEnvironment, services: dict[str, Any]) -> dict[str, Any]:
    """Runs a segment's nodes for each item (an unmapped task's one instance, or a chunk's items from position
    ``first``) in one engine call, boundary values and batch values written in as literals. Items that skip
    themselves (a lazy-if branch not taken) publish nothing, as a skipped task instance would."""
    leaves = [n for n in task.nodes if n in compiled.plan.leaves]
    positions = [None if first is None else first + number for number in range(len(items))]
    runnable = [(position, item) for position, item in zip(positions, items) if not item.get("skip")]
    jobs = [GraphJob(_segment_graph(task, graph, item), env.for_item(position),
                     embedded_graph=_session_graph(graph, item), persist=[*task.outputs, *leaves])
            for position, item in runnable]
    states = run_graphs(jobs, services, workflow_json=compiled.workflow_json)
    records, images, outputs = [], [], []
    for (position, item), state in zip(runnable, states):
        values: dict[str, Any] = {}
        for key in task.outputs:
            node_id, _, field_name = key.rpartition(".")
            produced = state.outputs_of(node_id)
            if produced:
                values[key] = getattr(produced[0], field_name)
        records.append({"path": list(item.get("path") or []), "values": _jsonable(values)})
        images += _images(state)
        outputs.append({n: state.outputs_of(n)[0].model_dump(mode="json") for n in leaves if state.outputs_of(n)})
        env.logger.info("task %s%s: ran %d nodes in %.2f s (%s)", env.task_id,
                        f" item {position}" if position is not None and len(items) > 1 else "", len(state.history),
                        sum(state.timings.values()), ", ".join(
                            f"{k} {v:.2f}s" for k, v in sorted(state.timings.items(), key=lambda kv: -kv[1])[:5]))
    return {"scope": task.scope, "records": records,
            "outputs": outputs[0] if len(items) == 1 and outputs else _chunk_outputs(runnable, outputs),
            "images": images, "label": chunk_label(items, first or 0)}


def _chunk_outputs(runnable: list[tuple[Optional[int], Mapping[str, Any]]],
                   outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """A chunk's leaf outputs, for people: per item position."""
    return {str(position): output for (position, _), output in zip(runnable, outputs) if output}


def _segment_graph(task: TaskPlan, graph: dict[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    """The segment's nodes and inner edges, with the item's batch values and boundary values as literals."""
    members = set(task.nodes)
    nodes = {n: dict(graph["nodes"][n]) for n in task.nodes}
    for fv in item.get("field_values") or []:
        nodes[fv["node_path"]][fv["field_name"]] = fv["value"]
    for key, value in (item.get("inputs") or {}).items():
        node_id, _, field_name = key.rpartition(".")
        nodes[node_id][field_name] = value
    edges = [e for e in graph["edges"] if e["source"]["node_id"] in members and e["destination"]["node_id"] in members]
    return {"id": graph.get("id"), "nodes": nodes, "edges": edges}


def _images(state: Any) -> list[dict[str, Any]]:
    return [record for records in state.records.values() for record in records]


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(values)


def _session_graph(graph: dict[str, Any], instance: Mapping[str, Any]) -> dict[str, Any]:
    """The graph embedded in PNGs: the run's graph with this session's batch values."""
    if not instance.get("field_values"):
        return graph
    session = copy.deepcopy(graph)
    for fv in instance["field_values"]:
        session["nodes"][fv["node_path"]][fv["field_name"]] = fv["value"]
    return session


def run_single_node(node_class: Any, node_id: str, inputs: Mapping[str, Any], env: TaskEnvironment,
                    services: Optional[dict[str, Any]] = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Runs one node from a hand-written DAG's operator; returns its output (JSON) and image records."""
    node = {"id": node_id, "type": node_class.get_type(), **_jsonable(dict(inputs))}
    graph = {"id": f"{env.dag_id}.{node_id}", "nodes": {node_id: node}, "edges": []}
    [state] = run_graphs([GraphJob(graph, env, persist=[node_id])], dict(services or {}), workflow_json=None)
    return state.outputs_of(node_id)[0].model_dump(mode="json"), _images(state)

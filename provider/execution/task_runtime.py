"""What a compiled task does when it runs: no Airflow import, so it is testable and reusable by a runtime.

A task receives the compiled document (plan, params, workflow), its own task id, the run's Param values,
and either its upstream tasks' outputs (unmapped) or its instance (mapped). It runs its nodes with the
engine, publishes the boundary values other tasks read, and computes the instance lists of the mapped
tasks it feeds.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from invokeai_provider.compiler.plan import COLLECT_TASK, FANOUT, SEGMENT, SESSION_AXIS, SESSIONS, Plan, TaskPlan
from invokeai_provider.config import settings
from invokeai_provider.errors import BatchZippedLengthError, InvokeAIProviderError
from invokeai_provider.execution.instances import RecordIndex, build_instances, collect_groups
from invokeai_provider.graph.graph import Graph

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


@dataclass
class TaskEnvironment:
    """The Airflow side of a task run, as plain values."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: Optional[int] = None
    params: Mapping[str, Any] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("invokeai_provider.task"))
    cancel_event: threading.Event = field(default_factory=threading.Event)
    artifact_root: Optional[str] = None
    model_root: Optional[str] = None
    tenant: Optional[str] = None
    usage: Optional[Any] = None  # invokeai_provider.execution.usage.UsageMeter: what the task's nodes use


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
    """Instance lists of the mapped tasks this task feeds (at most one: it becomes the return value)."""
    plan = compiled.plan
    result = {}
    for target_id in task.emits_for:
        target = plan.task(target_id)
        result[target_id] = build_instances(
            scope=target.scope, inputs=target.inputs, guards=target.guards, nodes=target.nodes,
            literal_conditions=literal_conditions(graph, target), feeders=plan.axis_feeders,
            axis_labels=plan.axis_labels, index=index)
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
            instances = build_instances(scope=task.scope, inputs=task.inputs, guards=task.guards, nodes=task.nodes,
                                        literal_conditions=literal_conditions(graph, task),
                                        feeders=plan.axis_feeders, axis_labels=plan.axis_labels, index=index)
            if len(instances) != 1:
                raise InvokeAIProviderError(f"task {task.task_id}: expected one instance, got {len(instances)}")
            instance = instances[0]
        if instance.get("skip"):
            raise SkipTask(str(instance["skip"]))
        output = run_segment(compiled, task, graph, instance, env, services or {})
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


def _mentions_model(value: Any) -> bool:
    """A model identifier anywhere in a value (model fields, or UNet/CLIP/VAE fields from another task)."""
    if isinstance(value, dict):
        return {"key", "base", "type"} <= value.keys() or any(_mentions_model(v) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_model(v) for v in value)
    return False


def _model_services(graph: dict[str, Any], env: TaskEnvironment, services: dict[str, Any]) -> dict[str, Any]:
    from invokeai_provider.models.model_manager.binding import graph_names_models

    if "models" in services or not (graph_names_models(graph) or _mentions_model(list(graph["nodes"].values()))):
        return services
    return {**services, "models": shared_model_manager(env.model_root)}


_MANAGERS: dict[Optional[str], Any] = {}
_MANAGERS_LOCK = threading.Lock()


def shared_model_manager(model_root: Optional[str]) -> Any:
    """One model manager per model root in this process (a task process, or a long-lived runtime)."""
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    with _MANAGERS_LOCK:
        if model_root not in _MANAGERS:
            _MANAGERS[model_root] = ModelManager(ModelRegistry(model_root))
        return _MANAGERS[model_root]


def run_segment(compiled: CompiledDocument, task: TaskPlan, graph: dict[str, Any], instance: Mapping[str, Any],
                env: TaskEnvironment, services: dict[str, Any]) -> dict[str, Any]:
    """Runs a segment's nodes with the engine, boundary values and batch values written in as literals."""
    members = set(task.nodes)
    nodes = {n: dict(graph["nodes"][n]) for n in task.nodes}
    for fv in instance.get("field_values") or []:
        nodes[fv["node_path"]][fv["field_name"]] = fv["value"]
    for key, value in (instance.get("inputs") or {}).items():
        node_id, _, field_name = key.rpartition(".")
        nodes[node_id][field_name] = value
    edges = [e for e in graph["edges"] if e["source"]["node_id"] in members and e["destination"]["node_id"] in members]
    sub = {"id": graph.get("id"), "nodes": nodes, "edges": edges}
    state = _run_graph(sub, env, services, embedded_graph=_session_graph(graph, instance),
                       workflow_json=compiled.workflow_json)
    values: dict[str, Any] = {}
    for key in task.outputs:
        node_id, _, field_name = key.rpartition(".")
        produced = state.outputs_of(node_id)
        if produced:
            values[key] = getattr(produced[0], field_name)
    outputs = {n: state.outputs_of(n)[0].model_dump(mode="json") for n in task.nodes
               if n in compiled.plan.leaves and state.outputs_of(n)}
    env.logger.info("task %s: ran %d nodes in %.2f s (%s)", env.task_id, len(state.history),
                    sum(state.timings.values()),
                    ", ".join(f"{k} {v:.2f}s" for k, v in sorted(state.timings.items(), key=lambda kv: -kv[1])[:5]))
    return {"scope": task.scope, "records": [{"path": list(instance.get("path") or []), "values": _jsonable(values)}],
            "outputs": outputs, "images": _images(state), "label": instance.get("label", "")}


def _run_graph(sub: dict[str, Any], env: TaskEnvironment, services: dict[str, Any], *,
               embedded_graph: Optional[dict[str, Any]], workflow_json: Optional[dict[str, Any]]) -> Any:
    """Runs a task's (sub)graph: in the host's GPU runtime when one is configured, answering and the graph has
    GPU nodes (models stay warm there across tasks), else in this process. PNGs embed ``embedded_graph``
    (default: the graph itself)."""
    client = None if services else runtime_client_for(sub, env.logger)
    if client is not None:
        from invokeai_provider.graph.engine import ExecutionState

        _check_literals(sub)  # a 1 MB prompt or a 100,000 px width fails here, not in the runtime
        env.logger.info("handing %d nodes to the GPU runtime at %s", len(sub["nodes"]), client.socket_path)

        result = client.run_graph(
            {"graph": sub, "embedded_graph": embedded_graph, "workflow_json": workflow_json,
             "env": {"dag_id": env.dag_id, "run_id": env.run_id, "task_id": env.task_id, "map_index": env.map_index,
                     "tenant": env.tenant, "artifact_root": env.artifact_root, "model_root": env.model_root}},
            logger=env.logger, cancel_event=env.cancel_event,
            on_progress=env.usage.progress_callback(env.logger) if env.usage is not None else None)
        state = ExecutionState.from_dict(result["state"])
        if env.usage is not None:
            env.usage.add_state(state)
            env.usage.add_models(result.get("models") or {})
            env.usage.add_model_cache(result.get("cache") or {}, runtime=result.get("runtime"))
        _log_model_cache(env.logger, result.get("cache") or {}, result.get("runtime"))
        return state
    return run_graph_in_process(sub, env, services, embedded_graph=embedded_graph, workflow_json=workflow_json)


def _check_literals(sub: dict[str, Any]) -> None:
    """Validates a (sub)graph's literal values as the runtime will, except model names (the runtime binds them
    to its registry), so that bad input never takes a place in the runtime's queue."""
    from invokeai_provider.models.model_manager.binding import model_fields_of

    nodes = {}
    for node_id, node in sub["nodes"].items():
        try:
            names = [f for f in model_fields_of(str(node.get("type"))) if isinstance(node.get(f), str)]
        except InvokeAIProviderError:
            names = []  # an unknown type: Graph.from_dict says so, naming the node
        nodes[node_id] = {k: v for k, v in node.items() if k not in names}
    Graph.from_dict({**sub, "nodes": nodes}).validate()


def runtime_client_for(graph: dict[str, Any], logger: logging.Logger) -> Any:
    """The GPU runtime's client when ``[invokeai] runtime_socket`` is set, the graph has a GPU node and the
    runtime answers; None means: run in this process."""
    from invokeai_provider.config import settings

    config = settings()
    path = config.runtime_socket
    if not path or not _has_gpu_node(graph):
        return None
    from invokeai_provider.execution.runtime.client import RuntimeClient

    client = RuntimeClient(path)
    if client.wait_until_answering(config.runtime_connect_seconds):
        return client
    logger.warning("GPU runtime at %s is not answering; running this task's nodes in-process (cold model cache)",
                   path)
    return None


def _has_gpu_node(graph: dict[str, Any]) -> bool:
    from invokeai_provider.core.registry import InvocationRegistry

    for node in graph["nodes"].values():
        try:
            if InvocationRegistry.get_invocation_class(node.get("type")).UIConfig.gpu:
                return True
        except InvokeAIProviderError:
            continue  # an unknown type fails with its own error in whichever process runs it
    return False


def _log_model_cache(logger: logging.Logger, cache: dict[str, Any], runtime: Optional[dict[str, Any]]) -> None:
    if not cache:
        return
    where = f"GPU runtime {runtime.get('device')} (pid {runtime.get('pid')})" if runtime else "this process"
    logger.info("model cache in %s: %d hits, %d misses, %.2f s loading%s", where, cache.get("hits", 0),
                cache.get("misses", 0), cache.get("load_seconds", 0.0),
                f" ({', '.join(cache['loaded'])})" if cache.get("loaded") else "")


def run_graph_in_process(sub: dict[str, Any], env: TaskEnvironment, services: dict[str, Any], *,
                         embedded_graph: Optional[dict[str, Any]], workflow_json: Optional[dict[str, Any]],
                         runtime: Optional[dict[str, Any]] = None) -> Any:
    """Binds model names, validates and runs a (sub)graph here: in a task process, or in the GPU runtime
    (``runtime`` describes it, for the usage record)."""
    from invokeai_provider.graph.engine import Engine, ExecutionState

    services = _model_services(sub, env, services)
    manager = services.get("models")
    tracking = manager.cache.track() if hasattr(manager, "cache") else contextlib.nullcontext()
    if env.usage is not None and "models" in services:
        services = {**services, "models": env.usage.models_service(services["models"])}
    if "models" in services:
        from invokeai_provider.models.model_manager.binding import bind_model_fields

        registry = services["models"].registry
        sub = bind_model_fields(sub, registry)
        if embedded_graph is not None:
            embedded_graph = bind_model_fields(embedded_graph, registry)
    if embedded_graph is None:
        embedded_graph = sub
    run = _run_context(env, embedded_graph, workflow_with_values(workflow_json, embedded_graph), services)
    from invokeai_provider.execution.tenants import check_references

    check_references(sub, run.store.prefix)  # names a user gave become storage keys: refuse any way out
    graph = Graph.from_dict(sub)
    graph.validate()
    with tracking as stats:
        try:
            state = Engine(run).run(ExecutionState(graph))
        finally:
            if stats is not None:
                cache = stats.report()
                if env.usage is not None:
                    env.usage.add_model_cache(cache, runtime=runtime)
                if runtime is None:
                    _log_model_cache(env.logger, cache, None)
    if env.usage is not None:
        env.usage.add_state(state)
    return state


def _images(state: Any) -> list[dict[str, Any]]:
    return [record for records in state.records.values() for record in records]


def _run_context(env: TaskEnvironment, graph_json: dict[str, Any], workflow_json: Optional[dict[str, Any]],
                 services: dict[str, Any]) -> Any:
    """The engine's run context for a task: the run's store, and names unique per mapped instance."""
    from invokeai_provider.core.context import RunContext
    from invokeai_provider.execution.tenants import check_tenant
    from invokeai_provider.storage.base import open_run_store

    store = open_run_store(env.artifact_root, tenant=check_tenant(env.tenant or settings().default_tenant),
                           dag_id=env.dag_id, run_id=env.run_id)
    mapped = env.map_index is not None and env.map_index >= 0
    on_progress = env.usage.progress_callback(env.logger) if env.usage is not None else None
    return RunContext(store=store, name_prefix=f"m{env.map_index}." if mapped else "", task_id=env.task_id,
                      map_index=env.map_index if mapped else None, graph_json=graph_json,
                      workflow_json=workflow_json, cancel_event=env.cancel_event, logger=env.logger,
                      services=services, on_progress=on_progress)


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


def workflow_with_values(workflow_json: Optional[dict[str, Any]], graph: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The workflow embedded in PNGs, with the values this run used (Params, batch values), so loading
    it in InvokeAI reproduces the image."""
    if workflow_json is None:
        return None
    workflow = copy.deepcopy(workflow_json)
    for wf_node in workflow.get("nodes", []):
        values = graph["nodes"].get(str(wf_node.get("id")))
        inputs = (wf_node.get("data") or {}).get("inputs") if values else None
        if not isinstance(inputs, dict):
            continue
        for name, spec in inputs.items():
            if isinstance(spec, dict) and name in values and "value" in spec:
                spec["value"] = values[name]
    return workflow




def run_single_node(node_class: Any, node_id: str, inputs: Mapping[str, Any], env: TaskEnvironment,
                    services: Optional[dict[str, Any]] = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Runs one node from a hand-written DAG's operator; returns its output (JSON) and image records."""
    node = {"id": node_id, "type": node_class.get_type(), **_jsonable(dict(inputs))}
    graph = {"id": f"{env.dag_id}.{node_id}", "nodes": {node_id: node}, "edges": []}
    state = _run_graph(graph, env, dict(services or {}), embedded_graph=None, workflow_json=None)
    return state.outputs_of(node_id)[0].model_dump(mode="json"), _images(state)

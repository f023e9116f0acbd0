"""Running a task's graphs: in the host's GPU runtime or in this process, one graph or several together.

An engine call is the unit of work of a task: one graph (an unmapped segment) or the items of a chunk (one
graph per batch session or iteration path, see `invokeai_provider.execution.chunks`). Inside one call:

- tensors and conditioning that nodes pass each other stay in memory (`storage.intermediates`); only the
  objects referenced by values another task or the run's outputs read (``persist``) go to the store,
  unless ``[invokeai] keep_intermediates`` is set;
- equal nodes share their output (`graph.node_cache`, InvokeAI's invocation cache), e.g. one prompt is
  encoded once for all the sessions of a chunk;
- the graphs of a chunk run in threads that take turns on the device (`runtime.batching.DeviceScheduler`),
  so their denoise nodes meet and share UNet passes, here as in the GPU runtime. With a runtime, each graph
  is its own runtime job, all sent at once with one ``call`` id: they batch there the same way, and share
  the call's store, node cache and intermediates there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from invokeai_provider.config import settings
from invokeai_provider.errors import CanceledError, InvokeAIProviderError
from invokeai_provider.graph.graph import Graph

log = logging.getLogger(__name__)


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
    item: Optional[int] = None  # a chunk item's position among all the mapped task's items: names its objects

    def for_item(self, position: Optional[int]) -> "TaskEnvironment":
        return dataclasses.replace(self, item=position)


@dataclass
class GraphJob:
    """One graph of an engine call.

    :param graph: the (sub)graph to run
    :param env: its environment (``item`` set for a chunk's item)
    :param embedded_graph: the graph written into its PNGs (default: ``graph``)
    :param persist: ``node.field`` values and whole ``node`` outputs that leave the call: the objects they
        reference are written to the store. None: every object is written as it is saved (no intermediates)
    """

    graph: dict[str, Any]
    env: TaskEnvironment
    embedded_graph: Optional[dict[str, Any]] = None
    persist: Optional[list[str]] = None


def run_graphs(jobs: Sequence[GraphJob], services: dict[str, Any], *,
               workflow_json: Optional[dict[str, Any]]) -> list[Any]:
    """Runs the graphs of one engine call; their ExecutionStates in job order.

    Up to ``[invokeai] runtime_max_batch`` graphs run at a time (a batch's worth), the next one starting as one
    ends, in job order. When one fails, the others are canceled and the first failure (in job order) is
    raised: a chunk is retried as a whole, and its deterministic names make the retry overwrite this try's."""
    if not jobs:
        return []
    client = None if services else runtime_client_for(jobs[0].graph, jobs[0].env.logger)  # asked once per call
    if len(jobs) == 1:
        return [_run_graph(jobs[0], services, client, workflow_json=workflow_json)]
    width = min(len(jobs), settings("runtime_max_batch").runtime_max_batch)
    call_id = uuid.uuid4().hex  # with a runtime: its jobs of this call share one EngineCall there
    scheduler: Any = None
    call: Optional[EngineCall] = None
    if client is None:  # in this process
        from invokeai_provider.execution.runtime.batching import DeviceScheduler

        scheduler, call = DeviceScheduler(width), EngineCall.open(jobs[0].env)
    states: list[Any] = [None] * len(jobs)
    errors: list[Optional[BaseException]] = [None] * len(jobs)
    pending = iter(range(len(jobs)))
    lock = threading.Lock()

    def run(number: int) -> None:
        job = jobs[number]
        if scheduler is None:
            states[number] = _run_graph(job, services, client, workflow_json=workflow_json, call_id=call_id)
            return
        with scheduler.job():
            states[number] = _run_graph(job, {**services, "device": scheduler.for_run("local")}, None,
                                        workflow_json=workflow_json, call=call)

    def worker() -> None:
        while True:
            with lock:
                number = next(pending, None)
            if number is None:
                return
            try:
                run(number)
            except BaseException as exc:  # noqa: BLE001 - raised below, in job order
                errors[number] = exc
                if not isinstance(exc, CanceledError):
                    jobs[number].env.cancel_event.set()  # the chunk fails: the other items stop at their next check

    for future in [_workers().submit(worker) for _ in range(width)]:
        future.result()
    failures = [e for e in errors if e is not None]
    if failures:
        raise next((e for e in failures if not isinstance(e, CanceledError)), failures[0])
    return states


_WORKERS: Optional[ThreadPoolExecutor] = None
_WORKERS_LOCK = threading.Lock()


def _workers() -> ThreadPoolExecutor:
    """The threads that run the graphs of engine calls, kept across calls: a new thread would start a new
    OpenMP team for torch's CPU kernels, and its first passes run measurably slower."""
    global _WORKERS
    with _WORKERS_LOCK:
        if _WORKERS is None:
            _WORKERS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="graph-worker")
        return _WORKERS


def _run_graph(job: GraphJob, services: dict[str, Any], client: Any, *, workflow_json: Optional[dict[str, Any]],
               call: Optional["EngineCall"] = None, call_id: Optional[str] = None) -> Any:
    """Runs one graph: in the host's GPU runtime when ``client`` is its client (`runtime_client_for`: one is
    configured, answering and the graph has GPU nodes, so models stay warm there across tasks), else here.
    ``call``: what it shares with the other graphs of its engine call here; ``call_id``: there."""
    env = job.env
    if client is None:
        return run_graph_in_process(job.graph, env, services, embedded_graph=job.embedded_graph,
                                    workflow_json=workflow_json, persist=job.persist, call=call)
    from invokeai_provider.graph.engine import ExecutionState

    _check_literals(job.graph)  # a 1 MB prompt or a 100,000 px width fails here, not in the runtime
    env.logger.info("handing %d nodes to the GPU runtime at %s", len(job.graph["nodes"]), client.socket_path)
    result = client.run_graph(
        {"graph": job.graph, "embedded_graph": job.embedded_graph, "workflow_json": workflow_json,
         "persist": job.persist, "call": call_id,
         "env": {"dag_id": env.dag_id, "run_id": env.run_id, "task_id": env.task_id, "map_index": env.map_index,
                 "item": env.item, "tenant": env.tenant, "artifact_root": env.artifact_root,
                 "model_root": env.model_root}},
        logger=env.logger, cancel_event=env.cancel_event,
        on_progress=env.usage.progress_callback(env.logger) if env.usage is not None else None)
    state = ExecutionState.from_dict(result["state"])
    if env.usage is not None:
        env.usage.add_state(state)
        env.usage.add_models(result.get("models") or {})
        env.usage.add_model_cache(result.get("cache") or {}, runtime=result.get("runtime"))
    _log_model_cache(env.logger, result.get("cache") or {}, result.get("runtime"))
    return state


def run_graph_in_process(sub: dict[str, Any], env: TaskEnvironment, services: dict[str, Any], *,
                         embedded_graph: Optional[dict[str, Any]], workflow_json: Optional[dict[str, Any]],
                         runtime: Optional[dict[str, Any]] = None, persist: Optional[list[str]] = None,
                         call: Optional["EngineCall"] = None) -> Any:
    """Binds model names, validates and runs a (sub)graph here: in a task process, or in the GPU runtime
    (``runtime`` describes it, for the usage record). ``persist``: see `GraphJob`; ``call``: what the graphs of
    one engine call share (a new one when not given)."""
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
    call = call or EngineCall.open(env, intermediates=persist is not None)
    run = _run_context(env, embedded_graph, workflow_with_values(workflow_json, embedded_graph), services, call)
    from invokeai_provider.execution.tenants import check_image_inputs, check_references

    check_references(sub, run.store.prefix)  # names a user gave become storage keys: refuse any way out
    check_image_inputs(sub, run.store)  # before any node runs: an image the tenant does not have
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
    if run.intermediates is not None and persist is not None:
        run.intermediates.persist_referenced(run.store, persisted_values(state, persist))
    if env.usage is not None:
        env.usage.add_state(state)
    return state


def persisted_values(state: Any, persist: Sequence[str]) -> list[Any]:
    """The JSON of the outputs that leave the engine call: ``node.field`` values and whole ``node`` outputs."""
    values = []
    for key in persist:
        node_id, _, field_name = key.rpartition(".") if key not in state.graph.nodes else (key, "", "")
        for output in state.outputs_of(node_id):
            dumped = output.model_dump(mode="json")
            values.append(dumped.get(field_name) if field_name else dumped)
    return values


@dataclass
class EngineCall:
    """What the graphs of one engine call share in this process: the run's store (opened once: an S3 root
    resolves its connection once), InvokeAI's invocation cache (None when ``node_cache_size`` is 0) and the
    tensors the nodes pass each other (None: written to the store as saved, ``keep_intermediates``)."""

    store: Any
    node_cache: Any = None
    intermediates: Any = None

    @classmethod
    def open(cls, env: TaskEnvironment, intermediates: bool = True) -> "EngineCall":
        from invokeai_provider.execution.tenants import check_tenant
        from invokeai_provider.storage.base import open_run_store

        config = settings("default_tenant", "node_cache_size", "keep_intermediates")
        store = open_run_store(env.artifact_root, tenant=check_tenant(env.tenant or config.default_tenant),
                               dag_id=env.dag_id, run_id=env.run_id)
        cache = None
        if config.node_cache_size > 0:
            from invokeai_provider.graph.node_cache import NodeCache

            cache = NodeCache(config.node_cache_size)
        held = None
        if intermediates and not config.keep_intermediates:
            from invokeai_provider.storage.intermediates import IntermediateObjects

            held = IntermediateObjects()
        return cls(store, cache, held)


def _check_literals(sub: dict[str, Any]) -> None:
    """Validates a (sub)graph's literal values as the runtime will, except model names (the runtime binds them
    to its registry), so that bad input never takes a place in the runtime's queue. A model name stands in as an
    identifier of that name meanwhile: a required direct-input model field (InvokeAI's Z-Image, SD3 and FLUX.2
    loaders take the model on the node itself) is not missing."""
    from invokeai_provider.models.model_manager.binding import model_fields_of

    nodes = {}
    for node_id, node in sub["nodes"].items():
        try:
            names = [f for f in model_fields_of(str(node.get("type"))) if isinstance(node.get(f), str)]
        except InvokeAIProviderError:
            names = []  # an unknown type: Graph.from_dict says so, naming the node
        nodes[node_id] = {k: ({"key": v, "hash": "", "name": v, "base": "any", "type": "main"} if k in names else v)
                          for k, v in node.items()}
    Graph.from_dict({**sub, "nodes": nodes}).validate()


def runtime_client_for(graph: dict[str, Any], logger: logging.Logger) -> Any:
    """The GPU runtime's client when ``[invokeai] runtime_socket`` is set, the graph has a GPU node and the
    runtime answers; None means: run in this process."""
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


def _run_context(env: TaskEnvironment, graph_json: dict[str, Any], workflow_json: Optional[dict[str, Any]],
                 services: dict[str, Any], call: "EngineCall") -> Any:
    """The engine's run context for a graph: the call's store, cache and intermediates, and names unique per
    mapped item."""
    from invokeai_provider.core.context import RunContext

    mapped = env.map_index is not None and env.map_index >= 0
    position = env.item if env.item is not None else env.map_index if mapped else None
    on_progress = env.usage.progress_callback(env.logger) if env.usage is not None else None
    return RunContext(store=call.store, name_prefix=f"m{position}." if position is not None else "",
                      task_id=env.task_id, map_index=env.map_index if mapped else None, item_index=position,
                      graph_json=graph_json, workflow_json=workflow_json, cancel_event=env.cancel_event,
                      logger=env.logger, services=services, on_progress=on_progress, node_cache=call.node_cache,
                      intermediates=call.intermediates)


def workflow_with_values(workflow_json: Optional[dict[str, Any]], graph: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The workflow embedded in PNGs, with the values this run used (Params, batch values), so loading
    it in InvokeAI reproduces the image."""
    if workflow_json is None:
        return None
    import copy

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

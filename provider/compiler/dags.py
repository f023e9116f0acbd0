"""Graphs and saved workflows → Airflow DAGs (``compile_dag``).

Compiling is: parse and validate the document, plan the tasks (`invokeai_provider.compiler.plan`), derive the
Params of the trigger form (`invokeai_provider.compiler.params`), then instantiate one operator per planned task.
Parsed documents and plans are cached by content hash, because every Airflow task re-parses its DAG
file; the compiled document is registered in this process under a key that the operators carry.
The readable DAG file the CLI writes (`invokeai_provider.compiler.render`) makes the same operator calls, and
imports what it needs at parse time from here.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from invokeai_provider.compiler.plan import COLLECT_TASK, FANOUT, SESSIONS, Plan, TaskPlan, build_plan
from invokeai_provider.config import settings
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.execution.task_runtime import CompiledDocument

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from invokeai_provider.graph.workflow import Document

Source = Union[str, Path, Mapping[str, Any], "Document"]

_CACHE: dict[tuple[str, str, Optional[int]], CompiledDocument] = {}
_CACHE_LOCK = threading.Lock()
LABEL_TEMPLATE = "{{ invokeai_label }}"


def document_path(source: Source) -> Optional[Path]:
    """The file a source names (a path, or a string that is not JSON text); None for text and dicts."""
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        return Path(source)
    return None


def document_text(source: Source) -> tuple[str, str]:
    """(JSON text, name) of a path, JSON text or dict."""
    path = document_path(source)
    if path is not None:
        return path.read_text(), path.stem
    if isinstance(source, str):
        return source, ""
    if isinstance(source, Mapping):
        return json.dumps(source, sort_keys=True), ""
    raise TypeError(f"cannot compile a {type(source).__name__}")


def load_compiled(source: Source, *, granularity: str = "segment", model_names: Any = None,
                  chunk_size: Optional[int] = None) -> CompiledDocument:
    """Parses, validates and plans a document; cached by (content hash, granularity, chunk size).

    :param chunk_size: items per mapped task instance (None: ``[invokeai] map_chunk_size`` when the task runs)
    """
    from invokeai_provider.graph.workflow import Document, load_document

    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise InvokeAIProviderError(f"chunk_size: expected a whole number of at least 1, got {chunk_size!r}")
    if isinstance(source, Document):
        return _compile_document(source, granularity, model_names, "", chunk_size)
    text, stem = document_text(source)
    key = (hashlib.sha256(text.encode()).hexdigest(), granularity, chunk_size)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    path = document_path(source)
    compiled = _compile_document(load_document(text, str(path) if path else ""), granularity, model_names, stem,
                                 chunk_size)
    with _CACHE_LOCK:
        _CACHE[key] = compiled
    return compiled


def _compile_document(document: "Document", granularity: str, model_names: Any, stem: str,
                      chunk_size: Optional[int]) -> CompiledDocument:
    from invokeai_provider.compiler.dag_docs import dag_doc_md
    from invokeai_provider.compiler.model_choices import registry_model_names
    from invokeai_provider.compiler.params import param_specs

    workflow = document.workflow
    labels = {n: workflow.node_label(n) for n in document.graph.nodes} if workflow else {}
    if document.batch:
        document.batch.check_against(document.graph)
    name = (workflow.name if workflow else "") or stem
    plan = build_plan(document.graph, granularity=granularity, node_labels=labels,
                      has_batch=document.batch is not None, name=name)
    specs = param_specs(document, model_names=model_names if model_names is not None else registry_model_names())
    compiled = CompiledDocument(plan=plan, param_specs=specs, workflow_json=workflow.raw if workflow else None,
                                batch=document.batch.model_dump(mode="json") if document.batch else None, name=name,
                                chunk_size=chunk_size)
    compiled.doc_md = dag_doc_md(compiled, document)
    return compiled


_DAG_ID = re.compile(r"[^A-Za-z0-9_.-]+")


def dag_id_for(path: Path, prefix: str = "") -> str:
    """``sd15-text-to-image.json`` → ``sd15-text-to-image`` (characters Airflow refuses become ``_``)."""
    return prefix + _DAG_ID.sub("_", path.stem)


def plan_key(dag_id: str, compiled: CompiledDocument) -> str:
    chunks = f"/chunks{compiled.chunk_size}" if compiled.chunk_size else ""
    return f"{dag_id}@{compiled.plan.content_hash[:16]}{chunks}"


@dataclass
class TaskCall:
    """One operator instantiation: what both compile_dag and the generated DAG file do."""

    task: TaskPlan
    class_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    upstream: list[str] = field(default_factory=list)  # task ids whose output the task reads
    expand_from: Optional[str] = None  # mapped: the task whose return value is the instance list

    @property
    def variable(self) -> str:
        return self.task.task_id


def task_calls(compiled: CompiledDocument) -> list[TaskCall]:
    """The operator for each planned task, with its queue, trigger rule, outlets and mapping."""
    calls = []
    for task in compiled.plan.tasks:
        kwargs: dict[str, Any] = {"task_id": task.task_id, "plan_task": task.task_id}
        if task.queue == "gpu":
            kwargs["queue"] = "gpu"
        if task.upstream:
            kwargs["trigger_rule"] = "none_failed"  # a skipped lazy-if branch must not skip its if node
        if task.image_producing:
            kwargs["outlets"] = "images"
        if task.mapped:
            kwargs["map_index_template"] = LABEL_TEMPLATE
        calls.append(TaskCall(task, _class_name(task, compiled.plan), kwargs,
                              upstream=[] if task.mapped else list(task.upstream),
                              expand_from=task.instances_from if task.mapped else None))
    return calls


def _class_name(task: TaskPlan, plan: Plan) -> str:
    if task.kind == SESSIONS:
        return "BatchSessionsOperator"
    if task.kind == FANOUT:
        return "MapInstancesOperator"
    if task.kind == COLLECT_TASK:
        return "CollectReduceOperator"
    if plan.granularity == "node" and len(task.nodes) == 1:
        from invokeai_provider.airflow.operator import operator_for_type

        return operator_for_type(plan.graph["nodes"][task.nodes[0]]["type"]).__name__
    return "GraphSegmentOperator"


def _operator_class(name: str) -> Any:
    from invokeai_provider.airflow import operator as module
    if hasattr(module, name):
        return getattr(module, name)
    from invokeai_provider.airflow.operator import operator_classes

    return operator_classes()[name]


def dag_params(compiled: CompiledDocument) -> dict[str, Any]:
    """The trigger form: the workflow's Params, then ``tenant`` (read from the config at every parse)."""
    from invokeai_provider.compiler.params import airflow_params
    from invokeai_provider.compiler.tenant_param import tenant_param
    from invokeai_provider.execution.tenants import TENANT_PARAM

    return {**airflow_params(compiled.param_specs), TENANT_PARAM: tenant_param()}


def compile_dag(source: Source, *, dag_id: str, granularity: str = "segment", model_names: Any = None,
                chunk_size: Optional[int] = None, **dag_kwargs: Any) -> "DAG":
    """Compiles a graph, workflow or batch document into a DAG.

    :param source: a path, JSON text, a parsed dict or a Document
    :param dag_id: the DAG's id
    :param granularity: ``segment`` (default: connected nodes of one scope share a task) or ``node``
    :param chunk_size: items (batch sessions, iteration paths) per mapped task instance; default
        ``[invokeai] map_chunk_size`` (`invokeai_provider.execution.chunks`)
    :param dag_kwargs: passed to ``DAG`` (schedule, tags, default_args, ...); ``schedule`` defaults to None
    """
    from airflow.sdk import DAG

    compiled = load_compiled(source, granularity=granularity, model_names=model_names, chunk_size=chunk_size)
    key = plan_key(dag_id, compiled)
    from invokeai_provider.airflow.operator import register_compiled

    register_compiled(key, compiled)
    dag_kwargs.setdefault("schedule", None)
    dag_kwargs.setdefault("tags", ["invokeai"])
    dag_kwargs.setdefault("doc_md", compiled.doc_md)
    dag_kwargs.setdefault("render_template_as_native_obj", False)
    dag_kwargs["default_args"] = {**default_task_args(), **dict(dag_kwargs.get("default_args") or {})}
    params = {**dag_params(compiled), **dict(dag_kwargs.pop("params", None) or {})}
    with DAG(dag_id=dag_id, params=params, **dag_kwargs) as dag:
        instantiate(task_calls(compiled), key)
    return dag


def default_task_args() -> dict[str, Any]:
    """Retries for every compiled task (``[invokeai] task_retries`` / ``task_retry_delay_seconds``): a lost
    worker or a storage outage fails a try, and deterministic artifact names make the retry overwrite it.
    And an execution timeout (``task_execution_timeout_seconds``): a try stuck past it is failed, which
    cancels its job in the GPU runtime, so no run holds a worker slot or the device forever."""
    from datetime import timedelta

    config = settings()
    args: dict[str, Any] = {"retries": config.task_retries,
                            "retry_delay": timedelta(seconds=config.task_retry_delay_seconds)}
    if config.task_execution_timeout_seconds > 0:
        args["execution_timeout"] = timedelta(seconds=config.task_execution_timeout_seconds)
    return args


def instantiate(calls: list[TaskCall], key: str) -> dict[str, Any]:
    """Creates the operators of a compiled plan inside the current DAG context."""
    from invokeai_provider.airflow.operator import images_alias

    gpu_queue = settings().gpu_queue
    tasks: dict[str, Any] = {}
    for call in calls:
        kwargs = dict(call.kwargs, plan_key=key)
        if kwargs.get("queue") == "gpu":
            kwargs["queue"] = gpu_queue
        if kwargs.get("outlets") == "images":
            kwargs["outlets"] = [images_alias()]
        cls = _operator_class(call.class_name)
        if call.expand_from is not None:
            op = cls.partial(**kwargs).expand(instance=tasks[call.expand_from].output)
        else:
            op = cls(**kwargs, upstream_tasks=list(call.upstream))
        for upstream in call.task.upstream:
            tasks[upstream] >> op
        tasks[call.task.task_id] = op
    return tasks


def check_plan(compiled: CompiledDocument, expected_tasks: list[str]) -> None:
    """A generated DAG file names its tasks; refuse to run if the workflow now plans different ones."""
    planned = [t.task_id for t in compiled.plan.tasks]
    if planned != expected_tasks:
        raise InvokeAIProviderError(f"the workflow now compiles to tasks {planned}, but this DAG file was generated "
                                    f"for {expected_tasks}; run `invokeai-airflow compile` again")

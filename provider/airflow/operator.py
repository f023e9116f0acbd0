"""Airflow operators: one per node type (made from the node class) and the compiled-task operators.

Node operators (``DenoiseLatentsOperator`` …) take the node's inputs as keyword arguments: literals,
Jinja templates or XComArgs of other node operators' outputs (``loader.output["unet"]``). The node's
output is returned (XCom ``return_value``) and each output field is pushed under its own key, so
``task.output["field"]`` reads one field. GPU nodes default to the ``[invokeai] gpu_queue`` queue.

Compiled tasks (from `invokeai_provider.compiler.dags`) run a planned task: a segment of nodes, a collect
reduce, a batch's sessions or a fan-out. They find the compiled document by key in a process-level
registry that compiling the DAG file fills, so the DAG's serialised form stays small.
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Optional, Sequence

from airflow.sdk import Asset, AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from invokeai_provider.compiler.plan import node_class_produces_images
from invokeai_provider.compiler.run_conf import check_run_conf
from invokeai_provider.config import settings
from invokeai_provider.errors import InvokeAIProviderError, is_input_error
from invokeai_provider.execution.graph_runs import TaskEnvironment
from invokeai_provider.execution.task_runtime import RECORDS_KEY, CompiledDocument, SkipTask, run_task
from invokeai_provider.execution.tenants import InvalidTenantError, resolve_tenant
from invokeai_provider.execution.usage import USAGE_XCOM_KEY, UsageMeter, store_usage

if TYPE_CHECKING:
    from airflow.sdk import Context

    from invokeai_provider.core.invocation import BaseInvocation

IMAGES_ALIAS = "invokeai_images"
IMAGE_RECORDS_KEY = "image_records"
LABEL_CONTEXT_KEY = "invokeai_label"
_RESERVED_INPUTS = ("id", "type")

_COMPILED: dict[str, CompiledDocument] = {}
_COMPILED_LOCK = threading.Lock()


def register_compiled(key: str, compiled: CompiledDocument) -> None:
    with _COMPILED_LOCK:
        _COMPILED[key] = compiled


def get_compiled(key: str) -> CompiledDocument:
    try:
        return _COMPILED[key]
    except KeyError:
        raise InvokeAIProviderError(
            f"compiled plan {key!r} is not loaded in this process; the DAG file must compile it at parse time") from None


def images_alias() -> AssetAlias:
    return AssetAlias(IMAGES_ALIAS)


def board_asset(tenant: str, board_id: Optional[str]) -> Asset:
    """The asset a board's images are recorded under: ``invokeai://<tenant>/boards/<board or none>``."""
    board = board_id or "none"
    return Asset(name=f"invokeai_images__{tenant}__{board}", uri=f"invokeai://{tenant}/boards/{board}",
                 group="invokeai")


@contextmanager
def input_errors_fail_for_good() -> Iterator[None]:
    """An error about the run's input (``errors.is_input_error``) fails the task without its retries: the same
    input would fail the same way again. Other errors (a store or device that may recover) keep them."""
    try:
        yield
    except InvokeAIProviderError as exc:
        if is_input_error(exc):
            raise AirflowFailException(str(exc)) from exc
        raise


class _InvokeAITask(BaseOperator):
    """What every InvokeAI task shares: the run's environment, publishing outputs, records and assets."""

    ui_fgcolor = "#000000"
    # set by the compiled-task constructors (plan_key None: a hand-written node operator)
    plan_key: Optional[str]
    plan_task: Optional[str]
    upstream_tasks: list[str]
    instance: Optional[dict[str, Any]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cancel = threading.Event()

    def _environment(self, context: "Context", task_id: str) -> TaskEnvironment:
        params = dict(context.get("params") or {})
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        dag_run = context.get("dag_run")
        try:  # compiled DAGs have a validated tenant Param; hand-written ones are checked here, before any work
            tenant = resolve_tenant(params, getattr(dag_run, "conf", None))  # else [invokeai] default_tenant
        except InvalidTenantError as exc:
            raise AirflowFailException(str(exc)) from None  # no retry can fix it
        self._started = datetime.now(timezone.utc)
        config = settings()
        return TaskEnvironment(
            dag_id=ti.dag_id, run_id=ti.run_id, task_id=task_id,
            map_index=map_index if map_index is not None and map_index >= 0 else None,
            params=params, logger=self.log, cancel_event=self._cancel,
            artifact_root=config.configured_artifact_root, model_root=config.configured_model_root,
            tenant=tenant, usage=UsageMeter())

    def _record_usage(self, context: "Context", env: TaskEnvironment) -> None:
        """The task's usage (see `invokeai_provider.execution.usage`) to XCom ``invokeai_usage`` and the artifact store."""
        ti = context["ti"]
        record = store_usage(env.usage, env.artifact_root, tenant=env.tenant,
                             dag_id=env.dag_id, run_id=env.run_id, task_id=env.task_id, map_index=env.map_index,
                             try_number=getattr(ti, "try_number", None),
                             hostname=getattr(ti, "hostname", None) or socket.gethostname(),
                             started=getattr(self, "_started", None) or datetime.now(timezone.utc),
                             ended=datetime.now(timezone.utc))
        if record is not None:
            ti.xcom_push(key=USAGE_XCOM_KEY, value=record)

    def _publish_images(self, context: "Context", images: list[dict[str, Any]], tenant: str) -> None:
        """Image records go to XCom; the non-intermediate ones also become Asset events, one per board."""
        if not images:
            return
        context["ti"].xcom_push(key=IMAGE_RECORDS_KEY, value=images)
        by_board: dict[Optional[str], list[dict[str, Any]]] = {}
        for record in images:
            if not record.get("is_intermediate"):
                by_board.setdefault(record.get("board_id"), []).append(record)
        outlet_events = context.get("outlet_events")
        if outlet_events is None or not any(isinstance(o, AssetAlias) for o in self.outlets):
            return
        for board, records in sorted(by_board.items(), key=lambda kv: str(kv[0])):
            extra = {"images": [{k: v for k, v in r.items() if k != "metadata"} for r in records],
                     "dag_id": context["ti"].dag_id, "run_id": context["ti"].run_id}
            outlet_events[images_alias()].add(board_asset(tenant, board), extra=extra)

    def _execute_compiled(self, context: "Context") -> Any:
        """Runs the planned task ``plan_task`` of the compiled document ``plan_key``.

        Publishes the task's records (key ``invokeai_records``) for other compiled tasks; returns the
        instance list of the mapped task it feeds, else a summary for people (leaf outputs, images)."""
        compiled = get_compiled(self.plan_key)
        dag_run = context.get("dag_run")
        with input_errors_fail_for_good():  # before any work: a misspelt key would silently run the defaults
            check_run_conf(getattr(dag_run, "conf", None), self.dag.params.keys() if self.has_dag() else ())
        env = self._environment(context, self.plan_task)
        if self.instance is not None:
            context[LABEL_CONTEXT_KEY] = self.instance.get("label") or ""  # type: ignore[literal-required]
        try:
            with input_errors_fail_for_good():
                output, emitted = run_task(compiled, env, upstream=_pull_records(context, self.upstream_tasks),
                                           instance=self.instance)
        except SkipTask as exc:
            raise AirflowSkipException(str(exc)) from None
        images = output.pop("images", [])
        summary = {"outputs": output.pop("outputs", {}), "images": [i["image_name"] for i in images],
                   "label": output.pop("label", "")}
        context["ti"].xcom_push(key=RECORDS_KEY, value=output)
        self._publish_images(context, images, env.tenant)
        self._record_usage(context, env)
        if emitted:
            [instances] = emitted.values()
            self.log.info("feeds %s with %d mapped instances", next(iter(emitted)), len(instances))
            return instances
        return summary

    def on_kill(self) -> None:
        """Stops the engine between nodes and at the next denoising step."""
        self._cancel.set()


class CompiledTaskOperator(_InvokeAITask):
    """Runs one task of a compiled plan (segment, collect reduce, batch sessions or fan-out).

    :param plan_key: key of the compiled document in this process's registry (set by the compiler)
    :param plan_task: the task's id in the plan
    :param upstream_tasks: the tasks whose records this task reads (unmapped tasks); read at run time,
        so a skipped upstream (a lazy-if branch not taken) reads as absent instead of failing the render
    :param instance: this mapped instance's inputs, built by the task that feeds it
    """

    template_fields: Sequence[str] = ("instance",)
    ui_color = "#e8f0fe"

    def __init__(self, *, plan_key: str, plan_task: str, upstream_tasks: Sequence[str] = (),
                 instance: Optional[dict[str, Any]] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_key = plan_key
        self.plan_task = plan_task
        self.upstream_tasks = list(upstream_tasks)
        self.instance = instance

    def execute(self, context: "Context") -> Any:
        return self._execute_compiled(context)


def _pull_records(context: "Context", task_ids: Sequence[str]) -> dict[str, Any]:
    """Each upstream task's records: one output (unmapped) or all its instances' (mapped); None if skipped."""
    ti = context["ti"]
    return {task_id: ti.xcom_pull(task_ids=task_id, key=RECORDS_KEY) for task_id in task_ids}


class GraphSegmentOperator(CompiledTaskOperator):
    """Connected nodes of one iteration scope, run together by the engine in one task."""

    ui_color = "#d2e3fc"


class CollectReduceOperator(CompiledTaskOperator):
    """A collect node: gathers the items of every iteration, in iteration order."""

    ui_color = "#fce8b2"


class BatchSessionsOperator(CompiledTaskOperator):
    """Expands the InvokeAI batch (with its Params) into one session per mapped instance."""

    ui_color = "#fad2cf"


class MapInstancesOperator(CompiledTaskOperator):
    """Builds a mapped task's instance list from several upstream tasks' outputs."""

    ui_color = "#f1f3f4"


class InvocationOperator(_InvokeAITask):
    """Base of the per-node operators; a subclass exists for every registered node type.

    Hand-written use: node inputs as keyword arguments. Compiled use (``granularity="node"``): the
    compiler passes ``plan_key``/``plan_task`` and the operator runs its planned one-node task.
    """

    node_class: ClassVar[type["BaseInvocation"]]
    input_attributes: ClassVar[dict[str, str]] = {}  # node field -> attribute holding it

    def __init__(self, *, plan_key: Optional[str] = None, plan_task: Optional[str] = None,
                 upstream_tasks: Sequence[str] = (), instance: Optional[dict[str, Any]] = None,
                 **kwargs: Any) -> None:
        node_inputs = {name: kwargs.pop(name) for name in list(kwargs) if name in self.input_attributes}
        for reserved in _RESERVED_INPUTS:
            if reserved in kwargs:
                raise InvokeAIProviderError(f"{type(self).__name__}: {reserved!r} is set from the task id and node type")
        if "queue" not in kwargs and self.node_class.UIConfig.gpu:
            kwargs["queue"] = settings().gpu_queue
        if "outlets" not in kwargs and node_class_produces_images(self.node_class):
            kwargs["outlets"] = [images_alias()]
        super().__init__(**kwargs)
        for name, attribute in self.input_attributes.items():
            setattr(self, attribute, node_inputs.get(name))
        self._given_inputs = sorted(node_inputs)
        self.plan_key = plan_key
        self.plan_task = plan_task
        self.upstream_tasks = list(upstream_tasks)
        self.instance = instance

    def node_inputs(self) -> dict[str, Any]:
        """The (rendered) inputs that were given, by node field name."""
        return {name: getattr(self, self.input_attributes[name]) for name in self._given_inputs}

    def execute(self, context: "Context") -> Any:
        if self.plan_key is not None:
            return self._execute_compiled(context)
        from invokeai_provider.execution.task_runtime import run_single_node

        env = self._environment(context, self.task_id)
        with input_errors_fail_for_good():
            output, images = run_single_node(self.node_class, self.task_id, self.node_inputs(), env)
        ti = context["ti"]
        for name, value in output.items():
            if name != "type":
                ti.xcom_push(key=name, value=value)
        self._publish_images(context, images, env.tenant)
        self._record_usage(context, env)
        return output


def _attribute_name(field_name: str) -> str:
    return f"{field_name}_input" if hasattr(BaseOperator, field_name) else field_name


def operator_class_name(node_class: type["BaseInvocation"]) -> str:
    base = node_class.__name__
    for suffix in ("Invocation", "Node"):
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
    return f"{base}Operator"


def make_operator_class(node_class: type["BaseInvocation"]) -> type[InvocationOperator]:
    """The operator class of a node type, with its inputs as templated keyword arguments."""
    fields = [f for f in node_class.input_fields() if f not in _RESERVED_INPUTS] + ["is_intermediate"]
    attributes = {f: _attribute_name(f) for f in fields}
    doc = _operator_doc(node_class, fields)
    namespace = {
        "__doc__": doc,
        "__module__": "invokeai_provider.operators",
        "node_class": node_class,
        "input_attributes": attributes,
        "template_fields": tuple(attributes.values()) + ("instance",),
        "ui_color": "#c8e6c9" if node_class.UIConfig.gpu else "#ffffff",
        "custom_operator_name": node_class.get_type(),
    }
    name = operator_class_name(node_class)
    cls = type(name, (InvocationOperator,), namespace)
    cls.__qualname__ = name
    return cls


def _operator_doc(node_class: type["BaseInvocation"], fields: list[str]) -> str:
    description = (node_class.__doc__ or "").strip().splitlines()
    lines = [f"InvokeAI node ``{node_class.get_type()}`` ({node_class.UIConfig.title or node_class.__name__}, "
             f"v{node_class.UIConfig.version}{', GPU queue' if node_class.UIConfig.gpu else ''}).", ""]
    if description:
        lines += [" ".join(line.strip() for line in description), ""]
    for name in fields:
        info = node_class.model_fields[name]
        text = (info.description or "").strip() or "(no description)"
        lines.append(f":param {name}: {text}")
    output_class = node_class.get_output_annotation()
    outputs = ", ".join(f"``{n}``" for n in output_class.model_fields if n != "type")
    lines += ["", f"Output ``{output_class.model_fields['type'].default}``: {outputs}; pushed whole as "
              "``return_value`` and each field under its own XCom key."]
    return "\n".join(lines)


_OPERATOR_CLASSES: dict[str, type[InvocationOperator]] = {}


def operator_classes() -> dict[str, type[InvocationOperator]]:
    """Operator class name -> class, for every registered node type."""
    if not _OPERATOR_CLASSES:
        from invokeai_provider.core.registry import InvocationRegistry, load_node_packs

        load_node_packs()
        for node_class in InvocationRegistry.invocation_classes().values():
            cls = make_operator_class(node_class)
            _OPERATOR_CLASSES.setdefault(cls.__name__, cls)
    return _OPERATOR_CLASSES


def operator_for_type(node_type: str) -> type[InvocationOperator]:
    from invokeai_provider.core.registry import InvocationRegistry

    name = operator_class_name(InvocationRegistry.get_invocation_class(node_type))
    return operator_classes()[name]

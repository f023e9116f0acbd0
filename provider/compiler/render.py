"""The readable DAG file ``invokeai-airflow compile`` writes: the same operator calls `compile_dag` makes, laid out
like a hand-written DAG.

* The workflow is embedded, not referenced: the file is self-contained (copy it into any dags folder) and cannot
  drift from a JSON file edited later. It is written as indented JSON in a raw triple-quoted string (same content
  as the source, re-indented; a ``'''`` inside a string is written as ``\\u0027`` escapes).
* Each task is one operator call with a comment naming the nodes it runs. At ``granularity="node"`` the call shows
  the node's own inputs as keyword arguments, as in a hand-written DAG: literals that differ from the node's
  defaults, and ``'{{ params.NAME }}'`` for a field the trigger form sets (a mapped task's call lists them in its
  comment: Airflow's ``partial()`` takes only declared arguments). Inputs that other tasks feed are listed in the
  comment. The task still runs its planned node (``plan_key``/``plan_task``) from the embedded workflow,
  so these keyword arguments are what that workflow says, and ``check_node_inputs`` refuses to load the file when
  they were edited: edit the workflow and compile again.
* When parsed, the file recompiles the workflow (cheap, cached) and refuses to load if it no longer plans exactly
  the tasks written out, so it never runs a stale plan.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.compiler.dags import Source, TaskCall, document_text, load_compiled, task_calls
from invokeai_provider.compiler.plan import COLLECT_TASK, FANOUT, SESSIONS
from invokeai_provider.config import settings
from invokeai_provider.errors import InvokeAIProviderError

if TYPE_CHECKING:
    from invokeai_provider.execution.task_runtime import CompiledDocument

__all__ = ["NodeCallInputs", "check_node_inputs", "node_call_inputs", "render_dag_file"]

COMPILED_OPERATORS = ("BatchSessionsOperator", "CollectReduceOperator", "GraphSegmentOperator", "MapInstancesOperator")
WIDTH = 116  # code lines are wrapped at this width; only a long literal (a prompt) makes a longer one
_JINJA = re.compile(r"\{\{|\{%|\{#")
# keyword arguments every compiled call passes: a node field of the same name cannot be shown beside them
_CALL_KWARGS = frozenset({"task_id", "plan_key", "plan_task", "queue", "trigger_rule", "outlets", "map_index_template",
                          "upstream_tasks", "instance"})
_NOT_SHOWN = frozenset({"id", "type", "is_intermediate", "use_cache"})  # node attributes, not inputs a user sets


@dataclass
class NodeCallInputs:
    """What a node-granularity call shows: its keyword arguments, and notes on the inputs it cannot show."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    fed: list[str] = field(default_factory=list)  # "unet <- model.unet"
    notes: list[str] = field(default_factory=list)


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


def _has_jinja(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_JINJA.search(value))
    if isinstance(value, dict):
        return any(_has_jinja(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_jinja(v) for v in value)
    return False


def node_call_inputs(compiled: "CompiledDocument", task_id: str) -> NodeCallInputs:
    """The inputs a one-node task's operator call shows, from the compiled workflow (the one place that decides
    them, for writing the file and for checking it when it is parsed)."""
    from invokeai_provider.core.registry import InvocationRegistry

    plan = compiled.plan
    [node_id] = plan.task(task_id).nodes
    node = plan.graph["nodes"][node_id]
    node_class = InvocationRegistry.get_invocation_class(node["type"])
    task_of = {n: t.task_id for t in reversed(plan.tasks) for n in t.nodes}
    fed = {e["destination"]["field"]: e["source"] for e in plan.graph["edges"]
           if e["destination"]["node_id"] == node_id}
    params = {s.field_name: s.name for s in compiled.param_specs if s.node_id == node_id and s.kind != "batch"}
    batch_params = {}
    for spec in compiled.param_specs:
        if spec.kind == "batch" and spec.batch_index is not None and compiled.batch:
            group, index = spec.batch_index
            datum = compiled.batch["data"][group][index]
            if datum.get("node_path") == node_id:
                batch_params[datum.get("field_name")] = spec.name
    shown = NodeCallInputs()
    for name, info in node_class.input_fields().items():
        if name in _NOT_SHOWN:
            continue
        if name in fed:
            source = fed[name]
            shown.fed.append(f"{name} <- {task_of.get(source['node_id'], source['node_id'])}.{source['field']}")
        elif name in batch_params:
            shown.notes.append(f"{name} from the batch Param {batch_params[name]}")
        elif name in _CALL_KWARGS:
            shown.notes.append(f"{name} as in the workflow (a keyword the compiled task uses itself)")
        elif name in params:
            shown.kwargs[name] = "{{ params.%s }}" % params[name]
        elif name in node:
            value = node[name]
            if not info.is_required() and value == _jsonable(info.get_default(call_default_factory=True)):
                continue
            if _has_jinja(value):
                shown.notes.append(f"{name} as in the workflow (its text looks like a Jinja template)")
                continue
            shown.kwargs[name] = value
    return shown


def check_node_inputs(compiled: "CompiledDocument", dag: Any) -> None:
    """A generated file's node calls show the workflow's inputs; refuse to load when they were edited (the
    compiled task runs the workflow, so an edited keyword argument would silently do nothing)."""
    for task in dag.tasks:
        plan_task = getattr(task, "plan_task", None)
        if not plan_task or not callable(getattr(task, "node_inputs", None)):
            continue  # a compiled-task operator, or a mapped task (its inputs are shown in a comment)
        given = task.node_inputs()
        expected = node_call_inputs(compiled, plan_task).kwargs
        if given != expected:
            changed = sorted(n for n in set(given) | set(expected) if given.get(n, ...) != expected.get(n, ...))
            raise InvokeAIProviderError(
                f"task {task.task_id!r}: its inputs {', '.join(changed)} differ from the embedded workflow's; the "
                "workflow decides what runs, so edit it and run `invokeai-airflow compile` again")


# --- writing the file -------------------------------------------------------------------------------


# names the generated file defines or imports itself: a task called "dag" must not replace the DAG
_FILE_NAMES = frozenset({"json", "DAG", "DAG_ID", "GRANULARITY", "DOCUMENT", "KEY", "compiled", "dag", "check_plan",
                         "dag_params", "default_task_args", "load_compiled", "plan_key", "images_alias",
                         "register_compiled", "check_node_inputs"})


def _variable(task_id: str) -> str:
    """A Python name for a task: not a keyword, a builtin or one of the file's own names."""
    import builtins
    import keyword

    name = "".join(c if c.isalnum() or c == "_" else "_" for c in task_id)
    if not name.isidentifier() or name[0].isdigit():
        name = f"task_{name}"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or hasattr(builtins, name) or name in _FILE_NAMES \
            or name.endswith("Operator"):
        name = f"{name}_task"
    return name


def _embedded_json(document: Any) -> str:
    """Indented JSON that a raw triple-quoted string holds verbatim."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    text = "".join(c if c.isprintable() or c == "\n" else f"\\u{ord(c):04x}" for c in text)
    return text.replace("'''", "\\u0027\\u0027\\u0027")


def _wrap(items: list[str], first: str, indent: str, last: str, width: int = WIDTH) -> list[str]:
    """``first + items joined by ', ' + last``, continued on lines that start with ``indent``."""
    lines, line = [], first
    for position, item in enumerate(items):
        piece = item + (", " if position < len(items) - 1 else last)
        if line.strip() and len(line) + len(piece.rstrip()) > width and line != first:
            lines.append(line.rstrip())
            line = indent
        line += piece
    if not items:
        line += last
    lines.append(line.rstrip())
    return lines


def _words(text: str, first: str, then: str) -> list[str]:
    """``text`` word-wrapped: the first line starts with ``first``, the others with ``then``."""
    lines, line = [], first
    for word in text.split(" "):
        if len(line) + 1 + len(word) > WIDTH and line.strip() not in ("", first.strip()):
            lines.append(line)
            line = then
        line += word if line in (first, then) else f" {word}"
    return lines + [line]


def _comment(text: str) -> list[str]:
    return _words(text, "    # ", "    #   ")


def _about_compiled_task(call: TaskCall, labels: str) -> str:
    task = call.task
    if task.kind == SESSIONS:
        return "the batch's sessions: one instance per session for the mapped tasks after it"
    if task.kind == FANOUT:
        return f"the instance list of {', '.join(task.emits_for) or 'the mapped task after it'}"
    if task.kind == COLLECT_TASK:
        return f"collect: {labels}, gathered in iteration order"
    return f"runs together: {labels}"


def _list_argument(name: str, values: list[str]) -> list[str]:
    """``name=[...]`` as items that `_wrap` may break between the list's elements."""
    if not values:
        return [f"{name}=[]"]
    items = [repr(v) for v in values]
    items[0] = f"{name}=[{items[0]}"
    items[-1] += "]"
    return items


def _call_lines(call: TaskCall, compiled: "CompiledDocument", names: dict[str, str], granularity: str) -> list[str]:
    plan = compiled.plan
    task = call.task
    kwargs = dict(call.kwargs)
    args = [f"task_id={kwargs.pop('task_id')!r}"]
    lines: list[str] = []
    labels = ", ".join(plan.node_labels.get(n, n) for n in task.nodes)
    if call.class_name in COMPILED_OPERATORS:
        lines += _comment(_about_compiled_task(call, labels))
    else:
        node = plan.graph["nodes"][task.nodes[0]]
        shown = node_call_inputs(compiled, task.task_id)
        inputs = [f"{name}={value!r}" for name, value in shown.kwargs.items()]
        about = [f"{labels} ({node['type']})"]
        if shown.fed:
            about.append("from other tasks: " + ", ".join(shown.fed))
        if call.expand_from is None:
            args += inputs
        elif inputs:  # Airflow's partial() takes only the operator's declared arguments
            about.append("inputs: " + ", ".join(inputs))
        if shown.notes:
            about.append("; ".join(shown.notes))
        lines += _comment("; ".join(about))
    args += ["plan_key=KEY", f"plan_task={kwargs.pop('plan_task')!r}"]
    if kwargs.pop("queue", None) == "gpu":
        args.append("queue=" + repr(settings().gpu_queue))
    if kwargs.pop("outlets", None) == "images":
        args.append("outlets=[images_alias()]")
    args += [f"{k}={v!r}" for k, v in kwargs.items()]
    var = names[task.task_id]
    if call.expand_from is not None:
        head = f"    {var} = {call.class_name}.partial("
        lines += _wrap(args, head, " " * len(head), ").expand(")
        lines.append(f"        instance={names[call.expand_from]}.output)")
    else:
        head = f"    {var} = {call.class_name}("
        lines += _wrap(args + _list_argument("upstream_tasks", call.upstream), head, " " * len(head), ")")
    others = [u for u in task.upstream if u != call.expand_from]
    if others:
        lines += _wrap([names[u] for u in others], "    [", "     ", f"] >> {var}")
    return lines


def render_dag_file(source: Source, *, dag_id: str, granularity: str = "segment", source_name: str = "",
                    chunk_size: Optional[int] = None) -> str:
    """A readable DAG file: the workflow embedded as indented JSON, then one operator call per planned task."""
    from invokeai_provider.compiler.dag_docs import planned_chunks

    text, stem = document_text(source)
    compiled = load_compiled(source, granularity=granularity, chunk_size=chunk_size)  # from the file: errors name it
    calls = task_calls(compiled)
    plan = compiled.plan
    names = {c.task.task_id: _variable(c.task.task_id) for c in calls}
    classes = sorted({c.class_name for c in calls})
    compiled_ops = [c for c in classes if c in COMPILED_OPERATORS]
    node_ops = [c for c in classes if c not in compiled_ops]
    title = compiled.name or source_name or stem or dag_id
    out = [f'"""{title}: an Airflow DAG compiled from {source_name or "an InvokeAI document"} by `invokeai-airflow compile`.',
           "", f"Granularity: {granularity}. Tasks:", ""]
    for call in calls:
        task = call.task
        what = ", ".join(plan.node_labels.get(n, n) for n in task.nodes) or task.kind
        mapped = f", mapped over {', '.join(plan.axis_labels.get(a, a) for a in task.scope)}" if task.mapped else ""
        out += _words(f"{task.task_id} ({task.kind}, queue {task.queue}{mapped}): {what}", "- ", "  ")
    chunks = planned_chunks(compiled)
    if chunks:
        out += ["", "Mapped items, a chunk per mapped task instance:", ""]
        for mapped_chunks in chunks:
            out += _words(mapped_chunks.describe().replace("`", ""), "- ", "  ")
    out += ["", "The workflow is embedded below (DOCUMENT). Edit the workflow and compile again rather than editing the",
            "tasks: when parsed, this file checks that the workflow still plans exactly these tasks"
            + (", with these node inputs." if node_ops else "."), '"""', "",
            "import json", "", "from airflow.sdk import DAG", "",
            *_wrap([*compiled_ops, "images_alias", "register_compiled"], "from invokeai_provider.airflow.operator import (",
                   "    ", ")"),
            "from invokeai_provider.compiler.dags import check_plan, dag_params, default_task_args, load_compiled, "
            "plan_key"]
    if node_ops:
        out.append("from invokeai_provider.compiler.render import check_node_inputs")
        out += _wrap(node_ops, "from invokeai_provider.operators import (", "    ", ")")
    out += ["", f"DAG_ID = {dag_id!r}", f"GRANULARITY = {granularity!r}",
            *([f"CHUNK_SIZE = {chunk_size!r}  # items per mapped task instance"] if chunk_size else []), "",
            "# The InvokeAI document (its content unchanged, indented).",
            "DOCUMENT = json.loads(r'''", _embedded_json(json.loads(text)), "''')", "",
            "compiled = load_compiled(DOCUMENT, granularity=GRANULARITY"
            + (", chunk_size=CHUNK_SIZE)" if chunk_size else ")")]
    out += _wrap([repr(c.task.task_id) for c in calls], "check_plan(compiled, [", "                      ", "])")
    out += ["KEY = plan_key(DAG_ID, compiled)", "register_compiled(KEY, compiled)", "",
            "with DAG(dag_id=DAG_ID, params=dag_params(compiled), doc_md=compiled.doc_md, schedule=None,",
            '         tags=["invokeai"], default_args=default_task_args()) as dag:']
    for call in calls:
        out += _call_lines(call, compiled, names, granularity)
    if node_ops:
        out += ["", "check_node_inputs(compiled, dag)"]
    return "\n".join(out) + "\n"

"""The readable DAG file ``invokeai-airflow compile`` writes: the workflow embedded unchanged, then one operator
call per planned task, the same calls `invokeai_provider.compiler.dags.compile_dag` makes.
"""

from __future__ import annotations

import json

from invokeai_provider.compiler.dags import Source, document_text, load_compiled, task_calls
from invokeai_provider.config import settings

__all__ = ["render_dag_file"]


def _variable(task_id: str) -> str:
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in task_id)
    return name if name.isidentifier() and not name[0].isdigit() else f"task_{name}"


def render_dag_file(source: Source, *, dag_id: str, granularity: str = "segment", source_name: str = "") -> str:
    """A readable DAG file: the workflow embedded unchanged, then one operator call per planned task.

    The file recompiles the embedded workflow when parsed (cheap, cached) and refuses to load if the
    plan no longer matches the tasks written out, so it never runs a stale plan.
    """
    text, stem = document_text(source)
    compiled = load_compiled(source, granularity=granularity)  # from the file itself: errors name it
    calls = task_calls(compiled)
    plan = compiled.plan
    names = {c.task.task_id: _variable(c.task.task_id) for c in calls}
    classes = sorted({c.class_name for c in calls})
    compiled_ops = [c for c in classes if c in ("BatchSessionsOperator", "CollectReduceOperator",
                                                 "GraphSegmentOperator", "MapInstancesOperator")]
    node_ops = [c for c in classes if c not in compiled_ops]
    title = compiled.name or source_name or stem or dag_id
    out = [f'"""{title}: an Airflow DAG compiled from {source_name or "an InvokeAI document"} by `invokeai-airflow compile`.',
           "", f"Granularity: {granularity}. Tasks:", ""]
    for call in calls:
        task = call.task
        what = ", ".join(plan.node_labels.get(n, n) for n in task.nodes) or task.kind
        mapped = f", mapped over {', '.join(plan.axis_labels.get(a, a) for a in task.scope)}" if task.mapped else ""
        out.append(f"- {task.task_id} ({task.kind}, queue {task.queue}{mapped}): {what}")
    out += ["", "Edit the workflow and compile again rather than editing the tasks: the file checks that the",
            'embedded workflow still plans exactly these tasks."""', "",
            "import json", "", "from airflow.sdk import DAG", "",
            "from invokeai_provider.compiler.dags import check_plan, dag_params, load_compiled, plan_key",
            "from invokeai_provider.airflow.operator import " + ", ".join(compiled_ops + ["images_alias", "register_compiled"])]
    if node_ops:
        out.append("from invokeai_provider.operators import " + ", ".join(node_ops))
    out += ["", f"DAG_ID = {dag_id!r}", f"GRANULARITY = {granularity!r}",
            "# The InvokeAI document, unchanged.",
            f"DOCUMENT = json.loads({json.dumps(text)})", "",
            "compiled = load_compiled(DOCUMENT, granularity=GRANULARITY)",
            f"check_plan(compiled, {[c.task.task_id for c in calls]!r})",
            "KEY = plan_key(DAG_ID, compiled)", "register_compiled(KEY, compiled)", "",
            'with DAG(dag_id=DAG_ID, params=dag_params(compiled), doc_md=compiled.doc_md, schedule=None,',
            '         tags=["invokeai"]) as dag:']
    for call in calls:
        kwargs = dict(call.kwargs)
        args = [f"task_id={kwargs.pop('task_id')!r}", "plan_key=KEY", f"plan_task={kwargs.pop('plan_task')!r}"]
        if kwargs.pop("queue", None) == "gpu":
            args.append("queue=" + repr(settings().gpu_queue))
        if kwargs.pop("outlets", None) == "images":
            args.append("outlets=[images_alias()]")
        args += [f"{k}={v!r}" for k, v in kwargs.items()]
        var = names[call.task.task_id]
        if call.expand_from is not None:
            out.append(f"    {var} = {call.class_name}.partial({', '.join(args)}).expand(")
            out.append(f"        instance={names[call.expand_from]}.output)")
        else:
            out.append(f"    {var} = {call.class_name}({', '.join(args)},")
            out.append(f"        upstream_tasks={list(call.upstream)!r})")
        others = [u for u in call.task.upstream if u != call.expand_from]
        if others:
            out.append(f"    [{', '.join(names[u] for u in others)}] >> {var}")
    return "\n".join(out) + "\n"



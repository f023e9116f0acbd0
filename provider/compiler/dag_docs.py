"""The DAG's documentation (``doc_md``): the workflow's name, description and notes, its form inputs, and the
planned tasks.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from invokeai_provider.compiler.params import ParamSpec
    from invokeai_provider.execution.task_runtime import CompiledDocument
    from invokeai_provider.graph.workflow import Document

__all__ = ["dag_doc_md", "workflow_doc_md"]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _shown_default(schema: Mapping[str, Any]) -> str:
    if "default" not in schema:
        return "*(required)*"
    text = json.dumps(schema["default"], ensure_ascii=False)
    return f"`{text if len(text) <= 60 else text[:57] + '...'}`".replace("|", "\\|")


def workflow_doc_md(document: "Document", specs: list[ParamSpec]) -> str:
    """Markdown for the DAG's doc_md: the workflow's name, description and notes, and its form inputs."""
    workflow = document.workflow
    lines: list[str] = []
    if workflow is not None:
        lines.append(f"# {workflow.name or 'InvokeAI workflow'}")
        details = [f"{k}: {_cell(workflow.raw[k])}" for k in ("author", "version") if workflow.raw.get(k)]
        if details:
            lines += ["", " · ".join(details)]
        if workflow.description:
            lines += ["", workflow.description]
        if workflow.notes:
            lines += ["", "## Notes", "", workflow.notes]
    else:
        lines.append("# InvokeAI graph")
        lines += ["", f"A graph of {len(document.graph.nodes)} nodes."]
    lines += ["", "## Inputs", ""]
    if not specs:
        lines.append("This DAG has no form inputs.")
        return "\n".join(lines) + "\n"
    lines += ["| Input | Param | Node | Field | Default |", "| --- | --- | --- | --- | --- |"]
    for spec in specs:
        node_id, field_name = spec.node_id, spec.field_name
        if spec.kind == "batch" and spec.batch_index is not None and document.batch is not None:
            datum = document.batch.data[spec.batch_index[0]][spec.batch_index[1]]  # type: ignore[index]
            node_id, field_name = datum.node_path, datum.field_name
        node = document.graph.nodes.get(node_id or "")
        label = workflow.node_label(node_id) if workflow is not None and node_id else ""
        node_text = f"{label or node_id} (`{node.get_type()}`)" if node is not None else str(node_id)
        lines.append(f"| {_cell(spec.schema.get('title', spec.name))} | `{spec.name}` | {_cell(node_text)} | "
                     f"`{field_name}` | {_shown_default(spec.schema)} |")
    return "\n".join(lines) + "\n"


def dag_doc_md(compiled: "CompiledDocument", document: "Document") -> str:
    """The workflow's name, description, notes and form, then the planned tasks."""
    if document.workflow is not None:
        lines = [workflow_doc_md(document, compiled.param_specs)]
    else:
        lines = [f"# {compiled.name or 'InvokeAI graph'}"]
    plan = compiled.plan
    lines += ["", f"## Tasks ({plan.granularity} granularity)", "", "| task | queue | mapped over | nodes |",
              "| --- | --- | --- | --- |"]
    for task in plan.tasks:
        mapped = ", ".join(plan.axis_labels.get(a, a) for a in task.scope) if task.mapped else ""
        nodes = ", ".join(plan.node_labels.get(n, n) for n in task.nodes) or task.kind
        lines.append(f"| `{task.task_id}` | {task.queue} | {mapped} | {nodes} |")
    lines += ["", "The `tenant` Param (section *Run*) is the storage prefix of the run's images and usage records: "
              "`<tenant>/runs/...`, `<tenant>/usage/...`."]
    return "\n".join(lines)

"""The DAG's documentation (``doc_md``): the workflow's name, description and notes, its form inputs, and the
planned tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

from invokeai_provider.execution.chunks import chunk_ranges, describe_ranges

if TYPE_CHECKING:
    from invokeai_provider.compiler.params import ParamSpec
    from invokeai_provider.execution.task_runtime import CompiledDocument
    from invokeai_provider.graph.workflow import Document

__all__ = ["MappedChunks", "dag_doc_md", "planned_chunks", "workflow_doc_md"]


@dataclass(frozen=True)
class MappedChunks:
    """How a mapped task's items are grouped: ``items`` None when only the run knows (iterations, batch Params)."""

    task_id: str
    axes: str
    items: Optional[int]
    size: Optional[int]  # None: [invokeai] map_chunk_size at run time
    ranges: tuple[tuple[int, int], ...] = ()

    def describe(self) -> str:
        size = f"{self.size}" if self.size is not None else "[invokeai] map_chunk_size"
        if self.items is None:
            return f"`{self.task_id}` over {self.axes}: chunks of {size} items (the count is known when the run starts)"
        return (f"`{self.task_id}` over {self.axes}: {self.items:,} items in {len(self.ranges):,} chunks of {self.size} "
                f"({describe_ranges(self.ranges)})")


def planned_chunks(compiled: "CompiledDocument") -> list[MappedChunks]:
    """The mapped tasks' chunks. A task mapped over the document's batch alone has a known item count (the
    batch's sessions, as long as no batch Param changes them); the size is the effective one for that count."""
    from invokeai_provider.compiler.plan import SESSION_AXIS
    from invokeai_provider.graph.batch import Batch

    plan = compiled.plan
    result = []
    for task in plan.tasks:
        if not task.mapped:
            continue
        axes = ", ".join(plan.axis_labels.get(a, a) for a in task.scope)
        count = Batch.model_validate(compiled.batch).session_count() if (
            task.scope == [SESSION_AXIS] and compiled.batch) else None
        if count is None:
            result.append(MappedChunks(task.task_id, axes, None, compiled.chunk_size))
            continue
        size = compiled.effective_chunk_size(count)
        result.append(MappedChunks(task.task_id, axes, count, size, tuple(chunk_ranges(count, size))))
    return result


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
    chunks = planned_chunks(compiled)
    if chunks:
        lines += ["", "## Mapped items", "", "Each mapped task instance runs a chunk of items in one engine call:", ""]
        lines += [f"- {c.describe()}" for c in chunks]
    lines += ["", "The `tenant` Param (section *Run*) is the storage prefix of the run's images and usage records: "
              "`<tenant>/runs/...`, `<tenant>/usage/...`."]
    return "\n".join(lines)

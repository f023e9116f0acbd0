"""Every workflow JSON file in a folder becomes a DAG (dag_id from the file name).

A DAG file calls `load_workflow_dags(folder, globals())`. A workflow that does not compile must not take
the other DAGs down with it: it becomes a placeholder whose serialisation fails with the compile error,
so Airflow's DAG processor records an import error under the workflow's own path (naming the file, node
and field) and stores every other DAG. When a worker parses the file to run one task, only the DAG that
task belongs to is compiled (`get_parsing_context`); each compile goes through
`invokeai_provider.compiler.dags.compile_dag`, whose in-process cache (keyed by the document's content hash
and granularity) spares re-parsing and re-planning a workflow the same process compiled before. Nothing is
written to disk.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Optional, Union

from airflow.sdk import DAG

from invokeai_provider.compiler.dags import dag_id_for
from invokeai_provider.errors import InvokeAIProviderError

log = logging.getLogger(__name__)

class WorkflowCompileError(InvokeAIProviderError):
    """A workflow file in the DAG folder does not compile."""


class BrokenWorkflowDAG(DAG):
    """Stands in for a workflow that does not compile; serialising it raises the compile error.

    Airflow's DAG processor turns a serialisation error into an import error keyed by the DAG's
    ``relative_fileloc``, which `validate` points at the workflow file, so the error is listed under that
    file and the DAG file's other DAGs load normally.
    """

    def __init__(self, *, workflow_path: Path, relative_path: str, error: Exception, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.invokeai_workflow_path = str(workflow_path)
        self.invokeai_relative_path = relative_path
        self.invokeai_error = f"{relative_path}: {type(error).__name__}: {error}"

    def validate(self) -> None:
        super().validate()
        self.relative_fileloc = self.invokeai_relative_path

    @classmethod
    def get_serialized_fields(cls) -> frozenset[str]:
        return frozenset(super().get_serialized_fields() | {"invokeai_compile_error"})

    @property
    def invokeai_compile_error(self) -> str:
        raise WorkflowCompileError(self.invokeai_error)


def load_workflow_dags(folder: str | Path, namespace: Optional[MutableMapping[str, Any]] = None, *,
                       granularity: str = "segment", dag_id_prefix: str = "",
                       chunk_size: Union[int, Mapping[str, int], None] = None,
                       **dag_kwargs: Any) -> dict[str, DAG]:
    """Compiles every ``*.json`` in ``folder`` into a DAG and puts it in ``namespace`` (a module's globals).

    :param granularity: ``segment`` (default) or ``node``, for every DAG of the folder
    :param chunk_size: items per mapped task instance, for every DAG, or per dag_id (a mapping; the DAGs it does
        not name use ``[invokeai] map_chunk_size``)
    :param dag_kwargs: passed to each DAG (schedule, default_args, tags, ...)
    """
    from airflow.sdk import get_parsing_context

    from invokeai_provider.compiler.dags import compile_dag

    folder = Path(folder)
    wanted = get_parsing_context().dag_id  # set when a worker parses the file to run one task
    dags: dict[str, DAG] = {}
    base = folder.parent
    for path in sorted(folder.glob("*.json")):
        dag_id = dag_id_for(path, dag_id_prefix)
        if wanted is not None and dag_id != wanted:
            continue
        try:
            size = chunk_size.get(dag_id) if isinstance(chunk_size, Mapping) else chunk_size
            dag = compile_dag(path, dag_id=dag_id, granularity=granularity, chunk_size=size, **dag_kwargs)
        except Exception as exc:  # one broken workflow must not hide the others
            relative = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
            log.error("workflow %s does not compile: %s", relative, exc)
            dag = BrokenWorkflowDAG(dag_id=dag_id, workflow_path=path, relative_path=relative, error=exc,
                                    schedule=None, tags=["invokeai", "invokeai-broken"],
                                    doc_md=f"**This workflow does not compile.**\n\n```\n{exc}\n```")
        dags[dag_id] = dag
        if namespace is not None:
            namespace[f"dag_{re.sub(r'[^A-Za-z0-9_]', '_', dag_id)}"] = dag
    return dags

"""Running a compiled DAG through Airflow on the embedded default: SQLite, a local dags folder, dag.test().

`invokeai-airflow run` uses this: it points Airflow at a home of its own (``./.airflow`` unless told
otherwise), migrates the SQLite database once, writes a DAG file that compiles the workflow, and runs one
DAG run with the given conf. Airflow validates the conf against the DAG's Params before any task runs.
Airflow reads its configuration when first imported, so `prepare_home` must run before that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

DAG_FILE_TEMPLATE = '''"""Airflow DAG file written by `invokeai-airflow run`: compiles {source_name} into DAG {dag_id!r}."""

from invokeai_provider.compiler.dags import compile_dag

dag = compile_dag({source!r}, dag_id={dag_id!r}, granularity={granularity!r})
'''


def prepare_home(home: Path) -> Path:
    """Points this process's Airflow configuration at ``home`` (SQLite, own dags folder, no examples)."""
    home = home.resolve()
    (home / "dags").mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(home / "dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    # one dag.test() run in this process: a failed task fails the run at once instead of waiting to retry
    os.environ.setdefault("AIRFLOW__INVOKEAI__TASK_RETRIES", "0")
    if "airflow.configuration" in sys.modules:
        raise RuntimeError("Airflow was imported before its home was prepared")
    return home


def migrate_database(home: Path) -> None:
    """``airflow db migrate`` once per home (a marker file records that it ran)."""
    marker = home / ".invokeai-db-migrated"
    if marker.exists() and (home / "airflow.db").exists():
        return
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=os.environ.copy(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    marker.write_text("ok\n")


def write_dag_file(home: Path, source: Path, dag_id: str, granularity: str) -> Path:
    path = home / "dags" / f"{dag_id}.py"
    path.write_text(DAG_FILE_TEMPLATE.format(source=str(source.resolve()), source_name=source.name, dag_id=dag_id,
                                             granularity=granularity))
    return path


@dataclass
class RunResult:
    dag_id: str
    run_id: str
    state: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    asset_events: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    records: dict[str, list[Any]] = field(default_factory=dict)  # task id -> invokeai_records by map index

    def to_dict(self) -> dict[str, Any]:
        return {"dag_id": self.dag_id, "run_id": self.run_id, "state": self.state, "tasks": self.tasks,
                "images": self.images, "asset_events": self.asset_events, "outputs": self.outputs,
                "records": self.records}


def run_dag(home: Path, dag_id: str, conf: Optional[dict[str, Any]] = None) -> RunResult:
    """Runs one DAG run with dag.test() and reads back task states, image records and asset events."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(home / "dags"))
    dag = bag.get_dag(dag_id)
    if dag is None:
        detail = "\n".join(f"{k}: {v.strip().splitlines()[-1]}" for k, v in bag.import_errors.items())
        raise RuntimeError(f"DAG {dag_id!r} did not load from {home / 'dags'}" + (f":\n{detail}" if detail else ""))
    from airflow.sdk.exceptions import ParamValidationError

    try:
        dag_run = dag.test(run_conf=conf or {})
    except ParamValidationError as exc:
        from invokeai_provider.errors import InvokeAIProviderError

        raise InvokeAIProviderError(f"DAG {dag_id!r}: the run conf does not fit the DAG's Params, no run was "
                                    f"started: {exc}") from None
    return collect_run(dag_id, dag_run.run_id, str(dag_run.state))


def collect_run(dag_id: str, run_id: str, state: str) -> RunResult:
    """Task instances, image records (XCom ``image_records``), outputs and asset events of one run."""
    from airflow.models import TaskInstance
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from invokeai_provider.airflow.operator import IMAGE_RECORDS_KEY
    from invokeai_provider.execution.task_runtime import RECORDS_KEY

    result = RunResult(dag_id, run_id, state)
    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        for ti in sorted(tis, key=lambda t: (t.start_date is None, t.start_date or 0, t.task_id, t.map_index)):
            result.tasks.append({"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
                                 "queue": ti.queue, "label": ti.rendered_map_index, "operator": ti.operator,
                                 "try_number": ti.try_number})
        xcoms = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
        for xcom in sorted(xcoms, key=lambda x: (x.task_id, x.map_index, x.key)):
            value = XComModel.deserialize_value(xcom)
            if xcom.key == RECORDS_KEY:
                result.records.setdefault(xcom.task_id, []).append(value)
            elif xcom.key == IMAGE_RECORDS_KEY:
                result.images.extend(value)
            elif xcom.key == "return_value" and isinstance(value, dict) and value.get("outputs"):
                result.outputs[f"{xcom.task_id}[{xcom.map_index}]" if xcom.map_index >= 0 else xcom.task_id] = \
                    value["outputs"]
        events = session.query(AssetEvent).filter(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
        for event in sorted(events, key=lambda e: e.id):
            result.asset_events.append({"asset": event.asset.uri, "name": event.asset.name, "task_id": event.source_task_id,
                                        "map_index": event.source_map_index, "extra": event.extra})
    result.images.sort(key=lambda r: (r.get("task_id") or "", r.get("map_index") if r.get("map_index") is not None
                                      else -1, r["image_name"]))
    return result


def patch_document(raw: Any, overrides: list[tuple[str, str, Any]]) -> Any:
    """``NODE_ID.FIELD=VALUE`` edits for a graph (node dicts) or a saved workflow (input values)."""
    from invokeai_provider.errors import NodeNotFoundError

    raw = json.loads(json.dumps(raw))
    if isinstance(raw.get("nodes"), list):
        nodes = {str(n.get("id")): n for n in raw["nodes"]}
        for node_id, field_name, value in overrides:
            if node_id not in nodes:
                raise NodeNotFoundError(f"--set {node_id}.{field_name}: no node {node_id!r} in the workflow",
                                        node_id=node_id)
            inputs = nodes[node_id].setdefault("data", {}).setdefault("inputs", {})
            inputs.setdefault(field_name, {"name": field_name})["value"] = value
        return raw
    from invokeai_provider.cli.overrides import apply_overrides

    return apply_overrides(raw, overrides)

"""Bad input through Airflow: refused at the trigger where a Param can say so, else by the run's first task, for
good (no retry) and before any GPU work; in every case no image, tensor or manifest is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import REPO_ROOT, sd1_graph

TINY_SD1: Any = {"key": "tiny-sd1", "hash": "", "name": "tiny-sd1", "base": "sd-1", "type": "main"}
SD15_WORKFLOW = REPO_ROOT / "dags" / "workflows" / "sd15-text-to-image.json"


def written(artifact_root: Path, dag_id: str) -> list[Path]:
    return [p for p in (artifact_root / "default" / "runs" / dag_id).rglob("*") if p.is_file()]


UNKNOWN_KEYS_SCRIPT = """
import shutil
dags = home / "dags"
shutil.copy(Path(os.environ["EXAMPLE_DAGS"]) / "invokeai_workflows.py", dags / "invokeai_workflows.py")
(dags / "workflows").mkdir(exist_ok=True)
shutil.copy(Path(os.environ["EXAMPLE_DAGS"]) / "workflows" / "sd15-text-to-image.json", dags / "workflows")
result = run_dag(home, "sd15-text-to-image", {"model": "tiny-sd1", "frobnicate": 1, "width": 64})
print(json.dumps(result.to_dict(), default=str))
"""


def test_unknown_conf_keys_fail_the_first_task_for_good_naming_them(airflow_python, tmp_path: Path) -> None:
    """Triggered as the REST API would (the CLI's `run` refuses unknown keys itself): Airflow accepts the conf, the
    run's task refuses it before any work, on its first try although the DAG gives tasks two retries."""
    run, output = airflow_python(UNKNOWN_KEYS_SCRIPT, logs=True, extra_env={
        "INVOKEAI_AIRFLOW_HOME": str(tmp_path / "home"), "EXAMPLE_DAGS": str(REPO_ROOT / "dags"),
        "AIRFLOW__INVOKEAI__TASK_RETRIES": "2", "AIRFLOW__INVOKEAI__ARTIFACT_ROOT": (tmp_path / "artifacts").as_uri()})
    assert run["state"] == "failed" and run["images"] == []
    tries = {t["task_id"]: (t["state"], t["try_number"]) for t in run["tasks"]}
    assert set(tries.values()) == {("failed", 1)}, tries  # one task, failed on its first try
    assert ("run conf: unknown keys 'frobnicate', 'width' (did you mean 'noise_width'?); this DAG's Params are: "
            in output), output[-3000:]
    assert written(tmp_path / "artifacts", "sd15-text-to-image") == []


def test_an_over_long_prompt_is_refused_at_the_trigger(airflow_run, artifact_root: Path) -> None:
    result = airflow_run(SD15_WORKFLOW, "model=tiny-sd1", f"positive_prompt={'a cat ' * 2000}",
                         dag_id="bad_long_prompt", expect_failure=True)
    assert result["returncode"] != 0
    assert "positive_prompt" in result["stderr"] and "10000" in result["stderr"]
    assert written(artifact_root, "bad_long_prompt") == []


def _width_batch(tmp_path: Path) -> Path:
    graph: dict[str, Any] = sd1_graph(TINY_SD1, steps=2)
    graph["nodes"]["width"] = {"id": "width", "type": "integer", "value": 64}
    graph["edges"].append({"source": {"node_id": "width", "field": "value"},
                           "destination": {"node_id": "noise", "field": "width"}})
    del graph["nodes"]["noise"]["width"]
    document = {"batch": {"graph": graph, "runs": 1,
                          "data": [[{"node_path": "width", "field_name": "value", "items": [64, 72]}]]}}
    path = tmp_path / "width-batch.json"
    path.write_text(json.dumps(document))
    return path


def test_a_batch_width_of_100_is_refused_at_the_trigger(airflow_run, artifact_root: Path, tmp_path: Path) -> None:
    result = airflow_run(_width_batch(tmp_path), "integer_value_batch=[64, 100]", dag_id="bad_batch_width",
                         expect_failure=True)
    assert result["returncode"] != 0
    assert "integer_value_batch" in result["stderr"] and "not a multiple of 8" in result["stderr"]
    assert written(artifact_root, "bad_batch_width") == []

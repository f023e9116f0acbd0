"""The workflow-folder DAG factory, generated DAG files, and what parsing a DAG file costs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO_ROOT

DAGS = REPO_ROOT / "dags"

PARSE_SCRIPT = """
import time
started = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
from airflow.dag_processing.processor import _serialize_dags
import structlog
bag = DagBag(os.environ["PARSE_FOLDER"])
serialized, serialization_errors = _serialize_dags(bag, structlog.get_logger())
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(json.dumps({"dags": {d: {"tasks": sorted(t.task_id for t in dag.tasks), "class": type(dag).__name__,
                               "operators": sorted({type(t).__name__ for t in dag.tasks})}
                           for d, dag in bag.dags.items()},
                  "serialized": sorted(s.dag_id for s in serialized), "serialization_errors": serialization_errors,
                  "import_errors": dict(bag.import_errors), "heavy_modules": heavy}))
"""


def test_parsing_the_dags_folder_imports_no_torch_and_serialises_every_dag(airflow_python) -> None:
    result = airflow_python(PARSE_SCRIPT, extra_env={"PARSE_FOLDER": str(DAGS)})
    assert result["import_errors"] == {} and result["serialization_errors"] == {}
    workflows = {p.stem for p in (DAGS / "workflows").glob("*.json")}
    assert workflows <= set(result["serialized"])
    assert "handwritten_text_to_image" in result["serialized"]
    assert result["heavy_modules"] == []
    assert result["dags"]["sd15-text-to-image"]["operators"] == ["GraphSegmentOperator"]


def test_a_broken_workflow_is_an_import_error_of_its_own_file(tmp_path: Path, airflow_python) -> None:
    folder = tmp_path / "dags"
    (folder / "workflows").mkdir(parents=True)
    shutil.copy(DAGS / "invokeai_workflows.py", folder / "invokeai_workflows.py")
    good = json.loads((DAGS / "workflows" / "prompt-variations.json").read_text())
    (folder / "workflows" / "good.json").write_text(json.dumps(good))
    broken = json.loads(json.dumps(good))
    edge = next(e for e in broken["edges"] if e.get("type", "default") == "default")
    edge["targetHandle"] = "no_such_field"
    (folder / "workflows" / "broken.json").write_text(json.dumps(broken))

    result = airflow_python(PARSE_SCRIPT, extra_env={"PARSE_FOLDER": str(folder)})
    assert result["import_errors"] == {}  # the DAG file itself is fine
    assert result["serialized"] == ["good"]
    [(path, error)] = result["serialization_errors"].items()
    assert path == "workflows/broken.json"
    assert "no_such_field" in error and edge["target"] in error


def test_compile_writes_a_readable_dag_file_that_runs(tmp_path: Path, airflow_env, airflow_python) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    out = home / "dags" / "generated_sd15.py"
    result = subprocess.run([sys.executable, "-m", "invokeai_provider.cli", "compile",
                             str(DAGS / "workflows" / "sd15-text-to-image.json"), "--dag-id", "generated_sd15",
                             "--granularity", "node", "-o", str(out)], env=airflow_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "DenoiseLatentsOperator(task_id=" in text and "queue='gpu'" in text
    assert "check_plan(compiled, [" in text
    compile(text, str(out), "exec")
    run = airflow_python("""
result = run_dag(home, "generated_sd15", {"model": "tiny-sd1", "noise_width": 64, "noise_height": 64,
                                          "denoise_steps": 2})
print(json.dumps(result.to_dict(), default=str))
""", extra_env={"INVOKEAI_AIRFLOW_HOME": str(home)})
    assert run["state"] == "success"
    assert len(run["images"]) == 1
    assert len(run["tasks"]) == text.count("plan_key=KEY")

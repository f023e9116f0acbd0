"""Running compiled DAGs through real Airflow (dag.test on SQLite) in a subprocess per run.

Airflow fixes its home and database when first imported, so each run happens in a fresh
``invokeai-airflow run --json`` process pointed at this session's Airflow home, model root and
artifact root. The first run migrates the SQLite database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from helpers import REPO_ROOT

CLI = [sys.executable, "-m", "invokeai_provider.cli"]


class AirflowRunError(AssertionError):
    pass


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory, tiny_registry) -> dict[str, str]:
    root = tmp_path_factory.mktemp("airflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "INVOKEAI_AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__INVOKEAI__MODEL_ROOT": str(tiny_registry.root.as_uri()),
        "AIRFLOW__INVOKEAI__ARTIFACT_ROOT": (root / "artifacts").as_uri(),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "OMP_NUM_THREADS": "1",
    })
    return env


@pytest.fixture(scope="session")
def artifact_root(airflow_env: dict[str, str]) -> Path:
    return Path(airflow_env["AIRFLOW__INVOKEAI__ARTIFACT_ROOT"].removeprefix("file://"))


def run_cli(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


@pytest.fixture(scope="session")
def airflow_run(airflow_env: dict[str, str]) -> Callable[..., dict[str, Any]]:
    """Runs a document through Airflow; returns the run (tasks, images, asset events, outputs)."""

    def run(document: Path, *sets: str, granularity: str = "segment", dag_id: Optional[str] = None,
            expect_failure: bool = False, extra_env: Optional[dict[str, str]] = None) -> dict[str, Any]:
        args = ["run", str(document), "--json", "--granularity", granularity]
        if dag_id:
            args += ["--dag-id", dag_id]
        for assignment in sets:
            args += ["--set", assignment]
        result = run_cli({**airflow_env, **(extra_env or {})}, *args)
        if expect_failure:
            return {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
        if result.returncode != 0 or not result.stdout.strip():
            raise AirflowRunError(f"run failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
        return json.loads(result.stdout)

    return run


PREAMBLE = """
import json, os, sys
from pathlib import Path
from invokeai_provider.cluster.local_airflow import prepare_home, migrate_database, run_dag, collect_run
home = prepare_home(Path(os.environ["INVOKEAI_AIRFLOW_HOME"]))
migrate_database(home)
"""


@pytest.fixture(scope="session")
def airflow_python(airflow_env: dict[str, str]) -> Callable[[str], Any]:
    """Runs Python code in a fresh process whose Airflow points at the session's home; returns its JSON
    output (the last line of stdout), and with ``logs=True`` also everything it printed (the task logs)."""

    def run(code: str, extra_env: Optional[dict[str, str]] = None, logs: bool = False) -> Any:
        env = {**airflow_env, **(extra_env or {})}
        result = subprocess.run([sys.executable, "-c", PREAMBLE + code], env=env, capture_output=True, text=True,
                                timeout=600, cwd=REPO_ROOT)
        if result.returncode != 0:
            raise AirflowRunError(f"script failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
        value = json.loads(result.stdout.strip().splitlines()[-1])
        return (value, result.stdout + result.stderr) if logs else value

    return run

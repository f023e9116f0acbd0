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

from helpers import REPO_ROOT, png_pixels, task_states, uri_path

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


# --- one workflow in the engine and through Airflow -------------------------------------------------------------


@pytest.fixture(scope="session")
def upload_image(artifact_root: Path) -> Callable[[Any], str]:
    """Uploads a picture (a uint8 array) to the default tenant's library, as `images upload` does; returns its
    image name."""
    from invokeai_provider.storage.base import backend_for_uri
    from invokeai_provider.storage.library.images import ImageLibrary

    library = ImageLibrary(backend_for_uri(artifact_root.as_uri()), "default")

    def upload(array: Any) -> str:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return library.upload(buffer.getvalue())["image_name"]

    return upload


@pytest.fixture(scope="session")
def engine_image(artifact_root: Path) -> Callable[[dict[str, Any], str], Any]:
    """Runs a workflow document in the engine, as a worker runs it, over the session's library and the given model
    root; returns its ``decode`` node's image (an RGB array)."""

    def run(document: dict[str, Any], model_root: str) -> Any:
        import io

        import numpy as np
        from PIL import Image

        from invokeai_provider.core.context import RunContext
        from invokeai_provider.graph.engine import run_graph
        from invokeai_provider.graph.workflow import load_document
        from invokeai_provider.models.model_manager.manager import ModelManager
        from invokeai_provider.models.model_manager.registry import ModelRegistry
        from invokeai_provider.storage.base import RunStore, backend_for_uri

        graph = load_document(json.dumps(document)).graph
        context = RunContext(store=RunStore(backend_for_uri(artifact_root.as_uri()), dag_id="engine", run_id="r1"),
                             services={"models": ModelManager(ModelRegistry(model_root))})
        [decoded] = run_graph(graph, context).outputs_of("decode")
        png = context.store.read("images", decoded.image.image_name)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    return run


def airflow_image(run: dict[str, Any], size: int) -> tuple[dict[str, Any], Any]:
    """A successful Airflow run's ``decode`` image: its record and its pixels, checked to be size x size and not
    flat."""
    import numpy as np
    from PIL import Image

    assert run["state"] == "success" and set(task_states(run).values()) == {"success"}
    [image] = [i for i in run["images"] if i["node_id"] == "decode"]
    assert (image["width"], image["height"]) == (size, size)
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
    with Image.open(uri_path(image["uri"])) as png:
        return image, np.asarray(png.convert("RGB"))


@pytest.fixture
def engine_and_airflow(engine_image, airflow_run, tmp_path: Path) -> Callable[..., tuple[dict[str, Any], Any]]:
    """Runs a workflow document in the engine and through `invokeai-airflow run` (as DAG ``dag_id``) over one model
    root and checks that Airflow made the engine's image (within 1 per channel: the same graph, the same image);
    returns the Airflow image's record and the engine's image."""

    def run(document: dict[str, Any], dag_id: str, model_root: str, size: int) -> tuple[dict[str, Any], Any]:
        import numpy as np

        path = tmp_path / f"{dag_id}.json"
        path.write_text(json.dumps(document))
        engine = engine_image(document, model_root)
        image, through_airflow = airflow_image(
            airflow_run(path, dag_id=dag_id, extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": model_root}), size)
        assert np.abs(through_airflow.astype(int) - engine.astype(int)).max() <= 1
        return image, engine

    return run

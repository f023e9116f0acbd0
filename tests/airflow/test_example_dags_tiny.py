"""Every example DAG in dags/ runs offline after the README's set-up: in a model root that holds only what
``models install-tiny main`` with ``--base sdxl`` and ``--base flux`` put there, each example runs with its own
default model (no ``model`` in the conf), small and with few steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO_ROOT, png_pixels, task_states, uri_path

DAGS = REPO_ROOT / "dags"
WORKFLOWS = {"sd15-text-to-image": "sd-1", "sdxl-text-to-image": "sdxl", "prompt-list-batch": "sd-1",
             "flux-text-to-image": "flux", "sd3-text-to-image": "sd-3", "cogview4-text-to-image": "cogview4",
             "z-image-text-to-image": "z-image"}
SIZE = 64


def run_cli_ok(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "invokeai_provider.cli", *args], env=env, capture_output=True,
                            text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def tiny_root(airflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model root with the two tiny main models, installed through the CLI as the README says."""
    root = tmp_path_factory.mktemp("install-tiny-root")
    run_cli_ok(airflow_env, "models", "install-tiny", "main", "--model-root", str(root))
    run_cli_ok(airflow_env, "models", "install-tiny", "main", "--base", "sdxl", "--model-root", str(root))
    run_cli_ok(airflow_env, "models", "install-tiny", "main", "--base", "flux", "--model-root", str(root))
    run_cli_ok(airflow_env, "models", "install-tiny", "main", "--base", "sd-3", "--model-root", str(root))
    run_cli_ok(airflow_env, "models", "install-tiny", "main", "--base", "cogview4", "--model-root", str(root))
    run_cli_ok(airflow_env, "models", "install-tiny", "main", "--base", "z-image", "--model-root", str(root))
    return root.as_uri()


def small_conf(path: Path) -> list[str]:
    """Size, steps and (for a batch) two-item lists, under whatever names the workflow gives its Params; the
    model stays the workflow's default."""
    from invokeai_provider.cli.demo import DEMO_FAMILIES, demo_sets
    from invokeai_provider.compiler.params import param_specs
    from invokeai_provider.graph.workflow import load_document

    inputs = next((family.inputs for family in DEMO_FAMILIES.values() if family.workflow == path.name), None)
    sets = demo_sets(path, {"steps": 2, "width": SIZE, "height": SIZE}, inputs)
    specs = param_specs(load_document(path.read_text()), model_names=lambda node_type, field: [])
    sets += [f"{s.name}={json.dumps(s.schema['default'][:2])}" for s in specs if s.kind == "batch"]
    return sets


def default_model(path: Path) -> str:
    from invokeai_provider.compiler.params import param_specs
    from invokeai_provider.graph.workflow import load_document

    [model] = [s for s in param_specs(load_document(path.read_text()), model_names=lambda node_type, field: [])
               if s.kind == "model" and s.schema.get("default")]  # the main; optional parts have none
    return model.schema["default"]


@pytest.mark.parametrize("dag_id", sorted(WORKFLOWS))
def test_example_workflow_runs_with_its_tiny_default_model(dag_id: str, tiny_root: str, airflow_run) -> None:
    from invokeai_provider.models.testing.tiny_catalog import default_name, tiny_model

    path = DAGS / "workflows" / f"{dag_id}.json"
    model = default_model(path)
    assert model == default_name(tiny_model("main", WORKFLOWS[dag_id]))  # what install-tiny names it
    run = airflow_run(path, *small_conf(path), dag_id=f"tiny-{dag_id}",
                      extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": tiny_root})
    assert run["state"] == "success" and set(task_states(run).values()) == {"success"}
    assert run["images"] and all((i["width"], i["height"]) == (SIZE, SIZE) for i in run["images"])
    for image in run["images"]:
        assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
        assert f'"{model}"' in json.dumps(image["metadata"]) or _graph_names(image, model)


def _graph_names(image: dict[str, Any], model: str) -> bool:
    """The PNG's embedded graph names the model it ran with."""
    from PIL import Image

    with Image.open(uri_path(image["uri"])) as png:
        return f'"name": "{model}"' in json.dumps(json.loads(png.text["invokeai_graph"]))


HANDWRITTEN_SCRIPT = """
import shutil
shutil.copy(Path(os.environ["EXAMPLE_DAGS_SOURCE"]) / "handwritten_text_to_image.py", home / "dags")
result = run_dag(home, "handwritten_text_to_image", {"steps": 2, "width": 64, "height": 64})
print(json.dumps(result.to_dict(), default=str))
"""


def test_handwritten_dag_runs_with_its_tiny_default_model(tiny_root: str, airflow_python,
                                                          tmp_path: Path) -> None:
    run = airflow_python(HANDWRITTEN_SCRIPT, extra_env={"INVOKEAI_AIRFLOW_HOME": str(tmp_path / "home"),
                                                        "EXAMPLE_DAGS_SOURCE": str(DAGS),
                                                        "AIRFLOW__INVOKEAI__MODEL_ROOT": tiny_root})
    assert run["state"] == "success", run["tasks"]
    [image] = run["images"]
    assert (image["width"], image["height"]) == (64, 64) and image["metadata"]["model"]["name"] == "tiny-sd15"

"""The example DAGs in dags/ run through Airflow with the tiny models: the SDXL workflow, the prompt-list
batch workflow and the hand-written DAG built from per-node operators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO_ROOT, png_pixels, task_states, uri_path

DAGS = REPO_ROOT / "dags"
SDXL_WORKFLOW = DAGS / "workflows" / "sdxl-text-to-image.json"
SD15_WORKFLOW = DAGS / "workflows" / "sd15-text-to-image.json"
PROMPT_LIST_WORKFLOW = DAGS / "workflows" / "prompt-list-batch.json"
HANDWRITTEN_DAG = DAGS / "handwritten_text_to_image.py"

SDXL_PARAMS = ["positive_prompt", "negative_prompt", "model", "seed", "steps", "cfg_scale", "scheduler", "width",
               "height"]
PROMPT_LIST_PARAMS = ["negative_prompt", "model", "steps", "width", "height", "positive_prompt_value_batch",
                      "seed_value_batch"]
HANDWRITTEN_PARAMS = ["prompt", "negative_prompt", "model", "seed", "steps", "width", "height"]


def specs_of(path: Path) -> dict[str, Any]:
    from invokeai_provider.compiler.params import param_specs
    from invokeai_provider.graph.workflow import load_document

    return {spec.name: spec for spec in param_specs(load_document(path.read_text()))}


def png_text(record: dict[str, Any]) -> tuple[tuple[int, int], dict[str, str]]:
    """The PNG's size and text chunks; the file must exist."""
    from PIL import Image

    path = uri_path(record["uri"])
    assert path.is_file(), f"image file {path} is missing"
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size, dict(image.text)


# --- the workflow files themselves -----------------------------------------------------------------


def test_sdxl_workflow_form() -> None:
    specs = specs_of(SDXL_WORKFLOW)
    assert list(specs) == SDXL_PARAMS
    defaults = {name: spec.schema.get("default") for name, spec in specs.items()}
    assert defaults["model"] == "tiny-sdxl"
    assert (defaults["width"], defaults["height"], defaults["steps"]) == (1024, 1024, 30)
    assert specs["model"].kind == "model"
    assert {spec.schema["section"] for name, spec in specs.items() if "prompt" in name} == {"Prompt"}
    assert {spec.schema["section"] for name, spec in specs.items() if "prompt" not in name} == {"Settings"}
    assert "dpmpp_2m_k" in specs["scheduler"].schema["enum"]
    raw = json.loads(SDXL_WORKFLOW.read_text())
    assert raw["meta"]["version"] == "4.0.0"
    loader = next(n for n in raw["nodes"] if n["id"] == "model_loader")
    assert loader["data"]["type"] == "sdxl_model_loader"
    model = next(n for n in raw["nodes"] if n["id"] == "model")  # an "Any Model" node feeds the loader and metadata
    assert model["data"]["inputs"]["model"]["value"]["base"] == "sdxl"


def test_prompt_list_workflow_form() -> None:
    from invokeai_provider.graph.workflow import load_document

    specs = specs_of(PROMPT_LIST_WORKFLOW)
    assert list(specs) == PROMPT_LIST_PARAMS
    prompts, seeds = specs["positive_prompt_value_batch"], specs["seed_value_batch"]
    for spec in (prompts, seeds):
        assert spec.kind == "batch"
        assert spec.schema["section"] == "Batch"
    assert len(prompts.schema["default"]) == len(seeds.schema["default"]) == 8
    assert len(set(prompts.schema["default"])) == 8
    assert all(isinstance(s, int) for s in seeds.schema["default"])
    assert specs["model"].schema["default"] == "tiny-sd15"
    # prompts and seeds share a batch group: zipped, not a product
    batch = load_document(PROMPT_LIST_WORKFLOW.read_text()).batch
    assert batch is not None and len(batch.data) == 1
    assert sorted((d.node_path, d.field_name) for d in batch.data[0]) == [("positive", "value"), ("seed", "value")]


# --- runs through Airflow ---------------------------------------------------------------------------


def test_sdxl_workflow_runs(airflow_run) -> None:
    prompt = "a paper boat on a puddle, macro photograph"
    run = airflow_run(SDXL_WORKFLOW, "model=tiny-sdxl", "width=64", "height=96", "steps=2", "seed=7",
                      "cfg_scale=5.5", "scheduler=euler", f"positive_prompt={prompt}")
    assert run["state"] == "success"
    assert run["tasks"] and set(task_states(run).values()) == {"success"}
    assert [t["queue"] for t in run["tasks"] if t["operator"] == "GraphSegmentOperator"] == ["gpu"]
    [image] = run["images"]
    assert (image["width"], image["height"]) == (64, 96)
    assert not image["is_intermediate"]
    size, text = png_text(image)
    assert size == (64, 96)
    assert "invokeai_metadata" in text
    metadata = json.loads(text["invokeai_metadata"])
    assert metadata["generation_mode"] == "sdxl_txt2img"
    assert metadata["positive_prompt"] == prompt
    assert (metadata["width"], metadata["height"], metadata["steps"], metadata["seed"]) == (64, 96, 2, 7)
    assert metadata["cfg_scale"] == 5.5
    assert metadata == image["metadata"]
    graph = json.loads(text["invokeai_graph"])
    assert graph["nodes"]["model_loader"]["type"] == "sdxl_model_loader"
    assert graph["nodes"]["scheduler"]["scheduler"] == "euler"
    assert len(set(png_pixels(image["uri"]))) > 1  # not a blank image


def test_run_sets_a_model_field_by_name(airflow_run) -> None:
    """`run --set NODE_ID.model=NAME` names a registered model by name, as `graph run` does (the workflow's own
    model, tiny-sd15, is not installed in the test model root)."""
    run = airflow_run(SD15_WORKFLOW, "model.model=tiny-sd1", "noise_width=64", "noise_height=64",
                      "denoise_steps=2")
    assert run["state"] == "success"
    [image] = run["images"]
    graph = json.loads(png_text(image)[1]["invokeai_graph"])
    assert graph["nodes"]["model"]["model"]["name"] == "tiny-sd1"


def test_run_refuses_an_unknown_model_name_naming_the_node_and_field(airflow_run) -> None:
    result = airflow_run(SD15_WORKFLOW, "model.model=no-such-model", expect_failure=True)
    assert result["returncode"] != 0
    assert "node model (model_identifier): field model:" in result["stderr"]
    assert "no-such-model" in result["stderr"]


def test_prompt_list_batch_one_image_per_prompt(airflow_run) -> None:
    prompts = ["a red apple on a plate", "a blue boat at sea", "a green hill under clouds"]
    seeds = [11, 22, 33]
    run = airflow_run(PROMPT_LIST_WORKFLOW, "model=tiny-sd1", "width=64", "height=64", "steps=2",
                      f"positive_prompt_value_batch={json.dumps(prompts)}", f"seed_value_batch={json.dumps(seeds)}",
                      extra_env={"AIRFLOW__INVOKEAI__MAP_CHUNK_SIZE": "1"})  # one instance per session
    assert run["state"] == "success"
    states = task_states(run)
    assert set(states.values()) == {"success"}
    mapped = sorted((t for t in run["tasks"] if t["map_index"] >= 0), key=lambda t: t["map_index"])
    assert [t["map_index"] for t in mapped] == [0, 1, 2]
    assert len({t["task_id"] for t in mapped}) == 1
    for task, prompt, seed in zip(mapped, prompts, seeds):
        assert task["queue"] == "gpu"
        assert prompt in (task["label"] or ""), task
        assert str(seed) in task["label"]

    images = sorted(run["images"], key=lambda r: r["map_index"])
    assert [i["map_index"] for i in images] == [0, 1, 2]
    assert len({i["image_name"] for i in images}) == 3
    for image, prompt, seed in zip(images, prompts, seeds):
        assert image["task_id"] == mapped[0]["task_id"]
        assert (image["width"], image["height"]) == (64, 64)
        size, text = png_text(image)
        assert size == (64, 64)
        metadata = json.loads(text["invokeai_metadata"])
        assert (metadata["positive_prompt"], metadata["seed"]) == (prompt, seed)
        assert metadata["steps"] == 2
        graph = json.loads(text["invokeai_graph"])
        assert graph["nodes"]["positive"]["value"] == prompt
        assert graph["nodes"]["seed"]["value"] == seed
    # different prompts and seeds, different images
    assert len({png_pixels(i["uri"]) for i in images}) == 3


def test_prompt_list_batch_lists_must_have_the_same_length(airflow_run) -> None:
    run = airflow_run(PROMPT_LIST_WORKFLOW, "model=tiny-sd1", "width=64", "height=64", "steps=2",
                      'positive_prompt_value_batch=["one", "two", "three"]', "seed_value_batch=[1, 2]",
                      expect_failure=True)
    assert run["returncode"] != 0
    result = json.loads(run["stdout"])
    assert result["state"] == "failed"
    assert result["images"] == []
    states = {t["task_id"]: t["state"] for t in result["tasks"]}
    assert states.pop("batch_sessions") == "failed"
    assert set(states.values()) == {"upstream_failed"}
    assert ("batch Params zipped together must have the same number of items, got positive_prompt_value_batch 3, "
            "seed_value_batch 2") in run["stderr"]


def test_an_empty_batch_list_is_refused_at_the_trigger(airflow_run, artifact_root: Path) -> None:
    result = airflow_run(PROMPT_LIST_WORKFLOW, "model=tiny-sd1", "positive_prompt_value_batch=[]",
                         dag_id="prompt_list_empty", expect_failure=True)
    assert result["returncode"] == 1
    assert "positive_prompt_value_batch" in result["stderr"] and "no run was started" in result["stderr"]
    assert not (artifact_root / "default" / "runs" / "prompt_list_empty").exists()


def test_an_input_error_fails_its_task_for_good_without_retries(airflow_run) -> None:
    """Retries are for what may recover (a store, a device); lists of different lengths fail the same way on every
    try, so batch_sessions fails on its first try although the DAG gives tasks two retries."""
    result = airflow_run(PROMPT_LIST_WORKFLOW, "model=tiny-sd1", 'positive_prompt_value_batch=["one", "two", "three"]',
                         "seed_value_batch=[1, 2]", dag_id="prompt_list_retries", expect_failure=True,
                         extra_env={"AIRFLOW__INVOKEAI__TASK_RETRIES": "2",
                                    "AIRFLOW__INVOKEAI__TASK_RETRY_DELAY_SECONDS": "0"})
    assert result["returncode"] != 0
    run = json.loads(result["stdout"])
    [batch] = [t for t in run["tasks"] if t["task_id"] == "batch_sessions"]
    assert (batch["state"], batch["try_number"]) == ("failed", 1)
    assert "must have the same number of items, got positive_prompt_value_batch 3" in result["stderr"]


# --- the hand-written DAG ---------------------------------------------------------------------------

HANDWRITTEN_SCRIPT = """
import shutil
src = Path(os.environ["EXAMPLE_DAGS_SOURCE"])
dags = home / "dags"
for name in ("handwritten_text_to_image.py", "invokeai_workflows.py"):
    shutil.copy(src / name, dags / name)
shutil.copytree(src / "workflows", dags / "workflows", dirs_exist_ok=True)

from airflow.dag_processing.dagbag import DagBag
bag = DagBag(str(dags))
loaded = {dag_id: {"params": list(dag.params.keys()),
                   "defaults": {k: dag.params.get_param(k).value for k in dag.params.keys()},
                   "tags": sorted(dag.tags), "class": type(dag).__name__}
          for dag_id, dag in bag.dags.items()}
errors = {k: v for k, v in bag.import_errors.items()}
result = run_dag(home, "handwritten_text_to_image", json.loads(os.environ["HANDWRITTEN_CONF"]))
print(json.dumps({"dags": loaded, "import_errors": errors, "run": result.to_dict()}, default=str))
"""

HANDWRITTEN_CONF = {"model": "tiny-sd1", "prompt": "a small red house by a lake", "seed": 5, "steps": 2,
                    "width": 64, "height": 72}


@pytest.fixture(scope="module")
def handwritten(airflow_python, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One subprocess: the dags folder loaded into a DagBag, then the hand-written DAG run with dag.test."""
    home = tmp_path_factory.mktemp("handwritten-home")
    output = airflow_python(HANDWRITTEN_SCRIPT, extra_env={
        "INVOKEAI_AIRFLOW_HOME": str(home),
        "EXAMPLE_DAGS_SOURCE": str(DAGS),
        "HANDWRITTEN_CONF": json.dumps(HANDWRITTEN_CONF),
    })
    return output


def test_dags_folder_loads_the_example_dags(handwritten: dict[str, Any]) -> None:
    assert handwritten["import_errors"] == {}
    dags = handwritten["dags"]
    assert {"handwritten_text_to_image", "sdxl-text-to-image", "prompt-list-batch"} <= set(dags)
    for dag_id in ("sdxl-text-to-image", "prompt-list-batch"):
        assert "invokeai-broken" not in dags[dag_id]["tags"], dag_id
    assert dags["sdxl-text-to-image"]["params"] == SDXL_PARAMS + ["tenant"]  # compiled DAGs add the tenant Param
    assert dags["prompt-list-batch"]["params"] == PROMPT_LIST_PARAMS + ["tenant"]
    assert len(dags["prompt-list-batch"]["defaults"]["positive_prompt_value_batch"]) == 8
    assert dags["handwritten_text_to_image"]["params"] == HANDWRITTEN_PARAMS
    assert dags["handwritten_text_to_image"]["defaults"]["model"] == "tiny-sd15"


def test_handwritten_dag_runs(handwritten: dict[str, Any]) -> None:
    run = handwritten["run"]
    assert run["state"] == "success", run["tasks"]
    states = task_states(run)
    expected_tasks = {"model", "positive_prompt", "negative_prompt", "noise", "denoise", "metadata", "decode"}
    assert {task_id for task_id, _ in states} == expected_tasks
    assert set(states.values()) == {"success"}
    queues = {t["task_id"]: t["queue"] for t in run["tasks"]}
    assert queues["model"] == "default"
    assert queues["noise"] == "default"
    assert queues["decode"] == queues["denoise"] == queues["positive_prompt"] == "gpu"
    operators = {t["task_id"]: t["operator"] for t in run["tasks"]}
    assert operators["model"] == "MainModelLoaderOperator"
    assert operators["decode"] == "LatentsToImageOperator"

    [image] = run["images"]
    assert image["task_id"] == "decode"
    assert (image["width"], image["height"]) == (64, 72)
    size, text = png_text(image)
    assert size == (64, 72)
    metadata = json.loads(text["invokeai_metadata"])
    assert metadata["positive_prompt"] == HANDWRITTEN_CONF["prompt"]
    # templated values render to strings; the node fields turn them back into numbers
    assert (metadata["seed"], metadata["steps"], metadata["width"], metadata["height"]) == (5, 2, 64, 72)
    assert metadata["model"]["name"] == "tiny-sd1"  # the model Param, resolved through the registry
    assert len(set(png_pixels(image["uri"]))) > 1
    [event] = run["asset_events"]  # hand-written image operators record Asset events too
    assert event["task_id"] == "decode" and event["asset"] == "invokeai://default/boards/none"
    assert [i["image_name"] for i in event["extra"]["images"]] == [image["image_name"]]

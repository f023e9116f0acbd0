"""SD3.5 workflows in InvokeAI's workflow format run in the engine and through `invokeai-airflow run` (Airflow on
SQLite) with the same image: the example dags/workflows/sd3-text-to-image.json (small and with few steps), and an
image-to-image workflow (sd3_i2l of an uploaded picture, sd3_denoise from half way). The model is the tiny SD3.5
main `models install-tiny main --base sd-3` builds."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import REPO_ROOT, png_pixels, task_states, uri_path, wf_edge, wf_node, workflow

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, STEPS = 32, 2
EXAMPLE = REPO_ROOT / "dags" / "workflows" / "sd3-text-to-image.json"


@pytest.fixture(scope="module")
def sd3_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    root = tmp_path_factory.mktemp("sd3-workflow-root")
    main = install_tiny(ModelRegistry(root.as_uri()), "main", "sd-3").config
    return {"uri": root.as_uri(), "main": main.identifier(), "name": main.name}


def engine_image(document: dict[str, Any], model_root: str, artifacts: Path) -> np.ndarray:
    """The workflow run in the engine, as a worker runs it, over the same library."""
    from invokeai_provider.core.context import RunContext
    from invokeai_provider.graph.engine import run_graph
    from invokeai_provider.graph.workflow import load_document
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.storage.base import RunStore, backend_for_uri

    graph = load_document(json.dumps(document)).graph
    run = RunContext(store=RunStore(backend_for_uri(artifacts.as_uri()), dag_id="engine", run_id="r1"),
                     services={"models": ModelManager(ModelRegistry(model_root))})
    [decoded] = run_graph(graph, run).outputs_of("decode")
    return np.asarray(Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name))).convert("RGB"))


def airflow_image(run: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    assert run["state"] == "success" and set(task_states(run).values()) == {"success"}
    [image] = [i for i in run["images"] if i["node_id"] == "decode"]
    assert (image["width"], image["height"]) == (SIZE, SIZE)
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
    with Image.open(uri_path(image["uri"])) as png:
        return image, np.asarray(png.convert("RGB"))


def small_example(model: dict[str, Any]) -> dict[str, Any]:
    """The example workflow with the tiny model, a small size and few steps set on its primitive nodes."""
    document = json.loads(EXAMPLE.read_text())
    values = {"seed": 7, "steps": STEPS, "width": SIZE, "height": SIZE, "cfg_scale": 4.0}
    for workflow_node in document["nodes"]:
        data = workflow_node["data"]
        if data["id"] in values:
            data["inputs"]["value"]["value"] = values[data["id"]]
        if data["id"] == "model":
            data["inputs"]["model"]["value"] = model
    return document


def test_the_example_sd3_workflow_runs_in_the_engine_and_through_airflow(
        sd3_root: dict[str, Any], artifact_root: Path, airflow_run, tmp_path: Path) -> None:
    from invokeai_provider.models.testing.tiny_catalog import default_name, tiny_model

    document = small_example(sd3_root["main"])
    [model_node] = [n for n in json.loads(EXAMPLE.read_text())["nodes"] if n["id"] == "model"]
    assert model_node["data"]["inputs"]["model"]["value"]["name"] == default_name(tiny_model("main", "sd-3"))
    path = tmp_path / "sd3-text-to-image.json"
    path.write_text(json.dumps(document))
    engine = engine_image(document, sd3_root["uri"], artifact_root)
    run = airflow_run(path, dag_id="sd3-t2i", extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": sd3_root["uri"]})
    image, through_airflow = airflow_image(run)
    assert np.abs(through_airflow.astype(int) - engine.astype(int)).max() <= 1  # the same graph, the same image
    with Image.open(uri_path(image["uri"])) as png:
        metadata = json.loads(png.info["invokeai_metadata"])
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height", "cfg_scale")} == {
        "generation_mode": "sd3_txt2img", "seed": 7, "steps": STEPS, "width": SIZE, "height": SIZE, "cfg_scale": 4.0}
    assert metadata["model"]["name"] == sd3_root["name"]


def img2img_workflow(model: dict[str, Any], picture: str) -> dict[str, Any]:
    """InvokeAI's SD3 image-to-image: the picture encoded by sd3_i2l, denoised from half way, decoded."""
    nodes = [wf_node("loader", "sd3_model_loader", model=model, t5_encoder_model=None, clip_l_model=None,
                     clip_g_model=None, vae_model=None),
             wf_node("positive", "sd3_text_encoder", prompt="a red lighthouse, watercolor", clip_l=..., clip_g=...,
                     t5_encoder=...),
             wf_node("negative", "sd3_text_encoder", prompt="", clip_l=..., clip_g=..., t5_encoder=...),
             wf_node("encode", "sd3_i2l", image={"image_name": picture}, vae=...),
             wf_node("denoise", "sd3_denoise", seed=3, steps=STEPS * 2, width=SIZE, height=SIZE, cfg_scale=3.5,
                     denoising_start=0.5, denoising_end=1.0, transformer=..., positive_conditioning=...,
                     negative_conditioning=..., latents=...),
             wf_node("decode", "sd3_l2i", latents=..., vae=...)]
    edges = [wf_edge("loader", field, encoder, field) for field in ("clip_l", "clip_g", "t5_encoder")
             for encoder in ("positive", "negative")]
    edges += [wf_edge("loader", "vae", "encode", "vae"), wf_edge("loader", "transformer", "denoise", "transformer"),
              wf_edge("positive", "conditioning", "denoise", "positive_conditioning"),
              wf_edge("negative", "conditioning", "denoise", "negative_conditioning"),
              wf_edge("encode", "latents", "denoise", "latents"), wf_edge("denoise", "latents", "decode", "latents"),
              wf_edge("loader", "vae", "decode", "vae")]
    return workflow(nodes, edges)


def test_an_sd3_image_to_image_workflow_runs_in_the_engine_and_through_airflow(
        sd3_root: dict[str, Any], artifact_root: Path, airflow_run, tmp_path: Path) -> None:
    from invokeai_provider.storage.base import backend_for_uri
    from invokeai_provider.storage.library.images import ImageLibrary

    library = ImageLibrary(backend_for_uri(artifact_root.as_uri()), "default")
    buffer = io.BytesIO()
    blocks = np.random.default_rng(4).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8))).save(buffer, format="PNG")
    picture = library.upload(buffer.getvalue())["image_name"]
    document = img2img_workflow(sd3_root["main"], picture)
    path = tmp_path / "sd3-image-to-image.json"
    path.write_text(json.dumps(document))
    engine = engine_image(document, sd3_root["uri"], artifact_root)
    run = airflow_run(path, dag_id="sd3-i2i", extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": sd3_root["uri"]})
    _, through_airflow = airflow_image(run)
    assert np.abs(through_airflow.astype(int) - engine.astype(int)).max() <= 1

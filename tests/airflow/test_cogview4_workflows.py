"""CogView4 workflows in InvokeAI's workflow format run in the engine and through `invokeai-airflow run` (Airflow on
SQLite) with the same image: text to image in the shape of InvokeAI 6.11's own "Text to Image - CogView4" default
workflow (meta 3.0.0, its nodes at version 1.0.0, boards "auto", a negative prompt encoder), and image to image from
an uploaded picture. `demo --family cogview4` runs the example workflow with the tiny model it installs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import png_pixels, task_states, uri_path, wf_edge, wf_node, workflow

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, STEPS = 32, 2


@pytest.fixture(scope="module")
def cogview4_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model root with the tiny CogView4 main (install-tiny main --base cogview4)."""
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    root = tmp_path_factory.mktemp("cogview4-workflow-root")
    model = install_tiny(ModelRegistry(root.as_uri()), "main", "cogview4").config.identifier()
    return {"uri": root.as_uri(), "model": model}


@pytest.fixture(scope="module")
def picture(artifact_root: Path) -> str:
    """A picture uploaded to the default tenant's library, as `images upload` does."""
    from invokeai_provider.storage.base import backend_for_uri
    from invokeai_provider.storage.library.images import ImageLibrary

    blocks = np.random.default_rng(8).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8))).save(buffer, format="PNG")
    return ImageLibrary(backend_for_uri(artifact_root.as_uri()), "default").upload(buffer.getvalue())["image_name"]


def text_to_image(model: dict[str, Any]) -> dict[str, Any]:
    """InvokeAI's default CogView4 workflow's shape: a loader, a prompt and an empty negative prompt encoder, the
    denoise node with its literal settings and the decode, boards "auto" as its editor saves them."""
    nodes = [wf_node("loader", "cogview4_model_loader", model=model),
             wf_node("positive", "cogview4_text_encoder", prompt="a stuffed gnome on a beach holding a banana",
                     glm_encoder=...),
             wf_node("negative", "cogview4_text_encoder", prompt="", glm_encoder=...),
             wf_node("denoise", "cogview4_denoise", board="auto", metadata=None, latents=None, denoise_mask=None,
                     denoising_start=0, denoising_end=1, transformer=..., positive_conditioning=...,
                     negative_conditioning=..., cfg_scale=3.5, width=SIZE, height=SIZE, steps=STEPS, seed=0),
             wf_node("decode", "cogview4_l2i", board="auto", metadata=None, latents=..., vae=...)]
    edges = [wf_edge("loader", "vae", "decode", "vae"), wf_edge("loader", "glm_encoder", "positive", "glm_encoder"),
             wf_edge("loader", "glm_encoder", "negative", "glm_encoder"),
             wf_edge("positive", "conditioning", "denoise", "positive_conditioning"),
             wf_edge("negative", "conditioning", "denoise", "negative_conditioning"),
             wf_edge("denoise", "latents", "decode", "latents"),
             wf_edge("loader", "transformer", "denoise", "transformer")]
    return workflow(nodes, edges)


def image_to_image(model: dict[str, Any], image_name: str) -> dict[str, Any]:
    """The text-to-image workflow with the uploaded picture encoded by cogview4_i2l and denoised from half way."""
    document = text_to_image(model)
    for item in document["nodes"]:
        if item["id"] == "denoise":
            item["data"]["inputs"]["denoising_start"]["value"] = 0.5
            del item["data"]["inputs"]["latents"]["value"]
    document["nodes"].append(wf_node("encode", "cogview4_i2l", image={"image_name": image_name}, vae=...))
    document["edges"] += [wf_edge("loader", "vae", "encode", "vae"), wf_edge("encode", "latents", "denoise", "latents")]
    return document


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


@pytest.mark.parametrize("name", ["text-to-image", "image-to-image"])
def test_a_cogview4_workflow_runs_in_the_engine_and_through_airflow(name: str, cogview4_root: dict[str, Any],
                                                                      picture: str, artifact_root: Path,
                                                                      airflow_run, tmp_path: Path) -> None:
    model = cogview4_root["model"]
    document = text_to_image(model) if name == "text-to-image" else image_to_image(model, picture)
    path = tmp_path / f"cogview4-{name}.json"
    path.write_text(json.dumps(document))
    engine = engine_image(document, cogview4_root["uri"], artifact_root)
    run = airflow_run(path, dag_id=f"cogview4-{name}",
                      extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": cogview4_root["uri"]})
    assert run["state"] == "success" and set(task_states(run).values()) == {"success"}
    [image] = [i for i in run["images"] if i["node_id"] == "decode"]
    assert (image["width"], image["height"]) == (SIZE, SIZE)
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
    with Image.open(uri_path(image["uri"])) as png:
        through_airflow = np.asarray(png.convert("RGB"))
    assert np.abs(through_airflow.astype(int) - engine.astype(int)).max() <= 1  # the same graph, the same image
    if name == "image-to-image":  # the picture's latents were used: not the text-to-image run's image
        from_text = engine_image(text_to_image(model), cogview4_root["uri"], artifact_root)
        assert np.abs(engine.astype(int) - from_text.astype(int)).max() > 4


def test_demo_cogview4_runs_end_to_end(tmp_path: Path) -> None:
    """The CogView4 demo builds tiny-cogview4 and runs cogview4-text-to-image.json through Airflow at the size and
    steps given; the image's metadata records them (the workflow feeds them by edges)."""
    import os

    exe = Path(sys.executable).with_name("invokeai-airflow")
    args = [str(exe), "demo", "--family", "cogview4", "--size", "64", "--steps", "3", "--seed", "7", "--model-root",
            str(tmp_path / "models"), "--artifacts", str(tmp_path / "art")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "INVOKEAI"))}
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600,
                            env={**env, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "building the tiny random-weight cogview4 main model 'tiny-cogview4'" in result.stderr
    [image] = json.loads(result.stdout)
    assert (image["width"], image["height"]) == (64, 64)
    assert "Denoising step 3/3" in result.stderr and "Denoising step 4/" not in result.stderr
    assert "success (queue gpu)" in result.stderr
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
    with Image.open(uri_path(image["uri"])) as png:
        metadata = json.loads(png.info["invokeai_metadata"])
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height", "cfg_scale")} == {
        "generation_mode": "cogview4_txt2img", "seed": 7, "steps": 3, "width": 64, "height": 64, "cfg_scale": 3.5}
    assert metadata["model"]["name"] == "tiny-cogview4"

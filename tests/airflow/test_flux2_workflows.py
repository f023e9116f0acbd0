"""FLUX.2 Klein workflows in InvokeAI's workflow format run in the engine and through `invokeai-airflow run` (Airflow
on SQLite) with the same image: text to image in the shape InvokeAI's workflow editor saves (a loader, a prompt,
flux2_denoise with its literal settings, the decode; boards "auto"), with a reference image (kontext_conditioning)
from an uploaded picture. `demo --family flux2-klein` runs the example workflow with the tiny model it installs."""

from __future__ import annotations

import io
import json
import os
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
def flux2_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model root with the tiny Klein main (install-tiny main --base flux2)."""
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    root = tmp_path_factory.mktemp("flux2-workflow-root")
    model = install_tiny(ModelRegistry(root.as_uri()), "main", "flux2").config.identifier()
    return {"uri": root.as_uri(), "model": model}


@pytest.fixture(scope="module")
def picture(artifact_root: Path) -> str:
    """A 64-pixel picture uploaded to the default tenant's library, as `images upload` does."""
    from invokeai_provider.storage.base import backend_for_uri
    from invokeai_provider.storage.library.images import ImageLibrary

    blocks = np.random.default_rng(4).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(blocks, np.ones((16, 16, 1), np.uint8))).save(buffer, format="PNG")
    return ImageLibrary(backend_for_uri(artifact_root.as_uri()), "default").upload(buffer.getvalue())["image_name"]


def text_to_image(model: dict[str, Any], reference: str | None = None) -> dict[str, Any]:
    nodes = [wf_node("loader", "flux2_klein_model_loader", model=model, vae_model=None, qwen3_encoder_model=None,
                     qwen3_source_model=None, max_seq_len=256),
             wf_node("positive", "flux2_klein_text_encoder", prompt="a fox in the snow", qwen3_encoder=...,
                     max_seq_len=256, mask=None),
             wf_node("denoise", "flux2_denoise", latents=None, noise=None, denoise_mask=None, denoising_start=0,
                     denoising_end=1, add_noise=True, transformer=..., positive_text_conditioning=...,
                     negative_text_conditioning=None, guidance=4, cfg_scale=1, width=SIZE, height=SIZE,
                     num_steps=STEPS, scheduler="euler", seed=3, vae=...,
                     kontext_conditioning={"image": {"image_name": reference}} if reference else None),
             wf_node("decode", "flux2_vae_decode", board="auto", metadata=None, latents=..., vae=...)]
    edges = [wf_edge("loader", "qwen3_encoder", "positive", "qwen3_encoder"),
             wf_edge("loader", "transformer", "denoise", "transformer"), wf_edge("loader", "vae", "denoise", "vae"),
             wf_edge("positive", "conditioning", "denoise", "positive_text_conditioning"),
             wf_edge("denoise", "latents", "decode", "latents"), wf_edge("loader", "vae", "decode", "vae")]
    return workflow(nodes, edges)


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


def test_a_klein_workflow_with_a_reference_image_runs_in_the_engine_and_through_airflow(
        flux2_root: dict[str, Any], picture: str, artifact_root: Path, airflow_run, tmp_path: Path) -> None:
    document = text_to_image(flux2_root["model"], picture)
    path = tmp_path / "flux2-klein-reference.json"
    path.write_text(json.dumps(document))
    engine = engine_image(document, flux2_root["uri"], artifact_root)
    run = airflow_run(path, dag_id="flux2-klein-reference",
                      extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": flux2_root["uri"]})
    assert run["state"] == "success" and set(task_states(run).values()) == {"success"}
    [image] = [i for i in run["images"] if i["node_id"] == "decode"]
    assert (image["width"], image["height"]) == (SIZE, SIZE)
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
    with Image.open(uri_path(image["uri"])) as png:
        through_airflow = np.asarray(png.convert("RGB"))
    assert np.abs(through_airflow.astype(int) - engine.astype(int)).max() <= 1  # the same graph, the same image


def test_demo_flux2_klein_runs_end_to_end(tmp_path: Path) -> None:
    """The FLUX.2 Klein demo builds tiny-flux2 and runs flux2-klein-text-to-image.json through Airflow at the size and
    steps given; the image's metadata records them (the workflow feeds them by edges)."""
    exe = Path(sys.executable).with_name("invokeai-airflow")
    args = [str(exe), "demo", "--family", "flux2-klein", "--size", "64", "--steps", "2", "--seed", "7",
            "--model-root", str(tmp_path / "models"), "--artifacts", str(tmp_path / "art")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "INVOKEAI"))}
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600,
                            env={**env, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "building the tiny random-weight flux2 main model 'tiny-flux2'" in result.stderr
    [image] = json.loads(result.stdout)
    assert (image["width"], image["height"]) == (64, 64)
    assert "Denoising step 2/2" in result.stderr and "Denoising step 3/" not in result.stderr
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
    with Image.open(uri_path(image["uri"])) as png:
        metadata = json.loads(png.info["invokeai_metadata"])
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height", "cfg_scale")} == {
        "generation_mode": "flux2_txt2img", "seed": 7, "steps": 2, "width": 64, "height": 64, "cfg_scale": 1.0}
    assert metadata["model"]["name"] == "tiny-flux2"

"""Z-Image workflows in InvokeAI's workflow format run in the engine and through `invokeai-airflow run` (Airflow on
SQLite) with the same image: the example dags/workflows/z-image-text-to-image.json (small, few steps), image-to-image
(z_image_i2l of an uploaded picture, denoised from half way), a LoRA workflow (z_image_lora_loader on the transformer
and the Qwen3 encoder) and a ControlNet workflow (z_image_control with an uploaded control image). The models are
the tiny Z-Image ones `models install-tiny ... --base z-image` builds. `demo --family z-image` runs the example."""

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

from helpers import REPO_ROOT, png_pixels, task_states, uri_path, wf_edge, wf_node, workflow

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, STEPS = 32, 2
EXAMPLE = REPO_ROOT / "dags" / "workflows" / "z-image-text-to-image.json"


@pytest.fixture(scope="module")
def z_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    root = tmp_path_factory.mktemp("z-image-workflow-root")
    registry = ModelRegistry(root.as_uri())
    models = {kind: install_tiny(registry, kind, "z-image").config for kind in ("main", "lora", "controlnet")}
    return {"uri": root.as_uri(), "name": models["main"].name,
            **{kind: config.identifier() for kind, config in models.items()}}


@pytest.fixture(scope="module")
def uploads(artifact_root: Path) -> dict[str, str]:
    """A picture and a control image uploaded to the default tenant's library, as `images upload` does."""
    from invokeai_provider.storage.base import backend_for_uri
    from invokeai_provider.storage.library.images import ImageLibrary

    library = ImageLibrary(backend_for_uri(artifact_root.as_uri()), "default")
    rng = np.random.default_rng(6)

    def upload(array: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return library.upload(buffer.getvalue())["image_name"]

    control = np.zeros((SIZE, SIZE, 3), np.uint8)
    control[8:24, 4:28] = 255
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return {"picture": upload(np.kron(blocks, np.ones((8, 8, 1), np.uint8))), "control": upload(control)}


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
    values = {"seed": 7, "steps": STEPS, "width": SIZE, "height": SIZE}
    for workflow_node in document["nodes"]:
        data = workflow_node["data"]
        if data["id"] in values:
            data["inputs"]["value"]["value"] = values[data["id"]]
        if data["id"] == "model_loader":
            data["inputs"]["model"]["value"] = model
    return document


def test_the_example_z_image_workflow_runs_in_the_engine_and_through_airflow(
        z_root: dict[str, Any], artifact_root: Path, airflow_run, tmp_path: Path) -> None:
    from invokeai_provider.models.testing.tiny_catalog import default_name, tiny_model

    [model_node] = [n for n in json.loads(EXAMPLE.read_text())["nodes"] if n["id"] == "model_loader"]
    assert model_node["data"]["inputs"]["model"]["value"]["name"] == default_name(tiny_model("main", "z-image"))
    document = small_example(z_root["main"])
    path = tmp_path / "z-image-text-to-image.json"
    path.write_text(json.dumps(document))
    engine = engine_image(document, z_root["uri"], artifact_root)
    run = airflow_run(path, dag_id="z-image-t2i", extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": z_root["uri"]})
    image, through_airflow = airflow_image(run)
    assert np.abs(through_airflow.astype(int) - engine.astype(int)).max() <= 1  # the same graph, the same image
    with Image.open(uri_path(image["uri"])) as png:
        metadata = json.loads(png.info["invokeai_metadata"])
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height")} == {
        "generation_mode": "z_image_txt2img", "seed": 7, "steps": STEPS, "width": SIZE, "height": SIZE}
    assert metadata["model"]["name"] == z_root["name"]


def z_image_nodes(model: dict[str, Any], **denoise: Any) -> tuple[list, list]:
    """InvokeAI's Z-Image text-to-image nodes, as its editor saves them, with more denoise inputs as given."""
    nodes = [wf_node("loader", "z_image_model_loader", model=model, vae_model=None, qwen3_encoder_model=None,
                     qwen3_source_model=None),
             wf_node("prompt", "z_image_text_encoder", prompt="a red lighthouse, watercolor", qwen3_encoder=...),
             wf_node("denoise", "z_image_denoise", **{"seed": 3, "steps": STEPS, "width": SIZE, "height": SIZE,
                                                      "guidance_scale": 1.0, "scheduler": "euler", "transformer": ...,
                                                      "positive_conditioning": ..., **denoise}),
             wf_node("decode", "z_image_l2i", latents=..., vae=...)]
    edges = [wf_edge("loader", "qwen3_encoder", "prompt", "qwen3_encoder"),
             wf_edge("prompt", "conditioning", "denoise", "positive_conditioning"),
             wf_edge("denoise", "latents", "decode", "latents"), wf_edge("loader", "vae", "decode", "vae")]
    return nodes, edges


def image_to_image(models: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    nodes, edges = z_image_nodes(models["main"], steps=STEPS * 2, denoising_start=0.5, latents=...)
    nodes.append(wf_node("encode", "z_image_i2l", image={"image_name": images["picture"]}, vae=...))
    edges += [wf_edge("loader", "vae", "encode", "vae"), wf_edge("encode", "latents", "denoise", "latents"),
              wf_edge("loader", "transformer", "denoise", "transformer")]
    return workflow(nodes, edges)


def with_lora(models: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    nodes, edges = z_image_nodes(models["main"])
    nodes.append(wf_node("lora", "z_image_lora_loader", lora=models["lora"], weight=0.8, transformer=...,
                         qwen3_encoder=...))
    edges = [e for e in edges if e["source"] != "loader" or e["sourceHandle"] != "qwen3_encoder"]
    edges += [wf_edge("loader", "transformer", "lora", "transformer"),
              wf_edge("loader", "qwen3_encoder", "lora", "qwen3_encoder"),
              wf_edge("lora", "transformer", "denoise", "transformer"),
              wf_edge("lora", "qwen3_encoder", "prompt", "qwen3_encoder")]
    return workflow(nodes, edges)


def with_control(models: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    nodes, edges = z_image_nodes(models["main"], control=..., vae=...)
    nodes.append(wf_node("control", "z_image_control", image={"image_name": images["control"]},
                         control_model=models["controlnet"], control_context_scale=0.75, begin_step_percent=0,
                         end_step_percent=1))
    edges += [wf_edge("loader", "transformer", "denoise", "transformer"),
              wf_edge("control", "control", "denoise", "control"), wf_edge("loader", "vae", "denoise", "vae")]
    return workflow(nodes, edges)


def plain(models: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    nodes, edges = z_image_nodes(models["main"])
    return workflow(nodes, edges + [wf_edge("loader", "transformer", "denoise", "transformer")])


BUILDERS = {"image-to-image": image_to_image, "lora": with_lora, "control": with_control}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_z_image_workflow_runs_in_the_engine_and_through_airflow(name: str, z_root: dict[str, Any],
                                                                     uploads: dict[str, str], artifact_root: Path,
                                                                     airflow_run, tmp_path: Path) -> None:
    document = BUILDERS[name](z_root, uploads)
    path = tmp_path / f"z-image-{name}.json"
    path.write_text(json.dumps(document))
    engine = engine_image(document, z_root["uri"], artifact_root)
    run = airflow_run(path, dag_id=f"z-image-{name}", extra_env={"AIRFLOW__INVOKEAI__MODEL_ROOT": z_root["uri"]})
    _, through_airflow = airflow_image(run)
    assert np.abs(through_airflow.astype(int) - engine.astype(int)).max() <= 1  # the same graph, the same image
    if name != "image-to-image":  # the LoRA / the ControlNet changed the image
        without = engine_image(plain(z_root, uploads), z_root["uri"], artifact_root)
        assert np.abs(engine.astype(int) - without.astype(int)).max() > 4


def test_demo_z_image_runs_end_to_end(tmp_path: Path) -> None:
    """The Z-Image demo builds tiny-z-image and runs z-image-text-to-image.json through Airflow at the size and
    steps given; the image's metadata records them (the workflow feeds them by edges)."""
    import os

    exe = Path(sys.executable).with_name("invokeai-airflow")
    args = [str(exe), "demo", "--family", "z-image", "--size", "48", "--steps", "3", "--seed", "7", "--model-root",
            str(tmp_path / "models"), "--artifacts", str(tmp_path / "art")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "INVOKEAI"))}
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600,
                            env={**env, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "building the tiny random-weight z-image main model 'tiny-z-image'" in result.stderr
    [image] = json.loads(result.stdout)
    assert (image["width"], image["height"]) == (48, 48)
    assert "Denoising step 3/3" in result.stderr and "Denoising step 4/" not in result.stderr
    assert "success (queue gpu)" in result.stderr
    assert uri_path(image["uri"]).is_file() and len(set(png_pixels(image["uri"]))) > 1
    with Image.open(uri_path(image["uri"])) as png:
        metadata = json.loads(png.info["invokeai_metadata"])
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height")} == {
        "generation_mode": "z_image_txt2img", "seed": 7, "steps": 3, "width": 48, "height": 48}
    assert metadata["model"]["name"] == "tiny-z-image"

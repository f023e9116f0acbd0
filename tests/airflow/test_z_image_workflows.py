"""Z-Image workflows in InvokeAI's workflow format run in the engine and through `invokeai-airflow run` (Airflow on
SQLite) with the same image: the example dags/workflows/z-image-text-to-image.json (small, few steps), image-to-image
(z_image_i2l of an uploaded picture, denoised from half way), a LoRA workflow (z_image_lora_loader on the transformer
and the Qwen3 encoder) and a ControlNet workflow (z_image_control with an uploaded control image). The models are
the tiny Z-Image ones `models install-tiny ... --base z-image` builds. `demo --family z-image` runs the example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import REPO_ROOT, block_picture, png_metadata, run_demo, small_example, wf_edge, wf_node, workflow

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
def uploads(upload_image) -> dict[str, str]:
    """A picture and a control image uploaded to the default tenant's library, as `images upload` does."""
    control = np.zeros((SIZE, SIZE, 3), np.uint8)
    control[8:24, 4:28] = 255
    return {"picture": upload_image(block_picture(6)), "control": upload_image(control)}


def test_the_example_z_image_workflow_runs_in_the_engine_and_through_airflow(
        z_root: dict[str, Any], engine_and_airflow) -> None:
    from invokeai_provider.models.testing.tiny_catalog import default_name, tiny_model

    [model_node] = [n for n in json.loads(EXAMPLE.read_text())["nodes"] if n["id"] == "model_loader"]
    assert model_node["data"]["inputs"]["model"]["value"]["name"] == default_name(tiny_model("main", "z-image"))
    document = small_example(EXAMPLE, "model_loader", z_root["main"],
                             {"seed": 7, "steps": STEPS, "width": SIZE, "height": SIZE})
    image, _ = engine_and_airflow(document, "z-image-t2i", z_root["uri"], SIZE)
    metadata = png_metadata(image["uri"])
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
                                                                     uploads: dict[str, str], engine_image,
                                                                     engine_and_airflow) -> None:
    _, engine = engine_and_airflow(BUILDERS[name](z_root, uploads), f"z-image-{name}", z_root["uri"], SIZE)
    if name != "image-to-image":  # the LoRA / the ControlNet changed the image
        without = engine_image(plain(z_root, uploads), z_root["uri"])
        assert np.abs(engine.astype(int) - without.astype(int)).max() > 4


def test_demo_z_image_runs_end_to_end(tmp_path: Path) -> None:
    """The Z-Image demo builds tiny-z-image and runs z-image-text-to-image.json through Airflow at the size and
    steps given; the image's metadata records them (the workflow feeds them by edges)."""
    log, metadata = run_demo(tmp_path, "z-image", "tiny-z-image", size=48, steps=3)
    assert "success (queue gpu)" in log
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height")} == {
        "generation_mode": "z_image_txt2img", "seed": 7, "steps": 3, "width": 48, "height": 48}

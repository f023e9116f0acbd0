"""CogView4 workflows in InvokeAI's workflow format run in the engine and through `invokeai-airflow run` (Airflow on
SQLite) with the same image: text to image in the shape of InvokeAI 6.11's own "Text to Image - CogView4" default
workflow (meta 3.0.0, its nodes at version 1.0.0, boards "auto", a negative prompt encoder), and image to image from
an uploaded picture. `demo --family cogview4` runs the example workflow with the tiny model it installs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import block_picture, run_demo, wf_edge, wf_node, workflow

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
def picture(upload_image) -> str:
    """A picture uploaded to the default tenant's library, as `images upload` does."""
    return upload_image(block_picture(8))


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


@pytest.mark.parametrize("name", ["text-to-image", "image-to-image"])
def test_a_cogview4_workflow_runs_in_the_engine_and_through_airflow(name: str, cogview4_root: dict[str, Any],
                                                                      picture: str, engine_image,
                                                                      engine_and_airflow) -> None:
    model = cogview4_root["model"]
    document = text_to_image(model) if name == "text-to-image" else image_to_image(model, picture)
    _, engine = engine_and_airflow(document, f"cogview4-{name}", cogview4_root["uri"], SIZE)
    if name == "image-to-image":  # the picture's latents were used: not the text-to-image run's image
        from_text = engine_image(text_to_image(model), cogview4_root["uri"])
        assert np.abs(engine.astype(int) - from_text.astype(int)).max() > 4


def test_demo_cogview4_runs_end_to_end(tmp_path: Path) -> None:
    """The CogView4 demo builds tiny-cogview4 and runs cogview4-text-to-image.json through Airflow at the size and
    steps given; the image's metadata records them (the workflow feeds them by edges)."""
    log, metadata = run_demo(tmp_path, "cogview4", "tiny-cogview4", size=64, steps=3)
    assert "success (queue gpu)" in log
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height", "cfg_scale")} == {
        "generation_mode": "cogview4_txt2img", "seed": 7, "steps": 3, "width": 64, "height": 64, "cfg_scale": 3.5}

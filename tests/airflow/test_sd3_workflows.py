"""SD3.5 workflows in InvokeAI's workflow format run in the engine and through `invokeai-airflow run` (Airflow on
SQLite) with the same image: the example dags/workflows/sd3-text-to-image.json (small and with few steps), and an
image-to-image workflow (sd3_i2l of an uploaded picture, sd3_denoise from half way). The model is the tiny SD3.5
main `models install-tiny main --base sd-3` builds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers import REPO_ROOT, block_picture, png_metadata, small_example, wf_edge, wf_node, workflow

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


def test_the_example_sd3_workflow_runs_in_the_engine_and_through_airflow(
        sd3_root: dict[str, Any], engine_and_airflow) -> None:
    from invokeai_provider.models.testing.tiny_catalog import default_name, tiny_model

    [model_node] = [n for n in json.loads(EXAMPLE.read_text())["nodes"] if n["id"] == "model"]
    assert model_node["data"]["inputs"]["model"]["value"]["name"] == default_name(tiny_model("main", "sd-3"))
    document = small_example(EXAMPLE, "model", sd3_root["main"],
                             {"seed": 7, "steps": STEPS, "width": SIZE, "height": SIZE, "cfg_scale": 4.0})
    image, _ = engine_and_airflow(document, "sd3-t2i", sd3_root["uri"], SIZE)
    metadata = png_metadata(image["uri"])
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
        sd3_root: dict[str, Any], upload_image, engine_and_airflow) -> None:
    document = img2img_workflow(sd3_root["main"], upload_image(block_picture(4)))
    engine_and_airflow(document, "sd3-i2i", sd3_root["uri"], SIZE)

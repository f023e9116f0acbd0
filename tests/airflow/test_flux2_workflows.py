"""FLUX.2 Klein workflows in InvokeAI's workflow format run in the engine and through `invokeai-airflow run` (Airflow
on SQLite) with the same image: text to image in the shape InvokeAI's workflow editor saves (a loader, a prompt,
flux2_denoise with its literal settings, the decode; boards "auto"), with a reference image (kontext_conditioning)
from an uploaded picture. `demo --family flux2-klein` runs the example workflow with the tiny model it installs. The
FLUX.2 [dev] example (flux2-dev-text-to-image.json: the [dev] loader and Mistral prompt encoders) runs with the tiny
[dev] main in the engine and through Airflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import REPO_ROOT, block_picture, png_metadata, run_demo, small_example, wf_edge, wf_node, workflow

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
def picture(upload_image) -> str:
    """A 64-pixel picture uploaded to the default tenant's library, as `images upload` does."""
    return upload_image(block_picture(4, cell=16))


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


def test_a_klein_workflow_with_a_reference_image_runs_in_the_engine_and_through_airflow(
        flux2_root: dict[str, Any], picture: str, engine_and_airflow) -> None:
    engine_and_airflow(text_to_image(flux2_root["model"], picture), "flux2-klein-reference", flux2_root["uri"], SIZE)


def test_demo_flux2_klein_runs_end_to_end(tmp_path: Path) -> None:
    """The FLUX.2 Klein demo builds tiny-flux2 and runs flux2-klein-text-to-image.json through Airflow at the size and
    steps given; the image's metadata records them (the workflow feeds them by edges)."""
    _, metadata = run_demo(tmp_path, "flux2-klein", "tiny-flux2", size=64, steps=2)
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height", "cfg_scale")} == {
        "generation_mode": "flux2_txt2img", "seed": 7, "steps": 2, "width": 64, "height": 64, "cfg_scale": 1.0}


def test_the_flux2_dev_example_runs_in_the_engine_and_through_airflow(tmp_path_factory: pytest.TempPathFactory,
                                                                      engine_and_airflow) -> None:
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    root = tmp_path_factory.mktemp("flux2-dev-workflow-root")
    main = install_tiny(ModelRegistry(root.as_uri()), "main", "flux2", variant="dev").config
    example = REPO_ROOT / "dags" / "workflows" / "flux2-dev-text-to-image.json"
    size = 64  # the example's form sizes start at 64
    document = small_example(example, "model_loader", main.identifier(),
                             {"seed": 11, "steps": STEPS, "width": size, "height": size, "cfg": 1.0})
    image, _ = engine_and_airflow(document, "flux2-dev-t2i", root.as_uri(), size)
    metadata = png_metadata(image["uri"])
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "width", "height")} == {
        "generation_mode": "flux2_txt2img", "seed": 11, "steps": STEPS, "width": size, "height": size}

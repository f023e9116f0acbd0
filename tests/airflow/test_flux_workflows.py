"""FLUX workflows written in InvokeAI's workflow format run in the engine and through `invokeai-airflow run`
(Airflow on SQLite): image-to-image with a LoRA, an InstantX ControlNet and a Kontext reference in one graph, and a
FLUX Fill inpaint with its mask made from an uploaded mask image. Inputs are images uploaded to the tenant's
library; models are the tiny FLUX ones `models install-tiny` builds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from helpers import block_picture, wf_edge, wf_node, workflow

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, STEPS = 32, 2


@pytest.fixture(scope="module")
def flux_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model root with the tiny FLUX main, LoRA and ControlNet (install-tiny) and a tiny FLUX Fill main."""
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_flux import build_flux_model
    from invokeai_provider.models.testing.tiny_install import install_tiny

    root = tmp_path_factory.mktemp("flux-workflow-root")
    registry = ModelRegistry(root.as_uri())
    models = {kind: install_tiny(registry, kind, "flux").config.identifier() for kind in ("main", "lora", "controlnet")}
    models["fill"] = install_model(registry, str(build_flux_model(root / "tiny-flux-fill", variant="fill", seed=3)),
                                   name="tiny-flux-fill", inplace=True).identifier()
    return {"uri": root.as_uri(), "models": models}


@pytest.fixture(scope="module")
def uploads(upload_image) -> dict[str, str]:
    """Images uploaded to the default tenant's library, as `images upload` does: a picture, a control image, a
    Kontext reference and a mask (white where Fill fills)."""
    rng = np.random.default_rng(5)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:24] = 255
    return {"picture": upload_image(block_picture(rng)),
            "control": upload_image(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)),
            "reference": upload_image(rng.integers(0, 256, (SIZE, 48, 3), dtype=np.uint8)),
            "mask": upload_image(mask)}


def flux_nodes(model: dict[str, Any], *, denoise: dict[str, Any]) -> tuple[list, list]:
    """InvokeAI's FLUX text-to-image nodes, as its editor saves them, with more denoise inputs as given."""
    nodes = [wf_node("loader", "flux_model_loader", model=model, t5_encoder_model=None, clip_embed_model=None,
                     vae_model=None),
             wf_node("prompt", "flux_text_encoder", prompt="a lighthouse in a storm, oil painting", clip=...,
                     t5_encoder=..., t5_max_seq_len=...),
             wf_node("denoise", "flux_denoise", seed=11, num_steps=STEPS, width=SIZE, height=SIZE, guidance=3.5,
                     transformer=..., positive_text_conditioning=..., **denoise),
             wf_node("decode", "flux_vae_decode", latents=..., vae=...)]
    edges = [wf_edge("loader", "clip", "prompt", "clip"), wf_edge("loader", "t5_encoder", "prompt", "t5_encoder"),
             wf_edge("loader", "max_seq_len", "prompt", "t5_max_seq_len"),
             wf_edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             wf_edge("denoise", "latents", "decode", "latents"), wf_edge("loader", "vae", "decode", "vae")]
    return nodes, edges


def steered_workflow(models: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    """Image-to-image with a LoRA, a ControlNet and a Kontext reference."""
    nodes, edges = flux_nodes(models["main"], denoise={"denoising_start": 0.5, "latents": ..., "control": ...,
                                                       "controlnet_vae": ..., "kontext_conditioning": ...})
    nodes += [wf_node("lora", "flux_lora_loader", lora=models["lora"], weight=0.8, transformer=..., clip=...,
                      t5_encoder=...),
              wf_node("encode", "flux_vae_encode", image={"image_name": images["picture"]}, vae=...),
              wf_node("control", "flux_controlnet", image={"image_name": images["control"]},
                      control_model=models["controlnet"], control_weight=0.7, begin_step_percent=0,
                      end_step_percent=1, resize_mode="just_resize", instantx_control_mode=-1),
              wf_node("prep", "flux_kontext_image_prep", images=[{"image_name": images["reference"]}],
                      use_preferred_resolution=False),
              wf_node("kontext", "flux_kontext", image=...)]
    edges = [e for e in edges if not (e["source"] == "loader" and e["sourceHandle"] in ("clip", "t5_encoder"))]
    edges += [wf_edge("loader", "transformer", "lora", "transformer"), wf_edge("loader", "clip", "lora", "clip"),
              wf_edge("loader", "t5_encoder", "lora", "t5_encoder"),
              wf_edge("lora", "transformer", "denoise", "transformer"), wf_edge("lora", "clip", "prompt", "clip"),
              wf_edge("lora", "t5_encoder", "prompt", "t5_encoder"), wf_edge("loader", "vae", "encode", "vae"),
              wf_edge("encode", "latents", "denoise", "latents"), wf_edge("control", "control", "denoise", "control"),
              wf_edge("loader", "vae", "denoise", "controlnet_vae"), wf_edge("prep", "image", "kontext", "image"),
              wf_edge("kontext", "kontext_cond", "denoise", "kontext_conditioning")]
    return workflow(nodes, edges)


def fill_workflow(models: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    """FLUX Fill: the picture with the mask image's white square filled."""
    nodes, edges = flux_nodes(models["fill"], denoise={"fill_conditioning": ..., "controlnet_vae": ...})
    nodes += [wf_node("mask", "image_mask_to_tensor", image={"image_name": images["mask"]}, cutoff=128,
                      invert=True),  # true where white: where Fill fills
              wf_node("fill", "flux_fill", image={"image_name": images["picture"]}, mask=...)]
    edges += [wf_edge("loader", "transformer", "denoise", "transformer"), wf_edge("mask", "mask", "fill", "mask"),
              wf_edge("fill", "fill_cond", "denoise", "fill_conditioning"),
              wf_edge("loader", "vae", "denoise", "controlnet_vae")]
    return workflow(nodes, edges)


@pytest.mark.parametrize("name", ["steered", "fill"])
def test_a_flux_workflow_runs_in_the_engine_and_through_airflow(name: str, flux_root: dict[str, Any],
                                                                  uploads: dict[str, str], engine_and_airflow) -> None:
    document = (steered_workflow if name == "steered" else fill_workflow)(flux_root["models"], uploads)
    engine_and_airflow(document, f"flux-{name}", flux_root["uri"], SIZE)

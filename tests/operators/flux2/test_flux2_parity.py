"""FLUX.2 Klein graphs (flux2_klein_model_loader -> flux2_klein_text_encoder -> flux2_denoise -> flux2_vae_decode) on
a tiny Klein model give diffusers' ``Flux2KleinPipeline``'s image with the same weights, prompt, seed, size and steps.

What is aligned, and why:
- noise: InvokeAI's (float16 on the CPU from the seed, 32 channels), handed to the pipeline as ``latents`` in its
  patchified layout (128 channels of 2x2 patches; the same channel order as our packing);
- the schedule's shift: InvokeAI shifts Klein's linear sigmas with a fixed mu of 2.02, diffusers with an empirical mu
  that depends on the size and step count, so the pipeline's ``compute_empirical_mu`` is patched to return 2.02;
- image-to-image: diffusers has no Klein image-to-image pipeline (its inpaint pipeline always adds the source as a
  reference image), so the pipeline is run from the latents InvokeAI starts from (the image's encoding mixed with the
  noise at the first sigma, batch-norm normalized; computed here with diffusers' VAE, not our code) along InvokeAI's
  clipped, unshifted sigmas (a scheduler with shift 1 and no dynamic shifting, ``sigmas=``).
- uint8 conversion: InvokeAI truncates, diffusers rounds: tolerance 1 level of 255.
Measured max differences: 1 level for each of text-to-image, CFG, a reference image and image-to-image.
Teeth: the pipeline's own mu moves the image by 13 levels (with a reference image too), CFG dropped by 4, and the
image-to-image run differs from text-to-image by 233; a reference image changes the denoised latents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from invokeai_provider.core.context import RunContext
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux2 import build_flux2_model
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from helpers import edge, put_image, run_nodes, stored_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a red fox in the snow, golden sunset"
HEIGHT, WIDTH, STEPS, SEED, SEQ = 48, 64, 3, 7, 256
TOLERANCE = 1


@pytest.fixture(scope="module")
def klein(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("flux2-root")
    registry = ModelRegistry(root.as_uri())
    folder = build_flux2_model(root / "tiny-flux2", seed=3)
    config = install_model(registry, str(folder), name="tiny-flux2", inplace=True)
    return {"manager": ModelManager(registry, device="cpu"), "model": config.identifier(), "folder": folder}


@pytest.fixture(scope="module")
def pipeline(klein: dict[str, Any]) -> Any:
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline.from_pretrained(klein["folder"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_context(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux2", run_id="r1"),
                      services={"models": manager})


def klein_graph(model: dict[str, Any], **denoise: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    nodes = {
        "loader": {"type": "flux2_klein_model_loader", "model": model, "max_seq_len": SEQ},
        "prompt": {"type": "flux2_klein_text_encoder", "prompt": PROMPT, "max_seq_len": SEQ},
        "denoise": {"type": "flux2_denoise", "width": WIDTH, "height": HEIGHT, "num_steps": STEPS, "seed": SEED,
                    **denoise},
        "decode": {"type": "flux2_vae_decode"},
    }
    edges = [edge("loader", "qwen3_encoder", "prompt", "qwen3_encoder"),
             edge("loader", "transformer", "denoise", "transformer"), edge("loader", "vae", "denoise", "vae"),
             edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("denoise", "latents", "decode", "latents"), edge("loader", "vae", "decode", "vae")]
    return nodes, edges


def graph_image(run: RunContext, nodes: dict[str, Any], edges: list[dict[str, Any]]) -> np.ndarray:
    state = run_nodes(run, nodes, edges)
    [decoded] = state.outputs_of("decode")
    [latents] = state.outputs_of("denoise")
    run.services["denoised"] = latents.latents.latents_name
    return np.asarray(stored_image(run, decoded).convert("RGB")).astype(np.int16)


def denoised(run: RunContext) -> torch.Tensor:
    """The latents flux2_denoise stored in the run."""
    from safetensors.torch import load

    return load(run.store.read("tensors", f"{run.services['denoised']}.safetensors"))["tensor"]


def patchified_noise() -> torch.Tensor:
    """InvokeAI's noise for the seed, in the pipeline's (1, 128, h/2, w/2) layout."""
    from invokeai_provider.models.flux2 import sampling

    noise = sampling.noise(SEED, HEIGHT, WIDTH)
    b, c, h, w = noise.shape
    return noise.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def pipeline_image(pipe: Any, monkeypatch: pytest.MonkeyPatch, *, invokeai_mu: bool = True, **kwargs: Any) -> np.ndarray:
    from diffusers.pipelines.flux2 import pipeline_flux2_klein

    if invokeai_mu:
        monkeypatch.setattr(pipeline_flux2_klein, "compute_empirical_mu", lambda image_seq_len, num_steps: 2.02)
    arguments = dict(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, latents=patchified_noise(),
                     max_sequence_length=SEQ, guidance_scale=1.0, output_type="np")
    images = pipe(**{**arguments, **kwargs}).images
    monkeypatch.undo()
    return (images[0] * 255).round().astype(np.int16)


def test_text_to_image_gives_the_pipelines_image(tmp_path: Path, klein: dict[str, Any], pipeline: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ours = graph_image(run_context(tmp_path, klein["manager"]), *klein_graph(klein["model"]))
    theirs = pipeline_image(pipeline, monkeypatch)
    assert ours.shape == (HEIGHT, WIDTH, 3)
    assert ours.std() > 5  # a real image, not a flat one
    assert np.abs(ours - theirs).max() <= TOLERANCE
    # teeth: the pipeline's own (size-dependent) shift is another schedule, and another image
    assert np.abs(ours - pipeline_image(pipeline, monkeypatch, invokeai_mu=False)).max() > TOLERANCE


def test_cfg_with_a_negative_prompt_gives_the_pipelines_image(tmp_path: Path, klein: dict[str, Any], pipeline: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    nodes, edges = klein_graph(klein["model"], cfg_scale=3.0)
    nodes["negative"] = {"type": "flux2_klein_text_encoder", "prompt": "", "max_seq_len": SEQ}
    edges += [edge("loader", "qwen3_encoder", "negative", "qwen3_encoder"),
              edge("negative", "conditioning", "denoise", "negative_text_conditioning")]
    ours = graph_image(run_context(tmp_path, klein["manager"]), nodes, edges)
    pipeline.register_to_config(is_distilled=False)  # the Base models' CFG ("" is the pipeline's negative prompt)
    try:
        theirs = pipeline_image(pipeline, monkeypatch, guidance_scale=3.0)
        without_cfg = pipeline_image(pipeline, monkeypatch, guidance_scale=1.0)
    finally:
        pipeline.register_to_config(is_distilled=True)
    assert np.abs(ours - theirs).max() <= TOLERANCE
    assert np.abs(ours - without_cfg).max() > TOLERANCE  # teeth: the negative pass matters


def test_a_reference_image_gives_the_pipelines_image(tmp_path: Path, klein: dict[str, Any], pipeline: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    rng = np.random.default_rng(5)
    reference = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))  # the pipeline takes >= 64 px
    run = run_context(tmp_path, klein["manager"])
    nodes, edges = klein_graph(klein["model"],
                               kontext_conditioning={"image": put_image(run, "reference.png", reference)})
    ours = graph_image(run, nodes, edges)
    theirs = pipeline_image(pipeline, monkeypatch, image=reference)
    assert np.abs(ours - theirs).max() <= TOLERANCE
    # teeth: the reference steers the latents (the tiny model's image moves by about a level only), and the
    # pipeline's own mu moves the image past the tolerance here too
    plain_run = run_context(tmp_path / "plain", klein["manager"])
    graph_image(plain_run, *klein_graph(klein["model"]))
    assert (denoised(run) - denoised(plain_run)).abs().max() > 1e-3
    assert np.abs(ours - pipeline_image(pipeline, monkeypatch, invokeai_mu=False, image=reference)).max() > TOLERANCE


def test_image_to_image_walks_the_clipped_linear_schedule(tmp_path: Path, klein: dict[str, Any], pipeline: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from PIL import Image

    from invokeai_provider.models.flux2 import sampling

    rng = np.random.default_rng(9)
    source = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    run = run_context(tmp_path, klein["manager"])
    nodes, edges = klein_graph(klein["model"], denoising_start=1 / 3)
    nodes["encode"] = {"type": "flux2_vae_encode", "image": put_image(run, "source.png", source)}
    edges += [edge("loader", "vae", "encode", "vae"), edge("encode", "latents", "denoise", "latents")]
    ours = graph_image(run, nodes, edges)

    # the start InvokeAI computes, here with diffusers' own VAE: the image's mode mixed with the noise at sigma 2/3
    vae = pipeline.vae
    pixels = torch.from_numpy(np.asarray(source, dtype=np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        encoded = vae.encode(pixels).latent_dist.mode()
    noise = sampling.noise(SEED, HEIGHT, WIDTH)
    start = 2 / 3 * noise + 1 / 3 * encoded
    b, c, h, w = start.shape
    patches = start.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
    mean = vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    original = pipeline.scheduler
    pipeline.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0,
                                                         use_dynamic_shifting=False)
    try:
        theirs = pipeline_image(pipeline, monkeypatch, latents=(patches - mean) / std, sigmas=[2 / 3, 1 / 3])
    finally:
        pipeline.scheduler = original
    assert np.abs(ours - theirs).max() <= TOLERANCE
    text_to_image = graph_image(run_context(tmp_path / "t2i", klein["manager"]), *klein_graph(klein["model"]))
    assert np.abs(ours - text_to_image).max() > TOLERANCE  # teeth: the source image shows through

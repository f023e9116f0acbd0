"""FLUX.2 [dev] graphs (flux2_dev_model_loader -> flux2_dev_text_encoder -> flux2_denoise -> flux2_vae_decode) on a
tiny [dev] model give diffusers' ``Flux2Pipeline``'s image with the same weights, prompt, seed, size, steps and
guidance.

What is aligned, and why (as in the Klein parity test):
- noise: InvokeAI's (float16 on the CPU from the seed), handed to the pipeline as ``latents`` in its patchified layout;
- the schedule's shift: InvokeAI shifts the linear sigmas with a fixed mu of 2.02, diffusers with an empirical mu, so
  the pipeline's ``compute_empirical_mu`` is patched to return 2.02;
- the tokenizer: the pipeline is built from the folder's components with the tokenizer inside its Pixtral-processor
  folder (transformers builds the processor itself only with torchvision; the text path is the tokenizer's alone);
  the encoder runs in float32, as the provider runs it on the CPU (the tiny encoder is stored in bfloat16);
- uint8 conversion: InvokeAI truncates, diffusers rounds: tolerance 1 level of 255.
Measured: the images differ by at most 1 level. Teeth: the pipeline with guidance 1 (or 4 instead of 3.5) gives an
image 16 (14) levels away; reading the encoder's hidden states 9/19/29 instead of 10/20/30 moves it by 2 levels,
so the conditioning flux2_dev_text_encoder stores is also compared with the pipeline's ``encode_prompt`` (equal to
float32 rounding; the 9/19/29 embeddings are not).
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
from invokeai_provider.models.testing.tiny_flux2 import build_flux2_dev_model
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from helpers import edge, run_nodes, stored_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a red fox in the snow, golden sunset"
HEIGHT, WIDTH, STEPS, SEED, SEQ, GUIDANCE = 48, 64, 3, 7, 256, 3.5
TOLERANCE = 1


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("flux2-dev-root")
    registry = ModelRegistry(root.as_uri())
    folder = build_flux2_dev_model(root / "tiny-flux2-dev", seed=3)
    config = install_model(registry, str(folder), name="tiny-flux2-dev", inplace=True)
    return {"manager": ModelManager(registry, device="cpu"), "model": config.identifier(), "folder": folder}


@pytest.fixture(scope="module")
def pipeline(dev: dict[str, Any]) -> Any:
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import AutoTokenizer, Mistral3ForConditionalGeneration

    folder = dev["folder"]
    pipe = Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler"),
        vae=AutoencoderKLFlux2.from_pretrained(folder / "vae"),
        transformer=Flux2Transformer2DModel.from_pretrained(folder / "transformer"),
        text_encoder=Mistral3ForConditionalGeneration.from_pretrained(folder / "text_encoder", dtype=torch.float32),
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def dev_graph(model: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    nodes = {
        "loader": {"type": "flux2_dev_model_loader", "model": model, "max_seq_len": SEQ},
        "prompt": {"type": "flux2_dev_text_encoder", "prompt": PROMPT, "max_seq_len": SEQ},
        "denoise": {"type": "flux2_denoise", "width": WIDTH, "height": HEIGHT, "num_steps": STEPS, "seed": SEED,
                    "guidance": GUIDANCE},
        "decode": {"type": "flux2_vae_decode"},
    }
    edges = [edge("loader", "mistral_encoder", "prompt", "mistral_encoder"),
             edge("loader", "transformer", "denoise", "transformer"), edge("loader", "vae", "denoise", "vae"),
             edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("denoise", "latents", "decode", "latents"), edge("loader", "vae", "decode", "vae")]
    return nodes, edges


def patchified_noise() -> torch.Tensor:
    """InvokeAI's noise for the seed, in the pipeline's (1, 128, h/2, w/2) layout."""
    from invokeai_provider.models.flux2 import sampling

    noise = sampling.noise(SEED, HEIGHT, WIDTH)
    b, c, h, w = noise.shape
    return noise.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def pipeline_image(pipe: Any, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> np.ndarray:
    from diffusers.pipelines.flux2 import pipeline_flux2

    monkeypatch.setattr(pipeline_flux2, "compute_empirical_mu", lambda image_seq_len, num_steps: 2.02)
    arguments = dict(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, latents=patchified_noise(),
                     max_sequence_length=SEQ, guidance_scale=GUIDANCE, output_type="np")
    images = pipe(**{**arguments, **kwargs}).images
    monkeypatch.undo()
    return (images[0] * 255).round().astype(np.int16)


def run_context(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux2-dev", run_id="r1"),
                      services={"models": manager})


def test_the_prompt_embeddings_are_the_pipelines(tmp_path: Path, dev: dict[str, Any], pipeline: Any) -> None:
    from safetensors.torch import load

    run = run_context(tmp_path, dev["manager"])
    nodes, edges = dev_graph(dev["model"])
    state = run_nodes(run, {name: nodes[name] for name in ("loader", "prompt")}, edges[:1])
    [prompt] = state.outputs_of("prompt")
    stored = load(run.store.read("conditioning", f"{prompt.conditioning.conditioning_name}.safetensors"))
    with torch.no_grad():
        theirs, _ = pipeline.encode_prompt(prompt=PROMPT, max_sequence_length=SEQ)
        other_layers, _ = pipeline.encode_prompt(prompt=PROMPT, max_sequence_length=SEQ,
                                                 text_encoder_out_layers=(9, 19, 29))
    ours = stored["t5_embeds"]
    assert ours.shape == theirs.shape == (1, SEQ, 15360)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert (ours - other_layers).abs().max() > 0.1  # teeth: other hidden states are other embeddings
    assert stored["clip_embeds"].abs().max() == 0  # no pooled embedding for [dev] (InvokeAI stores a zero)


def test_text_to_image_gives_the_pipelines_image(tmp_path: Path, dev: dict[str, Any], pipeline: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_context(tmp_path, dev["manager"])
    state = run_nodes(run, *dev_graph(dev["model"]))
    [decoded] = state.outputs_of("decode")
    ours = np.asarray(stored_image(run, decoded).convert("RGB")).astype(np.int16)
    theirs = pipeline_image(pipeline, monkeypatch)
    assert ours.shape == (HEIGHT, WIDTH, 3)
    assert ours.std() > 5  # a real image, not a flat one
    assert np.abs(ours - theirs).max() <= TOLERANCE
    # teeth: the guidance embedder and the hidden states read each move the image past the tolerance
    assert np.abs(ours - pipeline_image(pipeline, monkeypatch, guidance_scale=1.0)).max() > TOLERANCE
    assert np.abs(ours - pipeline_image(pipeline, monkeypatch, text_encoder_out_layers=(9, 19, 29))).max() > TOLERANCE

"""The FLUX.2 Klein nodes beyond parity: a BFL single-file transformer with its VAE and Qwen3 encoder installed
separately gives the diffusers main's image; inpainting keeps the preserved region's latents; a LoRA patches the
transformer for the node's span; bad input is refused naming the node's field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from invokeai_provider.core.context import RunContext
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux2 import (
    build_flux2_checkpoint,
    build_flux2_lora,
    build_flux2_model,
    build_flux2_vae,
)
from invokeai_provider.models.testing.tiny_qwen3 import build_qwen3_encoder
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from helpers import edge, run_nodes, stored_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEED, SIZE = 5, 32


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("flux2-nodes")
    registry = ModelRegistry(root.as_uri())

    def install(path: Path, name: str) -> dict[str, Any]:
        return install_model(registry, str(path), name=name, inplace=True).identifier()

    return {"manager": ModelManager(registry, device="cpu"),
            "main": install(build_flux2_model(root / "klein", seed=SEED), "klein"),
            "file": install(build_flux2_checkpoint(root / "klein-4b.safetensors", seed=SEED), "klein-file"),
            "vae": install(build_flux2_vae(root / "ae.safetensors", seed=SEED), "klein-vae"),
            "qwen3": install(build_qwen3_encoder(root / "qwen3", seed=SEED, tag="flux2/qwen3"), "qwen3"),
            "lora": install(build_flux2_lora(root / "style.safetensors", seed=SEED), "style")}


def run_context(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux2", run_id="r1"),
                      services={"models": manager})


def generate(run: RunContext, loader: dict[str, Any], **denoise: Any) -> Any:
    nodes = {"loader": {"type": "flux2_klein_model_loader", "max_seq_len": 256, **loader},
             "prompt": {"type": "flux2_klein_text_encoder", "prompt": "a red fox", "max_seq_len": 256},
             "denoise": {"type": "flux2_denoise", "width": SIZE, "height": SIZE, "num_steps": 2, "seed": 1, **denoise},
             "decode": {"type": "flux2_vae_decode"}}
    edges = [edge("loader", "qwen3_encoder", "prompt", "qwen3_encoder"),
             edge("loader", "transformer", "denoise", "transformer"), edge("loader", "vae", "denoise", "vae"),
             edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("denoise", "latents", "decode", "latents"), edge("loader", "vae", "decode", "vae")]
    return run_nodes(run, nodes, edges)


def image_of(run: RunContext, state: Any) -> np.ndarray:
    [decoded] = state.outputs_of("decode")
    return np.asarray(stored_image(run, decoded).convert("RGB")).astype(np.int16)


def test_a_single_file_transformer_with_separate_parts_gives_the_mains_image(tmp_path: Path,
                                                                             models: dict[str, Any]) -> None:
    manager = models["manager"]
    main = run_context(tmp_path / "main", manager)
    expected = image_of(main, generate(main, {"model": models["main"]}))
    parts = run_context(tmp_path / "parts", manager)
    separate = image_of(parts, generate(parts, {"model": models["file"], "vae_model": models["vae"],
                                                "qwen3_encoder_model": models["qwen3"]}))
    assert np.array_equal(separate, expected)
    source = run_context(tmp_path / "source", manager)  # the parts taken from a diffusers Klein main
    from_source = image_of(source, generate(source, {"model": models["file"], "qwen3_source_model": models["main"]}))
    assert np.array_equal(from_source, expected)


def test_a_single_file_transformer_alone_is_refused_naming_the_missing_part(tmp_path: Path,
                                                                           models: dict[str, Any]) -> None:
    run = run_context(tmp_path, models["manager"])
    with pytest.raises(InvokeAIProviderError, match=r"loader.*vae_model.*ships no VAE"):
        generate(run, {"model": models["file"]})
    with pytest.raises(InvokeAIProviderError, match=r"loader.*qwen3_encoder_model.*ships no text encoder"):
        generate(run, {"model": models["file"], "vae_model": models["vae"]})
    with pytest.raises(InvokeAIProviderError, match=r"loader.*qwen3_source_model.*must be a diffusers"):
        generate(run, {"model": models["file"], "qwen3_source_model": models["file"]})


def test_cfg_without_a_negative_prompt_is_refused_naming_the_field(tmp_path: Path, models: dict[str, Any]) -> None:
    with pytest.raises(InvokeAIProviderError, match=r"denoise.*negative_text_conditioning.*cfg_scale is not 1"):
        generate(run_context(tmp_path, models["manager"]), {"model": models["main"]}, cfg_scale=2.5)
    with pytest.raises(InvokeAIProviderError, match=r"denoise.*denoising_start.*initial latents"):
        generate(run_context(tmp_path, models["manager"]), {"model": models["main"]}, denoising_start=0.5)


def test_inpainting_keeps_the_preserved_region_of_the_image(tmp_path: Path, models: dict[str, Any]) -> None:
    """The denoise mask's 1s (preserve) keep the image's own latents: after the last step the kept region is the
    image's latents as encoded; the rest is regenerated."""
    from safetensors.torch import load, save

    run = run_context(tmp_path, models["manager"])
    init = torch.randn(1, 32, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(2))
    run.store.write("tensors", "init.safetensors", save({"tensor": init}))
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 1.0  # keep the left half
    run.store.write("tensors", "mask.safetensors", save({"tensor": mask}))
    state = generate(run, {"model": models["main"]}, latents={"latents_name": "init"},
                     denoise_mask={"mask_name": "mask"}, denoising_start=0.5)
    [out] = state.outputs_of("denoise")
    latents = load(run.store.read("tensors", f"{out.latents.latents_name}.safetensors"))["tensor"]
    left, right = (slice(None, SIZE // 16), slice(SIZE // 16, None))
    assert torch.allclose(latents[..., left], init[..., left], atol=1e-4)
    assert (latents[..., right] - init[..., right]).abs().max() > 0.1


def test_a_lora_patches_the_transformer_for_the_nodes_span(tmp_path: Path, models: dict[str, Any]) -> None:
    """flux2_klein_lora_loader puts the LoRA on the transformer (and the Qwen3 encoder field): weight 0 gives the
    plain image, weight 1 another; the cached transformer is left as it was (the plain image again after)."""
    manager = models["manager"]

    def with_lora(run: RunContext, weight: float) -> np.ndarray:
        nodes = {"loader": {"type": "flux2_klein_model_loader", "model": models["main"], "max_seq_len": 256},
                 "lora": {"type": "flux2_klein_lora_loader", "lora": models["lora"], "weight": weight},
                 "prompt": {"type": "flux2_klein_text_encoder", "prompt": "a red fox", "max_seq_len": 256},
                 "denoise": {"type": "flux2_denoise", "width": SIZE, "height": SIZE, "num_steps": 2, "seed": 1},
                 "decode": {"type": "flux2_vae_decode"}}
        edges = [edge("loader", "transformer", "lora", "transformer"), edge("loader", "vae", "denoise", "vae"),
                 edge("loader", "qwen3_encoder", "prompt", "qwen3_encoder"),
                 edge("lora", "transformer", "denoise", "transformer"),
                 edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
                 edge("denoise", "latents", "decode", "latents"), edge("loader", "vae", "decode", "vae")]
        state = run_nodes(run, nodes, edges)
        [patched] = state.outputs_of("lora")
        assert [(x.lora.key, x.weight) for x in patched.transformer.loras] == [(models["lora"]["key"], weight)]
        assert patched.qwen3_encoder is None  # no encoder came in
        return image_of(run, state)

    plain_run = run_context(tmp_path / "plain", manager)
    plain = image_of(plain_run, generate(plain_run, {"model": models["main"]}))
    assert np.array_equal(with_lora(run_context(tmp_path / "zero", manager), 0.0), plain)
    assert np.abs(with_lora(run_context(tmp_path / "one", manager), 1.0) - plain).max() > 2
    again = run_context(tmp_path / "again", manager)
    assert np.array_equal(image_of(again, generate(again, {"model": models["main"]})), plain)
    with pytest.raises(InvokeAIProviderError, match=r"lora.*expected a lora model of base flux2"):
        run_nodes(run_context(tmp_path / "bad", manager),
                  {"lora": {"type": "flux2_klein_lora_loader", "lora": {**models["lora"], "base": "flux"}}})

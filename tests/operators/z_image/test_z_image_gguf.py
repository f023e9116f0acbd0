"""A GGUF Z-Image main (Q8_0, the session tiny-z-image's weights) with the main's Qwen3 encoder and VAE as separate
models: the nodes give the image of diffusers' ZImagePipeline whose transformer diffusers itself loads from the same
GGUF file (``from_single_file`` with ``GGUFQuantizationConfig``, the tiny folder's config), within 1 level (measured 1); and the
unquantized folder's image within 8 levels (Q8_0's error; measured 2). A LoRA on the GGUF main runs as a sidecar:
the pipeline with the same LoRA merged into the dequantized weights gives its image within 2 levels (measured 1), and the quantized
weights are untouched afterwards (the plain image again, exactly)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from test_z_image_parts_loras_control import lora_graph, merged
from z_image_helpers import PROMPT, dynamic_scheduler, pipeline_image, pipeline_parts, t2i_graph

from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.testing.tiny_gguf import build_z_image_gguf

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEED = 3  # the session's tiny-z-image


@pytest.fixture(scope="module")
def gguf_models(z_image: Any, z_image_parts: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, Any]:
    """The GGUF main, with the session's separate Qwen3 encoder and VAE and its kohya LoRA."""
    folder = tmp_path_factory.mktemp("z-image-gguf")
    gguf = build_z_image_gguf(folder / "z_image_turbo-Q8_0.gguf", seed=SEED)
    return {"gguf": install_model(z_image[0].registry, str(gguf), name="zg-gguf").identifier(),
            "qwen3": z_image_parts["qwen3"], "vae": z_image_parts["vae"], "lora": z_image_parts["kohya"],
            "paths": {"gguf": gguf, "lora": z_image_parts["paths"]["kohya"]}}


def _reference(manager: Any, identifier: dict[str, Any], transformer: Any, seed: int) -> np.ndarray:
    from diffusers import ZImagePipeline

    from invokeai_provider.models.z_image import sampling

    parts = pipeline_parts(manager, identifier)
    pipe = ZImagePipeline(scheduler=dynamic_scheduler(), **{**parts, "transformer": transformer})
    return pipeline_image(pipe(PROMPT, height=64, width=128, num_inference_steps=3, guidance_scale=0.0,
                               latents=sampling.noise(seed, 64, 128), output_type="np").images)


def _diffusers_gguf(manager: Any, identifier: dict[str, Any], path: Any) -> Any:
    from diffusers import GGUFQuantizationConfig, ZImageTransformer2DModel

    folder = manager.registry.root / manager.get_config(identifier).path
    return ZImageTransformer2DModel.from_single_file(
        str(path), config=str(folder), subfolder="transformer", local_files_only=True, torch_dtype=torch.float32,
        quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32)).eval()


def test_a_gguf_main_gives_diffusers_gguf_image(run_t2i: Callable[..., np.ndarray], z_image: Any,
                                                 gguf_models: dict[str, Any]) -> None:
    manager, identifier = z_image
    parts = {"qwen3_encoder_model": gguf_models["qwen3"], "vae_model": gguf_models["vae"]}
    ours = run_t2i(graph=t2i_graph(gguf_models["gguf"], seed=12, loader=parts))
    theirs = _reference(manager, identifier, _diffusers_gguf(manager, identifier, gguf_models["paths"]["gguf"]), 12)
    unquantized = run_t2i(seed=12)
    print(f"measured: vs diffusers' GGUF load {np.abs(ours - theirs).max()} levels, vs the unquantized folder "
          f"{np.abs(ours - unquantized).max()} levels")
    assert np.abs(ours - theirs).max() <= 1
    assert np.abs(ours - unquantized).max() <= 8


def test_a_lora_on_a_gguf_main_runs_as_a_sidecar(run_t2i: Callable[..., np.ndarray], z_image: Any,
                                                  gguf_models: dict[str, Any]) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear
    from safetensors.torch import load_file

    from invokeai_provider.core.taxonomy import SubModelType
    from invokeai_provider.models.quantization.gguf import dequantized

    manager, identifier = z_image
    parts = {"qwen3_encoder_model": gguf_models["qwen3"], "vae_model": gguf_models["vae"]}
    graph = t2i_graph(gguf_models["gguf"], seed=8, loader=parts)
    plain = run_t2i(graph=graph)
    with_lora = run_t2i(graph=lora_graph(gguf_models["gguf"], [(gguf_models["lora"], 0.8)], seed=8, loader=parts))
    assert np.abs(with_lora - plain).max() > 4
    assert np.array_equal(run_t2i(graph=graph), plain)  # the sidecars are gone, the quantized weights untouched
    with manager.load(gguf_models["gguf"], SubModelType.Transformer) as transformer:
        assert not transformer._forward_hooks and all(not m._forward_hooks for m in transformer.modules())
        state = dequantized(dict(transformer.state_dict()), torch.float32)
        assert any(isinstance(m, GGUFLinear) for m in transformer.modules())
    folder_parts = pipeline_parts(manager, identifier)
    plain_transformer = folder_parts["transformer"]
    reference = type(plain_transformer).from_config(plain_transformer.config).eval()
    reference.load_state_dict(state)
    reference = merged(reference, load_file(str(gguf_models["paths"]["lora"])), "transformer", 0.8)
    theirs = _reference(manager, identifier, reference, 8)
    print(f"measured: LoRA sidecar vs merged dequantized weights {np.abs(with_lora - theirs).max()} levels")
    assert np.abs(with_lora - theirs).max() <= 2


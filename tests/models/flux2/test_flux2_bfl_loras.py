"""FLUX.2 LoRAs in Black Forest Labs' layer names (ai-toolkit's ``diffusion_model.`` PEFT files, kohya's
``lora_unet_`` files): told from FLUX.1's BFL-named LoRAs by FLUX.2's layers and MLP widths, renamed to diffusers'
``Flux2Transformer2DModel`` layers (the fused qkv split), and applied by the Klein LoRA loader to give the image the
same LoRA gives in diffusers' naming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from invokeai_provider.core.context import RunContext
from invokeai_provider.core.taxonomy import BaseModelType, Flux2VariantType, ModelType
from invokeai_provider.models.flux2.lora_conversion import is_flux2_lora, to_patch_names
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.probe import probe
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import build_flux_lora
from invokeai_provider.models.testing.tiny_flux2 import build_flux2_bfl_lora, build_flux2_model
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from helpers import edge, run_nodes, stored_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEED, SIZE = 3, 32
# the tiny LoRA's BFL layers and the diffusers layers they are, written out here rather than read from the table
# under test
SPLIT = {"double_blocks.0.img_attn.qkv": ("transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k",
                                          "transformer_blocks.0.attn.to_v")}
RENAMED = {"double_blocks.0.img_attn.proj": "transformer_blocks.0.attn.to_out.0",
           "double_blocks.0.img_mlp.0": "transformer_blocks.0.ff.linear_in",
           "double_blocks.0.txt_mlp.2": "transformer_blocks.0.ff_context.linear_out",
           "single_blocks.0.linear1": "single_transformer_blocks.0.attn.to_qkv_mlp_proj",
           "single_blocks.0.linear2": "single_transformer_blocks.0.attn.to_out"}


def by_hand(bfl: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ai-toolkit or kohya FLUX.2 LoRA of the tiny layers in diffusers' PEFT names, converted by hand."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in bfl.items():
        if key.startswith("lora_unet_"):
            stem, part = key.split(".", 1)
            layer = next(name for name in (*SPLIT, *RENAMED) if "lora_unet_" + name.replace(".", "_") == stem)
            part = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight"}.get(part, part)
        else:
            layer, part = key.removeprefix("diffusion_model.").rsplit(".", 2)[0], ".".join(key.rsplit(".", 2)[1:])
        if layer in SPLIT:
            targets = SPLIT[layer]
            pieces = tensor.chunk(3) if part == "lora_B.weight" else (tensor,) * 3
            out |= {f"transformer.{t}.{part}": p.contiguous() for t, p in zip(targets, pieces)}
        else:
            out[f"transformer.{RENAMED[layer]}.{part}"] = tensor
    return out


@pytest.mark.parametrize("style", ["aitoolkit", "kohya"])
def test_bfl_named_flux2_loras_probe_as_flux2_and_flux1_ones_stay_flux1(tmp_path: Path, style: str) -> None:
    found = probe(build_flux2_bfl_lora(tmp_path / "klein.safetensors", style=style, seed=SEED))
    assert (found.type, found.format, found.base) == (ModelType.LoRA, ModelFormat.LyCORIS, BaseModelType.Flux2)
    assert probe(build_flux_lora(tmp_path / "flux1.safetensors", style=style)).base is BaseModelType.Flux


def test_the_mlp_width_decides_between_flux1_and_flux2() -> None:
    """Without a FLUX.2-only layer, a SwiGLU MLP input (6x the block width) is FLUX.2's and a 4x one FLUX.1's; a
    shared modulation layer is FLUX.2's whatever else; a 7,680-wide context input (Klein 4B's) too."""
    def mlp(ratio: int) -> dict[str, tuple[int, ...]]:
        return {"diffusion_model.double_blocks.0.img_mlp.0.lora_A.weight": (4, 64),
                "diffusion_model.double_blocks.0.img_mlp.0.lora_B.weight": (64 * ratio, 4)}

    assert is_flux2_lora(mlp(6)) and not is_flux2_lora(mlp(4))
    assert is_flux2_lora({**mlp(4), "diffusion_model.single_stream_modulation.lin.lora_A.weight": (4, 64),
                          "diffusion_model.single_stream_modulation.lin.lora_B.weight": (64 * 9, 4)})
    assert not is_flux2_lora({**mlp(6), "diffusion_model.double_blocks.0.img_mod.lin.lora_A.weight": (4, 64),
                              "diffusion_model.double_blocks.0.img_mod.lin.lora_B.weight": (64 * 6, 4)})
    context = {"diffusion_model.txt_in.lora_A.weight": (4, 7680), "diffusion_model.txt_in.lora_B.weight": (3072, 4),
               "diffusion_model.double_blocks.0.img_attn.proj.lora_A.weight": (4, 3072),
               "diffusion_model.double_blocks.0.img_attn.proj.lora_B.weight": (3072, 4)}
    assert is_flux2_lora(context)
    assert not is_flux2_lora({**context, "diffusion_model.txt_in.lora_A.weight": (4, 4096)})  # T5-XXL: FLUX.1


def test_a_klein_4b_context_width_gives_the_variant(tmp_path: Path) -> None:
    path = tmp_path / "klein4b.safetensors"
    save_file({"diffusion_model.txt_in.lora_A.weight": torch.zeros(2, 7680),
               "diffusion_model.txt_in.lora_B.weight": torch.zeros(3072, 2),
               "diffusion_model.double_blocks.0.img_mlp.0.lora_A.weight": torch.zeros(2, 3072),
               "diffusion_model.double_blocks.0.img_mlp.0.lora_B.weight": torch.zeros(18432, 2)}, str(path))
    assert (probe(path).base, probe(path).variant) == (BaseModelType.Flux2, Flux2VariantType.Klein4B)


@pytest.mark.parametrize("style", ["aitoolkit", "kohya"])
def test_bfl_names_become_the_diffusers_layers(tmp_path: Path, style: str) -> None:
    bfl = load_file(build_flux2_bfl_lora(tmp_path / "klein.safetensors", style=style, seed=SEED))
    converted, expected = to_patch_names(bfl), by_hand(bfl)
    assert sorted(converted) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(converted[key], tensor), key
    if style == "kohya":  # each split layer keeps the fused layer's alpha
        assert all(converted[f"transformer.{t}.alpha"].item() == 2.0 for t in SPLIT["double_blocks.0.img_attn.qkv"])


def test_a_bfl_layer_flux2_lacks_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"double_blocks.0.img_mod.lin.*not one a LoRA can patch"):
        to_patch_names({"diffusion_model.double_blocks.0.img_mod.lin.lora_A.weight": torch.zeros(2, 8),
                        "diffusion_model.double_blocks.0.img_mod.lin.lora_B.weight": torch.zeros(48, 2)})


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("flux2-bfl-loras")
    registry = ModelRegistry(root.as_uri())
    bfl = build_flux2_bfl_lora(root / "bfl.safetensors", style="aitoolkit", seed=SEED)
    save_file({k: v.clone() for k, v in by_hand(load_file(bfl)).items()}, str(root / "diffusers.safetensors"))

    def install(path: Path, name: str) -> dict[str, Any]:
        return install_model(registry, str(path), name=name, inplace=True).identifier()

    return {"manager": ModelManager(registry, device="cpu"),
            "main": install(build_flux2_model(root / "klein", seed=SEED), "klein"),
            "bfl": install(bfl, "bfl"), "diffusers": install(root / "diffusers.safetensors", "diffusers")}


def generate(tmp_path: Path, models: dict[str, Any], lora: str | None) -> np.ndarray:
    run = RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux2", run_id="r1"),
                     services={"models": models["manager"]})
    nodes = {"loader": {"type": "flux2_klein_model_loader", "model": models["main"], "max_seq_len": 256},
             "prompt": {"type": "flux2_klein_text_encoder", "prompt": "a red fox", "max_seq_len": 256},
             "denoise": {"type": "flux2_denoise", "width": SIZE, "height": SIZE, "num_steps": 2, "seed": 1},
             "decode": {"type": "flux2_vae_decode"}}
    edges = [edge("loader", "qwen3_encoder", "prompt", "qwen3_encoder"), edge("loader", "vae", "denoise", "vae"),
             edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("denoise", "latents", "decode", "latents"), edge("loader", "vae", "decode", "vae")]
    if lora is None:
        edges.append(edge("loader", "transformer", "denoise", "transformer"))
    else:
        nodes["lora"] = {"type": "flux2_klein_lora_loader", "lora": models[lora], "weight": 0.8}
        edges += [edge("loader", "transformer", "lora", "transformer"),
                  edge("lora", "transformer", "denoise", "transformer")]
    state = run_nodes(run, nodes, edges)
    [decoded] = state.outputs_of("decode")
    return np.asarray(stored_image(run, decoded).convert("RGB")).astype(np.int16)


def test_a_bfl_named_lora_gives_the_image_of_the_same_lora_in_diffusers_names(tmp_path: Path,
                                                                              installed: dict[str, Any]) -> None:
    plain = generate(tmp_path / "plain", installed, None)
    bfl = generate(tmp_path / "bfl", installed, "bfl")
    diffusers = generate(tmp_path / "diffusers", installed, "diffusers")
    assert np.abs(bfl - plain).max() > 2  # the LoRA does something
    assert np.abs(bfl - diffusers).max() <= 1  # and the same thing in either naming (float summation order)

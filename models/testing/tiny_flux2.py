"""Tiny random-weight FLUX.2 Klein models (diffusers' ``Flux2KleinPipeline`` layout) for tests and offline runs.

As for FLUX.1 (`invokeai_provider.models.testing.tiny_flux`), the sizes a prober reads are the real ones and the rest
is narrow. The transformer takes 128 channels per token (32 VAE channels in 2x2 patches) and, as its context, three
hidden states of Qwen3-4B side by side (7,680 wide: InvokeAI reads that as Klein 4B); it has one double and one
single block of two 16-wide heads and no guidance embedder (Klein's). The text encoder is `tiny_qwen3`'s 27-layer
Qwen3 of Qwen3-4B's width. The VAE is diffusers' ``AutoencoderKLFlux2`` with 32 latent channels and its batch-norm
statistics over the 128 patch channels drawn at random (a real model's are not 0 and 1, and FLUX.2 latents are
normalized by them). The scheduler is Klein's: flow matching, exponential dynamic shifting.

``klein_4b`` is step-distilled (the pipeline's ``is_distilled``); ``klein_4b_base`` is the same architecture, told
apart by its name as InvokeAI does, and runs CFG. FLUX.2 [dev] (``build_flux2_dev_model``) is a ``Flux2Pipeline``
folder: the transformer with a guidance embedder and three hidden states of Mistral Small 3 as its context (15,360),
`tiny_mistral`'s encoder and Pixtral-processor folder, the same VAE. A BFL single file of the transformer (BFL's names, fused QKV) and
of the VAE (LDM names with ``bn.*``) can be written from the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from invokeai_provider.models.testing.tiny import _construct, _derive_seed
from invokeai_provider.models.testing.tiny_mistral import MISTRAL_WIDTH
from invokeai_provider.models.testing.tiny_qwen3 import QWEN3_4B_WIDTH, qwen3_encoder, qwen3_tokenizer

Flux2Variant = Literal["klein_4b", "klein_4b_base"]
VARIANTS: tuple[Flux2Variant, ...] = ("klein_4b", "klein_4b_base")
CONTEXT_WIDTH = 3 * QWEN3_4B_WIDTH  # the transformer's joint_attention_dim: Klein 4B's 7,680
DEV_CONTEXT_WIDTH = 3 * MISTRAL_WIDTH  # [dev]'s: three hidden states of Mistral Small 3, 15,360
HEADS, HEAD_DIM = 2, 16
# Klein's scheduler (the real model's scheduler_config.json)
SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                 base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential")


def _transformer(seed: int, *, dev: bool = False) -> Any:
    """Klein's transformer (no guidance embedder), or [dev]'s: Mistral's context width and a guidance embedder."""
    from diffusers import Flux2Transformer2DModel

    return _construct(lambda: Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS, joint_attention_dim=DEV_CONTEXT_WIDTH if dev else CONTEXT_WIDTH,
        timestep_guidance_channels=256, mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=dev),
        materialize=True, seed=seed, tag="flux2-dev/transformer" if dev else "flux2/transformer")


def _vae(seed: int) -> Any:
    import torch
    from diffusers import AutoencoderKLFlux2

    vae = _construct(lambda: AutoencoderKLFlux2(
        block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=32, norm_num_groups=32,
        sample_size=64), materialize=True, seed=seed, tag="flux2/vae")
    generator = torch.Generator().manual_seed(_derive_seed(seed, "flux2/vae/bn"))
    features = vae.bn.running_mean.shape[0]
    vae.bn.running_mean.copy_(torch.empty(features).uniform_(-0.5, 0.5, generator=generator))
    vae.bn.running_var.copy_(torch.empty(features).uniform_(0.5, 2.0, generator=generator))
    return vae


def flux2_components(variant: Flux2Variant = "klein_4b", seed: int = 0) -> dict[str, Any]:
    """What ``Flux2KleinPipeline(**components)`` takes for a tiny model of ``variant``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if variant not in VARIANTS:
        raise ValueError(f"FLUX.2 variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    tokenizer = qwen3_tokenizer()
    return {"transformer": _transformer(seed), "vae": _vae(seed),
            "text_encoder": qwen3_encoder(seed, vocab_size=len(tokenizer), tag="flux2/qwen3"),
            "tokenizer": tokenizer, "scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULER),
            "is_distilled": variant == "klein_4b"}


def build_flux2_dev_model(dest: Path, *, seed: int = 0) -> Path:
    """A tiny FLUX.2 [dev] model as a diffusers folder laid out as FLUX.2-dev's: a ``Flux2Pipeline`` whose
    transformer has a guidance embedder and Mistral's context width, `tiny_mistral`'s encoder (the same weights as
    ``build_mistral_encoder(seed=seed, tag="flux2-dev/mistral")``) with its tokenizer saved as a
    ``PixtralProcessor`` folder, Klein's VAE (the same for the same seed) and scheduler."""
    import json
    import shutil

    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline

    from invokeai_provider.models.testing.tiny_mistral import mistral_encoder, mistral_tokenizer, save_processor

    dest = _new(dest)
    Flux2Pipeline(transformer=_transformer(seed, dev=True), vae=_vae(seed),
                  text_encoder=mistral_encoder(seed, tag="flux2-dev/mistral"), tokenizer=mistral_tokenizer(),
                  scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER)).save_pretrained(dest, safe_serialization=True)
    shutil.rmtree(dest / "tokenizer")
    save_processor(dest / "tokenizer")
    index = json.loads((dest / "model_index.json").read_text())
    (dest / "model_index.json").write_text(json.dumps({**index, "tokenizer": ["transformers", "PixtralProcessor"]},
                                                      indent=2))
    return dest


def _new(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists() and (dest.is_file() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} is not empty")
    return dest


def build_flux2_model(dest: Path, *, variant: Flux2Variant = "klein_4b", seed: int = 0) -> Path:
    """A tiny FLUX.2 Klein model as a diffusers folder (``model_index.json`` of a ``Flux2KleinPipeline``). Name the
    folder with "base" for ``klein_4b_base``: that is how the variants are told apart."""
    from diffusers import Flux2KleinPipeline

    dest = _new(dest)
    Flux2KleinPipeline(**flux2_components(variant, seed)).save_pretrained(dest, safe_serialization=True)
    return dest


def build_flux2_vae(dest: Path, *, seed: int = 0) -> Path:
    """The tiny FLUX.2 VAE (the main's, for the same seed): a diffusers ``AutoencoderKLFlux2`` folder, or BFL's
    single file (LDM names and ``bn.*``) when ``dest`` ends in ``.safetensors``."""
    dest = _new(dest)
    vae = _vae(seed)
    if dest.suffix != ".safetensors":
        vae.save_pretrained(dest, safe_serialization=True)
        return dest
    from safetensors.torch import save_file

    from invokeai_provider.models.stable_diffusion.ldm_keys import vae_to_ldm

    state = {key: value.contiguous() for key, value in vae.state_dict().items()}
    bn = {key: state.pop(key) for key in list(state) if key.startswith("bn.")}
    ldm = vae_to_ldm(state, num_blocks=len(vae.config.block_out_channels))
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({**ldm, **{k: v for k, v in bn.items() if not k.endswith("num_batches_tracked")}}, str(dest))
    return dest


def bfl_transformer_state(seed: int = 0, *, dev: bool = False) -> dict[str, Any]:
    """The tiny transformer's weights (Klein's, or with ``dev`` [dev]'s, guidance embedder included) under Black
    Forest Labs' names (what a FLUX.2 single file carries), renamed with the table BFL-named LoRAs are read with:
    fused ``qkv`` in the double blocks, ``linear1``/``linear2`` in the single ones, ``*_norm.scale``, and the final
    modulation's halves in BFL's (shift, scale) order."""
    import torch

    from invokeai_provider.models.flux2.bfl_names import DOUBLE_BLOCK_NORMS, FLUX2_NAMES, SINGLE_BLOCK_NORMS

    state = {key: value.contiguous() for key, value in _transformer(seed, dev=dev).state_dict().items()}
    out: dict[str, Any] = {}
    for bfl, target in FLUX2_NAMES.top_level.items():
        for param in ("weight", "bias"):
            if (key := f"{target}.{param}") in state:
                value = state.pop(key)
                if bfl in FLUX2_NAMES.swapped_halves:
                    value = torch.cat(value.chunk(2)[::-1])
                out[f"{bfl}.{param}"] = value
    for blocks, owner, table, norms in (
            ("double_blocks", "transformer_blocks", FLUX2_NAMES.double_block, DOUBLE_BLOCK_NORMS),
            ("single_blocks", "single_transformer_blocks", FLUX2_NAMES.single_block, SINGLE_BLOCK_NORMS)):
        for index in {int(k.split(".")[1]) for k in state if k.startswith(owner + ".")}:
            prefix = f"{owner}.{index}."
            for bfl, targets in table.items():
                for param in ("weight", "bias"):
                    if parts := [state.pop(k) for t in targets if (k := f"{prefix}{t}.{param}") in state]:
                        out[f"{blocks}.{index}.{bfl}.{param}"] = torch.cat(parts)
            for bfl, target in norms.items():
                out[f"{blocks}.{index}.{bfl}"] = state.pop(prefix + target)
    if state:
        raise ValueError(f"tiny FLUX.2 weights with no BFL name: {sorted(state)}")
    return out


def build_flux2_checkpoint(dest: Path, *, seed: int = 0, prefix: str = "", dev: bool = False) -> Path:
    """The tiny transformer (the Klein main's, or with ``dev`` the [dev] main's, for the same seed) as BFL's single
    file, its keys under ``prefix`` (ComfyUI's files use ``model.diffusion_model.``)."""
    from safetensors.torch import save_file

    dest = _new(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + key: value for key, value in bfl_transformer_state(seed, dev=dev).items()}, str(dest))
    return dest


LORA_LAYERS = ("transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v",
               "transformer_blocks.0.attn.to_out.0", "transformer_blocks.0.ff.linear_in",
               "single_transformer_blocks.0.attn.to_qkv_mlp_proj", "single_transformer_blocks.0.attn.to_out")


def build_flux2_lora(dest: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """A tiny random FLUX.2 Klein LoRA ``.safetensors`` for the tiny transformer, in diffusers' PEFT naming
    (``transformer.<module>.lora_A.weight`` / ``lora_B.weight``), including the single blocks' fused
    ``to_qkv_mlp_proj`` that marks it as FLUX.2's."""
    import torch
    from safetensors.torch import save_file

    dest = Path(dest)
    if dest.suffix != ".safetensors" or dest.exists():
        raise ValueError(f"{dest}: expected a new .safetensors file")
    shapes = {key: value.shape for key, value in _transformer(0).state_dict().items()}
    generator = torch.Generator().manual_seed(_derive_seed(seed, "flux2/lora"))
    tensors = {}
    for layer in LORA_LAYERS:
        fan_out, fan_in = shapes[f"{layer}.weight"]
        tensors[f"transformer.{layer}.lora_A.weight"] = torch.empty(rank, fan_in).uniform_(
            -(fan_in ** -0.5), fan_in ** -0.5, generator=generator)
        tensors[f"transformer.{layer}.lora_B.weight"] = torch.empty(fan_out, rank).uniform_(-0.5, 0.5,
                                                                                          generator=generator)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest))
    return dest


# BFL layers of the tiny transformer a BFL-named LoRA patches: fused qkv, the SwiGLU MLP, fused linear1 (no
# shared modulation, so only the MLP widths tell it from a FLUX.1 LoRA)
BFL_LORA_LAYERS = {"double_blocks.0.img_attn.qkv": "transformer_blocks.0.attn.to_q",
                   "double_blocks.0.img_attn.proj": "transformer_blocks.0.attn.to_out.0",
                   "double_blocks.0.img_mlp.0": "transformer_blocks.0.ff.linear_in",
                   "double_blocks.0.txt_mlp.2": "transformer_blocks.0.ff_context.linear_out",
                   "single_blocks.0.linear1": "single_transformer_blocks.0.attn.to_qkv_mlp_proj",
                   "single_blocks.0.linear2": "single_transformer_blocks.0.attn.to_out"}


def build_flux2_bfl_lora(dest: Path, *, style: str = "aitoolkit", rank: int = 4, seed: int = 0) -> Path:
    """A tiny random FLUX.2 LoRA in Black Forest Labs' layer names: ``aitoolkit`` style
    (``diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight``, no alpha) or ``kohya`` style
    (``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`` with ``.alpha``)."""
    import torch
    from safetensors.torch import save_file

    if style not in ("aitoolkit", "kohya"):
        raise ValueError(f"BFL FLUX.2 LoRA style {style!r}: expected aitoolkit or kohya")
    dest = Path(dest)
    if dest.suffix != ".safetensors" or dest.exists():
        raise ValueError(f"{dest}: expected a new .safetensors file")
    shapes = {key: value.shape for key, value in _transformer(0).state_dict().items()}
    generator = torch.Generator().manual_seed(_derive_seed(seed, f"flux2/bfl-lora/{style}"))
    tensors = {}
    for bfl, module in BFL_LORA_LAYERS.items():
        fan_out, fan_in = shapes[f"{module}.weight"]
        fan_out *= 3 if bfl.endswith(".qkv") else 1
        down = torch.empty(rank, fan_in).uniform_(-(fan_in ** -0.5), fan_in ** -0.5, generator=generator)
        up = torch.empty(fan_out, rank).uniform_(-0.5, 0.5, generator=generator)
        if style == "aitoolkit":
            tensors |= {f"diffusion_model.{bfl}.lora_A.weight": down, f"diffusion_model.{bfl}.lora_B.weight": up}
        else:
            stem = "lora_unet_" + bfl.replace(".", "_")
            tensors |= {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
                        f"{stem}.alpha": torch.tensor(rank / 2)}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest))
    return dest


__all__ = ["BFL_LORA_LAYERS", "CONTEXT_WIDTH", "build_flux2_bfl_lora", "build_flux2_lora", "SCHEDULER", "VARIANTS", "bfl_transformer_state", "build_flux2_checkpoint",
           "build_flux2_model", "build_flux2_vae", "flux2_components"]

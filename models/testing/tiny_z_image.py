"""Tiny random-weight Z-Image models for tests and offline smoke runs: the ``ZImagePipeline`` folder, its Qwen3
encoder as InvokeAI's standalone ``qwen3_encoder`` model, a single-file transformer, LoRAs and a ControlNet.

As for FLUX (`invokeai_provider.models.testing.tiny_flux`), the sizes a prober reads are the real ones and the rest
is narrow: the Qwen3 encoder is 2,560 wide (Qwen3-4B's, which InvokeAI reads as the ``qwen3_4b`` variant and the
transformer's ``cap_feat_dim``) with two thin layers; the transformer takes 16 latent channels in 2x2 patches; the
VAE is FLUX.1's tiny one (16 channels, FLUX's scaling and shift). The scheduler is the real model's: static shift 3
(Turbo) or 6 (Base), which is how InvokeAI tells the variants apart.

The Qwen3 encoder and its offline Qwen-format tokenizer are `tiny_qwen3`'s (shared with FLUX.2 Klein), with two
layers here: the pipeline folder holds its ``Qwen3Model`` (as the real one does), the standalone ``qwen3_encoder``
folder the whole ``Qwen3ForCausalLM``, with the same weights for the same seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from invokeai_provider.models.testing.tiny import _construct
from invokeai_provider.models.testing.tiny_qwen3 import QWEN3_4B_WIDTH, qwen3_encoder, qwen3_tokenizer

ZImageVariant = Literal["turbo", "zbase"]
VARIANTS: tuple[ZImageVariant, ...] = ("turbo", "zbase")
QWEN3_WIDTH = QWEN3_4B_WIDTH  # the transformer's cap_feat_dim, read by probing as the 4B variant
QWEN3_LAYERS = 2  # Z-Image reads the second-to-last hidden state: two layers are enough
SCHEDULER_SHIFT = {"turbo": 3.0, "zbase": 6.0}  # the real models' static shifts (InvokeAI's variant rule)
DIM, HEADS, LAYERS, REFINERS = 64, 2, 3, 1  # the tiny transformer: 2 heads of 32 (RoPE axes 8 + 12 + 12)
CONTROL_PLACES = (0, 2)  # InvokeAI puts control block i after main layer 2*i


def _qwen3(seed: int) -> Any:
    """The tiny Qwen3 (`tiny_qwen3`'s, two layers) as a causal LM; a pipeline takes its ``Qwen3Model``."""
    return qwen3_encoder(seed, vocab_size=len(qwen3_tokenizer()), layers=QWEN3_LAYERS, tag="z-image/qwen3")


def _transformer(seed: int, layers: int = LAYERS) -> Any:
    """The tiny transformer (``layers`` main layers: tests of per-layer behaviour take fewer)."""
    from diffusers import ZImageTransformer2DModel

    return _construct(lambda: ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=DIM, n_layers=layers,
        n_refiner_layers=REFINERS, n_heads=HEADS, n_kv_heads=HEADS, cap_feat_dim=QWEN3_WIDTH,
        axes_dims=[8, 12, 12], axes_lens=[1024, 512, 512]), materialize=True, seed=seed, tag="z-image/transformer")


def _vae(seed: int) -> Any:
    from invokeai_provider.models.testing.tiny_flux import _vae as flux_vae

    return flux_vae(seed)  # FLUX.1's VAE architecture, which Z-Image uses


def z_image_components(variant: ZImageVariant = "turbo", seed: int = 0) -> dict[str, Any]:
    """The components ``ZImagePipeline(**components)`` takes, for a tiny model of ``variant``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if variant not in VARIANTS:
        raise ValueError(f"Z-Image variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    return {"transformer": _transformer(seed), "vae": _vae(seed), "text_encoder": _qwen3(seed).model,
            "tokenizer": qwen3_tokenizer(),
            "scheduler": FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SCHEDULER_SHIFT[variant],
                                                         use_dynamic_shifting=False)}


def _new(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists() and (dest.is_file() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} is not empty")
    return dest


def build_z_image_model(dest: Path, *, variant: ZImageVariant = "turbo", seed: int = 0) -> Path:
    """A tiny Z-Image model as a diffusers folder (``model_index.json`` of a ``ZImagePipeline``)."""
    from diffusers import ZImagePipeline

    dest = _new(dest)
    ZImagePipeline(**z_image_components(variant, seed)).save_pretrained(dest, safe_serialization=True)
    return dest


def build_qwen3_encoder(dest: Path, *, seed: int = 0) -> Path:
    """InvokeAI's standalone ``qwen3_encoder`` folder: ``text_encoder/`` (the tiny main's Qwen3, for the same seed)
    and ``tokenizer/``."""
    dest = _new(dest)
    _qwen3(seed).save_pretrained(dest / "text_encoder", safe_serialization=True)
    qwen3_tokenizer().save_pretrained(dest / "tokenizer")
    return dest


def original_transformer_state(seed: int = 0) -> dict[str, Any]:
    """The tiny transformer's weights under the original (Tongyi / ComfyUI) names a single file carries: fused
    ``attention.qkv``, ``attention.out``, ``q_norm``/``k_norm``, ``x_embedder``/``final_layer`` without the
    patch-size key."""
    import torch

    state = {key: value.contiguous() for key, value in _transformer(seed).state_dict().items()}
    out: dict[str, Any] = {}
    for key, value in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q.weight" in key:
            stem = key.removesuffix(".attention.to_q.weight")
            out[f"{stem}.attention.qkv.weight"] = torch.cat(
                [value, state[f"{stem}.attention.to_k.weight"], state[f"{stem}.attention.to_v.weight"]]).contiguous()
            continue
        new = (key.replace("all_x_embedder.2-1.", "x_embedder.").replace("all_final_layer.2-1.", "final_layer.")
               .replace(".attention.to_out.0.", ".attention.out.").replace(".attention.norm_q.", ".attention.q_norm.")
               .replace(".attention.norm_k.", ".attention.k_norm."))
        out[new] = value
    return out


def build_z_image_checkpoint(dest: Path, *, seed: int = 0, prefix: str = "") -> Path:
    """The tiny transformer (the main's, for the same seed) as one ``.safetensors`` file under the original names,
    optionally under a ComfyUI bundle ``prefix`` such as ``model.diffusion_model.``."""
    from safetensors.torch import save_file

    dest = _new(dest)
    if dest.suffix != ".safetensors":
        raise ValueError(f"{dest}: expected a .safetensors file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + key: value for key, value in original_transformer_state(seed).items()}, str(dest))
    return dest


ZImageLoraStyle = Literal["kohya", "diffusers", "diffusion_model"]
LORA_STYLES: tuple[ZImageLoraStyle, ...] = ("kohya", "diffusers", "diffusion_model")


def lora_layers() -> dict[str, tuple[int, int]]:
    """The tiny transformer's LoRA-patchable layers that InvokeAI's converters name (diffusers' module paths):
    (fan_out, fan_in)."""
    hidden = int(DIM / 3 * 8)
    layers: dict[str, tuple[int, int]] = {}
    for block, count in (("layers", LAYERS), ("noise_refiner", REFINERS), ("context_refiner", REFINERS)):
        for i in range(count):
            for proj in ("to_q", "to_k", "to_v"):
                layers[f"{block}.{i}.attention.{proj}"] = (DIM, DIM)
            layers |= {f"{block}.{i}.feed_forward.w1": (hidden, DIM), f"{block}.{i}.feed_forward.w3": (hidden, DIM),
                       f"{block}.{i}.feed_forward.w2": (DIM, hidden)}
    return layers


def build_z_image_lora(dest: Path, *, style: ZImageLoraStyle = "kohya", rank: int = 4, seed: int = 0,
                       text_encoder: bool = False) -> Path:
    """A tiny random Z-Image LoRA ``.safetensors`` for the tiny transformer, in a format InvokeAI reads:

    * ``kohya``: ``lora_unet__layers_0_attention_to_k.lora_down.weight`` with ``.alpha``;
    * ``diffusion_model``: ``diffusion_model.layers.0.attention.to_k.lora_A.weight`` (musubi-tuner, ai-toolkit);
    * ``diffusers``: ``transformer.layers.0.attention.to_k.lora_A.weight`` (PEFT).

    With ``text_encoder``, the PEFT styles also carry Qwen3 layers (``text_encoder.layers.0.self_attn.q_proj``).
    """
    import torch
    from safetensors.torch import save_file

    if style not in LORA_STYLES:
        raise ValueError(f"Z-Image LoRA style {style!r}: expected one of {', '.join(LORA_STYLES)}")
    dest = Path(dest)
    if dest.suffix != ".safetensors" or dest.exists():
        raise ValueError(f"{dest}: expected a new .safetensors file")
    generator = torch.Generator().manual_seed(seed)

    def factors(fan_out: int, fan_in: int) -> tuple[Any, Any]:
        down = torch.empty(rank, fan_in).uniform_(-(fan_in ** -0.5), fan_in ** -0.5, generator=generator)
        return torch.empty(fan_out, rank).uniform_(-0.5, 0.5, generator=generator), down

    tensors: dict[str, Any] = {}
    for name, (fan_out, fan_in) in lora_layers().items():
        up, down = factors(fan_out, fan_in)
        if style == "kohya":
            key = "lora_unet__" + name.replace(".", "_")
            tensors |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                        f"{key}.alpha": torch.tensor(rank / 2.0)}
        else:
            key = f"{'transformer' if style == 'diffusers' else 'diffusion_model'}.{name}"
            tensors |= {f"{key}.lora_A.weight": down, f"{key}.lora_B.weight": up}
    if text_encoder and style != "kohya":
        for proj, (fan_out, fan_in) in (("q_proj", (16, QWEN3_WIDTH)), ("v_proj", (8, QWEN3_WIDTH))):  # 2 / 1 x 8
            up, down = factors(fan_out, fan_in)
            key = f"text_encoder.layers.0.self_attn.{proj}"
            tensors |= {f"{key}.lora_A.weight": down, f"{key}.lora_B.weight": up}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest))
    return dest


def _controlnet(seed: int, control_in_dim: int) -> Any:
    from diffusers import ZImageControlNetModel

    return _construct(lambda: ZImageControlNetModel(
        control_layers_places=list(CONTROL_PLACES), control_in_dim=control_in_dim, add_control_noise_refiner=None,
        dim=DIM, n_refiner_layers=2, n_heads=HEADS, n_kv_heads=HEADS), materialize=True, seed=seed,
        tag=f"z-image/controlnet-{control_in_dim}")


def controlnet_state(seed: int = 0, control_in_dim: int = 16) -> dict[str, Any]:
    """The tiny ControlNet's weights as Alibaba's single file stores them (``control_layers.*``,
    ``control_all_x_embedder.2-1.*``, ``control_noise_refiner.*``)."""
    return {key: value.contiguous() for key, value in _controlnet(seed, control_in_dim).state_dict().items()}


def build_z_image_controlnet(dest: Path, *, seed: int = 0, control_in_dim: int = 16) -> Path:
    """A tiny Z-Image ControlNet (V1: 16 input channels; V2.0: 33) as the single ``.safetensors`` file InvokeAI
    installs: two control blocks for the tiny transformer's layers 0 and 2."""
    from safetensors.torch import save_file

    dest = Path(dest)
    if dest.suffix != ".safetensors":
        dest = dest / "z-image-controlnet.safetensors"
    _new(dest).parent.mkdir(parents=True, exist_ok=True)
    save_file(controlnet_state(seed, control_in_dim), str(dest))
    return dest


__all__ = ["LORA_STYLES", "QWEN3_WIDTH", "VARIANTS", "build_qwen3_encoder", "build_z_image_checkpoint",
           "build_z_image_controlnet", "build_z_image_lora", "build_z_image_model", "controlnet_state",
           "original_transformer_state", "z_image_components"]

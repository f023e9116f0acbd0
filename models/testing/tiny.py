"""Tiny random-weight Stable Diffusion models, VAEs, LoRAs and embeddings for tests and demos.

No model hub is reachable, yet loaders, probers and denoise nodes need real files to chew on. The models built here
are a few hundred MB at most and build in seconds, but keep every property that InvokeAI uses to *identify* a model:

* the UNet ``cross_attention_dim`` is the real one (768 SD1, 1024 SD2, 2048 SDXL, 1280 refiner), so the text encoder
  hidden sizes are real too (their token embedding dominates the file size); everything else is narrow;
* the down/up block types and ``layers_per_block=2`` mirror the real UNets, so the single-file keys the prober reads
  (``input_blocks.2.1...attn2.to_k`` / ``input_blocks.4.1...attn2.to_k`` / ``input_blocks.0.0``) exist;
* the VAE has four blocks so its scale factor is 8, like the real one;
* the tokenizer is the real CLIP BPE tokenizer (vocabulary taken from the open-clip-torch wheel).

Single files use the original LDM/SGM key layout (``stable_diffusion.ldm_keys``, the inverse of diffusers'
``single_file_utils`` converters), and the tests prove it by converting back with diffusers' own code.
Loading a single file offline needs ``config=`` pointing at a diffusers folder of the same base/variant
(``build_sd_config`` writes a weight-less one).

Heavy libraries are imported inside functions: nothing in the provider imports this module at import time.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from invokeai_provider.models.stable_diffusion.clip_vocab import (
    CLIP_MAX_LENGTH,
    CLIP_VOCAB_SIZE,
    EOS,
    cache_root,
    clip_tokenizer,
    clip_tokenizer_files,
)
from invokeai_provider.models.stable_diffusion.ldm_keys import (
    clip_to_ldm,
    open_clip_to_ldm,
    unet_key_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)

if TYPE_CHECKING:
    import torch

Base = Literal["sd-1", "sd-2", "sdxl", "sdxl-refiner"]
Layout = Literal["diffusers", "single_file"]
Variant = Literal["normal", "inpaint"]
PredictionType = Literal["epsilon", "v_prediction"]
LoraStyle = Literal["kohya", "diffusers", "peft"]

__all__ = [
    "BASES",
    "build_embedding",
    "build_lora",
    "build_sd_config",
    "build_sd_model",
    "build_vae",
    "cache_root",
    "clip_to_ldm",
    "clip_tokenizer",
    "clip_tokenizer_files",
    "open_clip_to_ldm",
    "unet_key_to_ldm",
    "unet_to_ldm",
    "vae_to_ldm",
]

BASES: tuple[Base, ...] = ("sd-1", "sd-2", "sdxl", "sdxl-refiner")

# ---------------------------------------------------------------------------------------------------------------------
# Tiny architectures
# ---------------------------------------------------------------------------------------------------------------------

_CROSS_ATTN_DOWN, _DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
_CROSS_ATTN_UP, _UP = "CrossAttnUpBlock2D", "UpBlock2D"

# Real hidden sizes (the UNet's cross_attention_dim depends on them); 2 layers and a narrow MLP keep them small.
_TEXT_ENCODERS: dict[str, dict[str, Any]] = {
    "clip-l": dict(hidden_size=768, num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768),
    "openclip-h": dict(hidden_size=1024, num_attention_heads=16, hidden_act="gelu", projection_dim=512),
    "openclip-bigg": dict(hidden_size=1280, num_attention_heads=20, hidden_act="gelu", projection_dim=1280),
}


@dataclass(frozen=True)
class _TextEncoderSpec:
    suffix: str  # "" -> text_encoder/tokenizer, "_2" -> text_encoder_2/tokenizer_2
    kind: str  # key of _TEXT_ENCODERS
    with_projection: bool
    pad_token: str
    ldm_layout: Literal["clip", "openclip"]
    ldm_prefix: str


@dataclass(frozen=True)
class _BaseSpec:
    unet: dict[str, Any]
    vae_scaling_factor: float
    text_encoders: tuple[_TextEncoderSpec, ...]
    scheduler: Literal["pndm", "euler"]
    pipelines: dict[str, str]  # variant -> diffusers pipeline class


_SPECS: dict[str, _BaseSpec] = {
    "sd-1": _BaseSpec(
        unet=dict(
            block_out_channels=(32, 32, 64, 64),
            down_block_types=(_CROSS_ATTN_DOWN,) * 3 + (_DOWN,),
            up_block_types=(_UP,) + (_CROSS_ATTN_UP,) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        ),
        vae_scaling_factor=0.18215,
        text_encoders=(_TextEncoderSpec("", "clip-l", False, EOS, "clip", "cond_stage_model.transformer."),),
        scheduler="pndm",
        pipelines={"normal": "StableDiffusionPipeline", "inpaint": "StableDiffusionInpaintPipeline"},
    ),
    "sd-2": _BaseSpec(
        unet=dict(
            block_out_channels=(32, 32, 64, 64),
            down_block_types=(_CROSS_ATTN_DOWN,) * 3 + (_DOWN,),
            up_block_types=(_UP,) + (_CROSS_ATTN_UP,) * 3,
            cross_attention_dim=1024,
            attention_head_dim=(2, 2, 4, 4),
            use_linear_projection=True,
        ),
        vae_scaling_factor=0.18215,
        text_encoders=(_TextEncoderSpec("", "openclip-h", False, "!", "openclip", "cond_stage_model.model."),),
        scheduler="pndm",
        pipelines={"normal": "StableDiffusionPipeline", "inpaint": "StableDiffusionInpaintPipeline"},
    ),
    "sdxl": _BaseSpec(
        unet=dict(
            block_out_channels=(32, 64, 128),
            down_block_types=(_DOWN, _CROSS_ATTN_DOWN, _CROSS_ATTN_DOWN),
            up_block_types=(_CROSS_ATTN_UP, _CROSS_ATTN_UP, _UP),
            cross_attention_dim=2048,
            attention_head_dim=(2, 4, 8),
            transformer_layers_per_block=(1, 1, 2),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=1280 + 6 * 256,
        ),
        vae_scaling_factor=0.13025,
        text_encoders=(
            _TextEncoderSpec("", "clip-l", False, EOS, "clip", "conditioner.embedders.0.transformer."),
            _TextEncoderSpec("_2", "openclip-bigg", True, "!", "openclip", "conditioner.embedders.1.model."),
        ),
        scheduler="euler",
        pipelines={"normal": "StableDiffusionXLPipeline", "inpaint": "StableDiffusionXLInpaintPipeline"},
    ),
    "sdxl-refiner": _BaseSpec(
        unet=dict(
            block_out_channels=(32, 64, 64, 64),
            down_block_types=(_DOWN, _CROSS_ATTN_DOWN, _CROSS_ATTN_DOWN, _DOWN),
            up_block_types=(_UP, _CROSS_ATTN_UP, _CROSS_ATTN_UP, _UP),
            cross_attention_dim=1280,
            attention_head_dim=(2, 4, 4, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=1280 + 5 * 256,
        ),
        vae_scaling_factor=0.13025,
        text_encoders=(
            _TextEncoderSpec("_2", "openclip-bigg", True, "!", "openclip", "conditioner.embedders.0.model."),
        ),
        scheduler="euler",
        pipelines={"normal": "StableDiffusionXLImg2ImgPipeline"},
    ),
}


def _spec(base: str, variant: str = "normal") -> _BaseSpec:
    if base not in _SPECS:
        raise ValueError(f"unknown base {base!r}; expected one of {BASES}")
    spec = _SPECS[base]
    if variant not in spec.pipelines:
        raise ValueError(f"no {variant!r} variant for base {base!r}")
    return spec


def _derive_seed(seed: int, tag: str) -> int:
    """Independent, order-free stream per component: adding a component never shifts another's weights."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{tag}".encode()).digest()[:8], "little") & (2**63 - 1)


def fill_random_weights(model: torch.nn.Module, generator: torch.Generator, *, device: str = "cpu",
                        dtype: Any = None) -> None:
    """Replace the (meta) parameters of ``model`` by seeded uniform values drawn on ``device``.

    One pass of our own instead of the libraries' init (which initialises big embeddings twice) is several times faster
    and independent of library init changes. Biases and norm parameters are random too, so a mapping that swapped two
    same-shaped tensors cannot pass the round-trip test by accident. On the CPU values are drawn in float32 and then
    cast to ``dtype``; on an accelerator they are drawn in ``dtype`` directly.
    """
    import torch
    from torch import nn

    make_dtype = torch.float32 if device == "cpu" or dtype is None else dtype
    for module in model.modules():
        weight = module._parameters.get("weight")
        fan_in = weight.shape[1:].numel() if weight is not None and weight.ndim > 1 else 0
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            value = torch.empty(param.shape, dtype=make_dtype, device=device)
            if isinstance(module, nn.Embedding):
                value.uniform_(-0.035, 0.035, generator=generator)  # std ~0.02, like CLIP's init
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or not fan_in:
                value.uniform_(-0.1, 0.1, generator=generator)
                if name == "weight":
                    value += 1.0
            else:
                bound = fan_in**-0.5
                value.uniform_(-bound, bound, generator=generator)
            module._parameters[name] = nn.Parameter(value if dtype is None else value.to(dtype), requires_grad=False)


def _construct(factory: Any, *, materialize: bool, seed: int, tag: str) -> Any:
    """Build a model with meta parameters (free), then give it seeded weights unless only the config is wanted."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = factory()
    if materialize:
        import torch

        fill_random_weights(model, torch.Generator().manual_seed(_derive_seed(seed, tag)))
        model.eval()
    return model


def _vae(base: str, seed: int, *, materialize: bool) -> Any:
    """The base's tiny AutoencoderKL: four blocks (scale factor 8, as the real one) and the base's scaling factor.

    The same seed gives the same weights whether it is built inside a pipeline or alone (``build_vae``)."""
    from diffusers import AutoencoderKL

    spec = _spec(base)
    return _construct(
        lambda: AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=1,
            latent_channels=4,
            sample_size=64,
            scaling_factor=spec.vae_scaling_factor,
            force_upcast=base.startswith("sdxl"),
        ),
        materialize=materialize, seed=seed, tag=f"{base}/vae",
    )


def _components(base: str, variant: str, prediction_type: str, seed: int, *, materialize: bool) -> dict[str, Any]:
    """All pipeline components of one tiny model (meta tensors when ``materialize`` is False)."""
    from diffusers import EulerDiscreteScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = _spec(base, variant)
    in_channels = 9 if variant == "inpaint" else 4
    unet_kwargs = dict(sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=2, **spec.unet)
    components: dict[str, Any] = {
        "unet": _construct(lambda: UNet2DConditionModel(**unet_kwargs), materialize=materialize, seed=seed,
                           tag=f"{base}/{variant}/unet"),
        "vae": _vae(base, seed, materialize=materialize),
    }
    for te in spec.text_encoders:
        config = CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            max_position_embeddings=CLIP_MAX_LENGTH,
            intermediate_size=64,
            num_hidden_layers=2,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=1,
            **_TEXT_ENCODERS[te.kind],
        )
        cls = CLIPTextModelWithProjection if te.with_projection else CLIPTextModel
        components[f"text_encoder{te.suffix}"] = _construct(
            lambda cls=cls, config=config: cls(config), materialize=materialize, seed=seed,
            tag=f"{base}/text_encoder{te.suffix}",
        )
        components[f"tokenizer{te.suffix}"] = clip_tokenizer(te.pad_token)
    betas = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 steps_offset=1, prediction_type=prediction_type)
    if spec.scheduler == "pndm":
        components["scheduler"] = PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **betas)
    else:
        components["scheduler"] = EulerDiscreteScheduler(timestep_spacing="leading", interpolation_type="linear",
                                                         **betas)
    return components


def _pipeline(base: str, variant: str, components: dict[str, Any]) -> Any:
    import diffusers

    cls = getattr(diffusers, _spec(base, variant).pipelines[variant])
    if base in ("sd-1", "sd-2"):
        extra = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    elif base == "sdxl-refiner":
        extra = dict(text_encoder=None, tokenizer=None, requires_aesthetics_score=True,
                     force_zeros_for_empty_prompt=False, add_watermarker=False)
    else:
        extra = dict(add_watermarker=False)
    return cls(**components, **extra)


def _add_vocab_files(folder: Path) -> None:
    """Ship vocab.json/merges.txt next to tokenizer.json, as hub repos do: transformers 4.x reads those."""
    files = clip_tokenizer_files()
    for tokenizer_dir in folder.glob("tokenizer*"):
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(files / name, tokenizer_dir / name)


def _check_dest(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def _single_file_state_dict(base: str, components: dict[str, Any], prediction_type: str) -> dict[str, torch.Tensor]:
    import torch

    unet, vae = components["unet"], components["vae"]
    sd = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    vae_blocks = len(vae.config.block_out_channels)
    sd.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(vae.state_dict(), vae_blocks).items()})
    for te in _SPECS[base].text_encoders:
        convert = clip_to_ldm if te.ldm_layout == "clip" else open_clip_to_ldm
        sd.update(convert(components[f"text_encoder{te.suffix}"].state_dict(), te.ldm_prefix))
    if base == "sd-2":
        # InvokeAI reads SD2's prediction type from the training step the checkpoint was saved at.
        sd["global_step"] = torch.tensor(220000 if prediction_type == "epsilon" else 110000, dtype=torch.int64)
    return {k: v.contiguous() for k, v in sd.items()}


def build_sd_model(
    base: Base,
    dest: Path,
    *,
    layout: Layout = "diffusers",
    variant: Variant = "normal",
    prediction_type: PredictionType = "epsilon",
    seed: int = 0,
) -> Path:
    """Build a tiny random Stable Diffusion model at ``dest`` and return ``dest``.

    ``layout="diffusers"``: ``dest`` is a new pipeline folder (``model_index.json``, unet/, vae/, text_encoder*/,
    tokenizer*/, scheduler/) in safetensors. ``layout="single_file"``: ``dest`` is a new ``.safetensors`` file in the
    original LDM/SGM key layout. Same arguments -> identical bytes. ``prediction_type`` goes to the scheduler config;
    single files only record it for SD2 (``global_step``, the way InvokeAI detects it).
    """
    if layout not in ("diffusers", "single_file"):
        raise ValueError(f"unknown layout {layout!r}")
    if layout == "single_file" and Path(dest).suffix != ".safetensors":
        raise ValueError(f"single-file destination must end with .safetensors, got {Path(dest).name}")
    _spec(base, variant)
    dest = _check_dest(dest)
    components = _components(base, variant, prediction_type, seed, materialize=True)
    if layout == "diffusers":
        _pipeline(base, variant, components).save_pretrained(dest, safe_serialization=True)
        _add_vocab_files(dest)
    else:
        from safetensors.torch import save_file

        save_file(_single_file_state_dict(base, components, prediction_type), str(dest), metadata={"format": "pt"})
    return dest


def build_vae(base: Base, dest: Path, *, seed: int = 0) -> Path:
    """Build the base's tiny VAE alone as a diffusers folder (``config.json`` + safetensors) at ``dest``.

    InvokeAI tells VAE bases apart by the folder name (``xl`` -> SDXL, ``sd2`` -> SD2, else SD1), so name
    ``dest`` accordingly. Same arguments -> identical bytes, equal to the VAE inside ``build_sd_model``'s pipeline.
    """
    dest = _check_dest(dest)
    _vae(base, seed, materialize=True).save_pretrained(dest, safe_serialization=True)
    return dest


def build_sd_config(
    base: Base, dest: Path, *, variant: Variant = "normal", prediction_type: PredictionType = "epsilon"
) -> Path:
    """Weight-less diffusers folder (configs + tokenizers) matching ``build_sd_model``.

    Offline, ``<Pipeline>.from_single_file(file, config=<this folder>, local_files_only=True)`` needs it: diffusers
    would otherwise fetch the real model's configs from the hub.
    """
    dest = _check_dest(dest)
    components = _components(base, variant, prediction_type, 0, materialize=False)
    pipe = _pipeline(base, variant, components)
    pipe.save_config(dest)
    for name, component in components.items():
        target = dest / name
        if name.startswith("text_encoder"):
            component.config.save_pretrained(target)
        elif name.startswith("tokenizer") or name == "scheduler":
            component.save_pretrained(target)
        else:
            component.save_config(target)
    _add_vocab_files(dest)
    return dest


# ---------------------------------------------------------------------------------------------------------------------
# LoRA and textual inversion
# ---------------------------------------------------------------------------------------------------------------------

_UNET_LORA_TARGET = re.compile(r".*\.attn[12]\.(to_q|to_k|to_v|to_out\.0)")
_TE_LORA_TARGET = re.compile(r".*\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])")


def _lora_targets(base: str) -> list[tuple[str, str, int, int]]:
    """(owner, diffusers module name, in_features, out_features) of every layer a typical LoRA patches."""
    from torch import nn

    components = _components(base, "normal", "epsilon", 0, materialize=False)
    targets = []
    for owner, pattern in [("unet", _UNET_LORA_TARGET), ("text_encoder", _TE_LORA_TARGET),
                           ("text_encoder_2", _TE_LORA_TARGET)]:
        if owner not in components:
            continue
        for name, module in components[owner].named_modules():
            if isinstance(module, nn.Linear) and pattern.fullmatch(name):
                if owner != "unet" and not name.startswith("text_model."):
                    name = f"text_model.{name}"
                targets.append((owner, name, module.in_features, module.out_features))
    return targets


def build_lora(base: Base, dest: Path, *, style: LoraStyle = "kohya", rank: int = 4, seed: int = 0) -> Path:
    """Build a tiny random LoRA for ``base`` (attention q/k/v/out of UNet and text encoders, plus the CLIP MLPs).

    * ``kohya``: one ``.safetensors`` file at ``dest`` with ``lora_unet_*`` / ``lora_te_*`` (SDXL: ``lora_te1_*``,
      ``lora_te2_*``) ``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``. Like sd-scripts, SD1/SD2 UNet names
      are diffusers paths and SDXL UNet names are SGM paths (``input_blocks_4_1_...``).
    * ``diffusers``: a folder at ``dest`` with ``pytorch_lora_weights.safetensors`` as diffusers' training scripts
      write it (``unet.<path>.lora.down.weight``, ``text_encoder.<path>.lora_linear_layer.down.weight``).
    * ``peft``: the same folder layout with PEFT names (``<owner>.<path>.lora_A.weight`` / ``lora_B.weight``).

    The down matrices' input width is the real token width where InvokeAI looks (attn2.to_k: 768/1024/2048).
    """
    import torch
    from safetensors.torch import save_file

    if base == "sdxl-refiner":
        raise ValueError("LoRAs for the SDXL refiner are not supported")
    _spec(base)
    if style not in ("kohya", "diffusers", "peft"):
        raise ValueError(f"unknown LoRA style {style!r}")
    if style == "kohya" and Path(dest).suffix != ".safetensors":
        raise ValueError(f"kohya LoRA destination must end with .safetensors, got {Path(dest).name}")
    dest = _check_dest(dest)
    sdxl = base == "sdxl"
    unet_config = {"layers_per_block": 2, **_SPECS[base].unet} if sdxl else None
    generator = torch.Generator().manual_seed(_derive_seed(seed, f"{base}/lora/{rank}"))
    tensors: dict[str, torch.Tensor] = {}
    for owner, name, fan_in, fan_out in _lora_targets(base):
        down = torch.empty(rank, fan_in).uniform_(-(fan_in**-0.5), fan_in**-0.5, generator=generator)
        up = torch.empty(fan_out, rank).uniform_(-0.1 * rank**-0.5, 0.1 * rank**-0.5, generator=generator)
        if style == "kohya":
            if owner == "unet":
                path = unet_key_to_ldm(f"{name}.weight", unet_config)[: -len(".weight")] if sdxl else name
                prefix = "lora_unet_"
            else:
                prefix = {"text_encoder": "lora_te1_" if sdxl else "lora_te_", "text_encoder_2": "lora_te2_"}[owner]
                path = name
            key = prefix + path.replace(".", "_")
            tensors |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                        f"{key}.alpha": torch.tensor(float(rank))}
        elif style == "diffusers":
            kind = "lora" if owner == "unet" else "lora_linear_layer"
            tensors |= {f"{owner}.{name}.{kind}.down.weight": down, f"{owner}.{name}.{kind}.up.weight": up}
        else:
            tensors |= {f"{owner}.{name}.lora_A.weight": down, f"{owner}.{name}.lora_B.weight": up}
    if style == "kohya":
        metadata = {"format": "pt", "ss_network_module": "networks.lora", "ss_network_dim": str(rank),
                    "ss_network_alpha": str(rank), "ss_base_model_version": "sdxl_base_v1-0" if sdxl else
                    {"sd-1": "sd_v1", "sd-2": "sd_v2"}[base]}
        save_file(tensors, str(dest), metadata=metadata)
    else:
        dest.mkdir()
        save_file(tensors, str(dest / "pytorch_lora_weights.safetensors"), metadata={"format": "pt"})
    return dest


def build_embedding(base: Base, dest: Path, *, tokens: int = 1, seed: int = 0) -> Path:
    """Build a textual-inversion ``.safetensors`` file at ``dest``.

    SD1/SD2 files hold ``emb_params`` (tokens x 768 / 1024); SDXL files hold ``clip_l`` (x 768) and ``clip_g``
    (x 1280), the keys and widths InvokeAI uses to tell the bases apart.
    """
    import torch
    from safetensors.torch import save_file

    widths = {"sd-1": {"emb_params": 768}, "sd-2": {"emb_params": 1024}, "sdxl": {"clip_l": 768, "clip_g": 1280}}
    if base not in widths:
        raise ValueError(f"textual-inversion embeddings are not supported for base {base!r}")
    if tokens < 1:
        raise ValueError("an embedding needs at least one token vector")
    dest = _check_dest(dest)
    generator = torch.Generator().manual_seed(_derive_seed(seed, f"{base}/embedding/{tokens}"))
    tensors = {key: torch.empty(tokens, width).uniform_(-0.035, 0.035, generator=generator)
               for key, width in widths[base].items()}
    save_file(tensors, str(dest), metadata={"format": "pt"})
    return dest

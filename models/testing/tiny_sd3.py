"""Tiny random-weight SD3 / SD3.5 models (diffusers ``StableDiffusion3Pipeline`` layout) for tests and smoke runs.

As for SD and FLUX, what a prober or loader reads is real and the rest is narrow: the transformer is shaped like
SD3.5 Medium's (16 latent channels in 2x2 patches, a dual-attention first block, RMS q/k norms), its context
embedder takes T5-XXL's 4,096-wide states and its pooled projection CLIP-L's and CLIP-G's pooled outputs side by
side (768 + 1,280). CLIP-L (768) and CLIP-G (1,280) have their real widths (InvokeAI reads a CLIP's variant from
it), projections and the real CLIP tokenizer (the second pads with ``!``, as SD3's does); T5 is FLUX's tiny one
(real width, one layer, a small T5-format tokenizer). The VAE has SD3's 16 latent channels, scaling and shift
factors and no quant convs; the scheduler is SD3's (flow matching, shift 3).

The standalone parts (CLIP-L and CLIP-G embeds with their projections, a T5 encoder, the VAE) come from the same
seeded builders, so with the main's seed they are the main's own weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from invokeai_provider.models.stable_diffusion.clip_vocab import CLIP_MAX_LENGTH, CLIP_VOCAB_SIZE, EOS
from invokeai_provider.models.testing.tiny import _construct, _derive_seed, clip_tokenizer
from invokeai_provider.models.testing.tiny_flux import T5_WIDTH, t5_tokenizer

__all__ = ["CLIP_WIDTHS", "SCHEDULER", "T5_MAX_LENGTH", "VAE_SCALING", "VAE_SHIFT", "build_sd3_clip_embed",
           "build_sd3_model", "build_sd3_t5_encoder", "build_sd3_vae", "sd3_components"]

ClipKind = Literal["l", "g"]

CLIP_WIDTHS: dict[str, int] = {"l": 768, "g": 1280}  # hidden size = projection size, as SD3's encoders have
_CLIP_SPECS: dict[str, dict[str, Any]] = {
    "l": dict(num_attention_heads=12, hidden_act="quick_gelu"),
    "g": dict(num_attention_heads=20, hidden_act="gelu"),
}
_PAD = {"l": EOS, "g": "!"}
VAE_SCALING, VAE_SHIFT = 1.5305, 0.0609  # SD3's VAE config
SCHEDULER: dict[str, Any] = dict(num_train_timesteps=1000, shift=3.0)  # SD3's FlowMatchEulerDiscreteScheduler
T5_MAX_LENGTH = 256  # InvokeAI's and the pipeline's T5 sequence length for SD3


def _transformer(seed: int) -> Any:
    from diffusers import SD3Transformer2DModel

    return _construct(lambda: SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=T5_WIDTH, caption_projection_dim=32,
        pooled_projection_dim=sum(CLIP_WIDTHS.values()), pos_embed_max_size=96, dual_attention_layers=(0,),
        qk_norm="rms_norm"), materialize=True, seed=seed, tag="sd3/transformer")


def _vae(seed: int) -> Any:
    from diffusers import AutoencoderKL

    return _construct(lambda: AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16, sample_size=64,
        scaling_factor=VAE_SCALING, shift_factor=VAE_SHIFT, use_quant_conv=False, use_post_quant_conv=False),
        materialize=True, seed=seed, tag="sd3/vae")


def _clip(kind: ClipKind, seed: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    width = CLIP_WIDTHS[kind]
    config = CLIPTextConfig(hidden_size=width, projection_dim=width, intermediate_size=64, num_hidden_layers=2,
                            vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=49406,
                            eos_token_id=49407, pad_token_id=1, **_CLIP_SPECS[kind])
    return _construct(lambda: CLIPTextModelWithProjection(config), materialize=True, seed=seed,
                      tag=f"sd3/clip-{kind}")


def _t5(seed: int, vocab_size: int) -> Any:
    from invokeai_provider.models.testing.tiny_flux import _t5 as flux_t5

    return flux_t5(_derive_seed(seed, "sd3/t5"), vocab_size)


def sd3_components(seed: int = 0) -> dict[str, Any]:
    """What ``StableDiffusion3Pipeline(**components)`` takes, for the tiny model of ``seed``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    t5_tok = t5_tokenizer(T5_MAX_LENGTH)
    return {"transformer": _transformer(seed), "vae": _vae(seed), "scheduler": FlowMatchEulerDiscreteScheduler(
        **SCHEDULER), "text_encoder": _clip("l", seed), "tokenizer": clip_tokenizer(_PAD["l"]),
        "text_encoder_2": _clip("g", seed), "tokenizer_2": clip_tokenizer(_PAD["g"]),
        "text_encoder_3": _t5(seed, len(t5_tok)), "tokenizer_3": t5_tok}


def _new(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists() and (dest.is_file() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} is not empty")
    return dest


def build_sd3_model(dest: Path, *, seed: int = 0) -> Path:
    """A tiny SD3.5 main: a ``StableDiffusion3Pipeline`` diffusers folder."""
    from diffusers import StableDiffusion3Pipeline

    dest = _new(dest)
    StableDiffusion3Pipeline(**sd3_components(seed)).save_pretrained(dest, safe_serialization=True)
    return dest


def build_sd3_clip_embed(dest: Path, kind: ClipKind = "g", *, seed: int = 0) -> Path:
    """A ``clip_embed`` folder (``text_encoder/`` + ``tokenizer/``) holding the main's CLIP-L or CLIP-G encoder of
    the same seed, with its projection, as SD3 needs it."""
    if kind not in CLIP_WIDTHS:
        raise ValueError(f"CLIP kind {kind!r}: expected 'l' or 'g'")
    dest = _new(dest)
    _clip(kind, seed).save_pretrained(dest / "text_encoder", safe_serialization=True)
    clip_tokenizer(_PAD[kind]).save_pretrained(dest / "tokenizer")
    return dest


def build_sd3_t5_encoder(dest: Path, *, seed: int = 0) -> Path:
    """A ``t5_encoder`` folder in InvokeAI's layout (``text_encoder_2/`` sharded, ``tokenizer_2/``) holding the
    main's T5 of the same seed."""
    from invokeai_provider.models.testing.tiny_flux_parts import T5_SHARD_SIZE

    dest = _new(dest)
    tokenizer = t5_tokenizer(512)  # InvokeAI's standalone T5 tokenizer length; SD3 asks for 256 tokens anyway
    _t5(seed, len(tokenizer)).save_pretrained(dest / "text_encoder_2", safe_serialization=True,
                                              max_shard_size=T5_SHARD_SIZE)
    tokenizer.save_pretrained(dest / "tokenizer_2")
    return dest


def build_sd3_vae(dest: Path, *, seed: int = 0) -> Path:
    """The main's VAE of the same seed as a diffusers ``AutoencoderKL`` folder (SD3's scaling and shift)."""
    dest = _new(dest)
    _vae(seed).save_pretrained(dest, safe_serialization=True)
    return dest

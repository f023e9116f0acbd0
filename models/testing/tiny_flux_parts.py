"""The tiny FLUX.1 model's parts as the standalone models a FLUX user installs beside the transformer:

- a T5 encoder folder in InvokeAI's ``t5_encoder`` layout (``text_encoder_2/``, sharded with
  ``model.safetensors.index.json`` as the real one is, and ``tokenizer_2/``);
- a CLIP-L embed folder (``text_encoder/`` and ``tokenizer/``, as InvokeAI's CLIP embed starter model);
- the VAE as a diffusers ``AutoencoderKL`` folder or as BFL's single file (``ae.safetensors``, LDM names).

Each is built by the same seeded builders as `tiny_flux.build_flux_model`, so with the same seed the parts are the
tiny main's own weights: a graph using them gives the main's image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invokeai_provider.models.stable_diffusion.clip_vocab import clip_tokenizer
from invokeai_provider.models.testing.tiny_flux import _clip, _t5, _vae, t5_tokenizer

__all__ = ["T5_SHARD_SIZE", "build_clip_embed", "build_flux_vae", "build_t5_encoder", "flux_vae_state_dict"]

T5_SHARD_SIZE = "4MB"  # small shards, so the folder has the index file InvokeAI's probe looks for
T5_MAX_LENGTH = 512  # InvokeAI loads a standalone T5 tokenizer with max_length 512


def _new(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists() and (dest.is_file() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} is not empty")
    return dest


def build_t5_encoder(dest: Path, *, seed: int = 0) -> Path:
    """A ``t5_encoder`` folder: the tiny T5 (the main's, for the same seed) and its tokenizer."""
    dest = _new(dest)
    tokenizer = t5_tokenizer(T5_MAX_LENGTH)
    _t5(seed, len(tokenizer)).save_pretrained(dest / "text_encoder_2", safe_serialization=True,
                                              max_shard_size=T5_SHARD_SIZE)
    tokenizer.save_pretrained(dest / "tokenizer_2")
    return dest


def build_clip_embed(dest: Path, *, seed: int = 0) -> Path:
    """A ``clip_embed`` folder: the tiny CLIP-L text encoder (the main's, for the same seed) and the real CLIP
    tokenizer."""
    dest = _new(dest)
    _clip(seed).save_pretrained(dest / "text_encoder", safe_serialization=True)
    clip_tokenizer().save_pretrained(dest / "tokenizer")
    return dest


def flux_vae_state_dict(seed: int = 0) -> dict[str, Any]:
    """The tiny FLUX VAE's weights under BFL's (LDM) names, as ``ae.safetensors`` stores them."""
    from invokeai_provider.models.stable_diffusion.ldm_keys import vae_to_ldm

    vae = _vae(seed)
    state = {key: value.contiguous() for key, value in vae.state_dict().items()}
    return vae_to_ldm(state, num_blocks=len(vae.config.block_out_channels))


def build_flux_vae(dest: Path, *, seed: int = 0) -> Path:
    """The tiny FLUX VAE (the main's, for the same seed): BFL's single file when ``dest`` ends in
    ``.safetensors``, else a diffusers folder."""
    dest = _new(dest)
    if dest.suffix == ".safetensors":
        from safetensors.torch import save_file

        dest.parent.mkdir(parents=True, exist_ok=True)
        save_file(flux_vae_state_dict(seed), str(dest))
    else:
        _vae(seed).save_pretrained(dest, safe_serialization=True)
    return dest

"""Tiny random-weight models for FLUX Redux: a SigLIP folder and a Redux image embedder file.

Widths are the real ones where a loader or the transformer reads them: SigLIP-so400m's hidden size (1,152), which
the Redux embedder maps to T5-XXL's 4,096 through its 3 x 4,096 inner layer (InvokeAI builds its Redux model with
exactly these sizes, so the file loads there too). Everything else is narrow: one encoder layer, a small MLP, and
224 px images in 14 px patches (a 16 x 16 token grid, square like the real 27 x 27, so every downsampling factor
1-9 of ``flux_redux`` leaves at least one token). The SigLIP folder is laid out as ``google/siglip-so400m-patch14-384``
is: a whole ``SiglipModel`` (its text tower narrow, projecting to the same 1,152) with the image processor's
``preprocessor_config.json``; nodes load only its vision tower. The Redux file is ``bfloat16``, as BFL's is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invokeai_provider.models.testing.tiny import _construct
from invokeai_provider.models.testing.tiny_flux import T5_WIDTH

__all__ = ["SIGLIP_WIDTH", "build_flux_redux", "build_siglip", "flux_redux", "siglip_model", "siglip_processor"]

SIGLIP_WIDTH = 1152  # SigLIP-so400m's hidden size: what the Redux embedder takes
IMAGE_SIZE, PATCH_SIZE = 224, 14  # 16 x 16 tokens


def _siglip_config() -> Any:
    from transformers import SiglipConfig, SiglipTextConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=SIGLIP_WIDTH, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=16, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    text = SiglipTextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=16, projection_size=SIGLIP_WIDTH,
                            pad_token_id=1, bos_token_id=None, eos_token_id=2)
    return SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())


def siglip_model(seed: int = 0) -> Any:
    """A tiny ``SiglipModel`` (vision and text towers)."""
    from transformers import SiglipModel

    return _construct(lambda: SiglipModel(_siglip_config()), materialize=True, seed=seed, tag="flux/siglip")


def siglip_processor() -> Any:
    """SigLIP's image processor at the tiny size: bicubic resize, [-1, 1] normalisation (mean and std 0.5)."""
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3, do_normalize=True,
                                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def flux_redux(seed: int = 0) -> Any:
    """The Redux image embedder (diffusers' ``ReduxImageEncoder``) with the real widths, in float32."""
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder

    return _construct(lambda: ReduxImageEncoder(redux_dim=SIGLIP_WIDTH, txt_in_features=T5_WIDTH), materialize=True,
                      seed=seed, tag="flux/redux")


def _new(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    return dest


def build_siglip(dest: Path, *, seed: int = 0) -> Path:
    """A SigLIP folder: ``config.json`` naming ``SiglipModel``, its weights and ``preprocessor_config.json``."""
    import json

    dest = _new(dest)
    siglip_model(seed).save_pretrained(dest, safe_serialization=True)
    siglip_processor().save_pretrained(dest)
    config = dest / "preprocessor_config.json"  # the class name the hub's folder carries, whichever backend saved it
    config.write_text(json.dumps({**json.loads(config.read_text()), "image_processor_type": "SiglipImageProcessor"},
                                 indent=2))
    return dest


def build_flux_redux(dest: Path, *, seed: int = 0) -> Path:
    """A Redux file like BFL's ``flux1-redux-dev.safetensors``: ``redux_up``/``redux_down`` in bfloat16."""
    import torch
    from safetensors.torch import save_file

    dest = _new(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.to(torch.bfloat16).contiguous() for key, value in flux_redux(seed).state_dict().items()}
    save_file(state, str(dest))
    return dest

"""The tiny FLUX.1 transformer as Black Forest Labs' single file (``flux1-dev.safetensors``'s key layout), how most
users install FLUX: only the transformer, its T5, CLIP and VAE installed on their own (`tiny_flux_parts`).

Diffusers converts BFL names to its own but has no converter back, so the inverse is done here with the shared name
tables (`bfl_names`): every diffusers tensor goes to one BFL tensor, fused layers (``qkv``, a single block's
``linear1``) by concatenating their parts' rows in order, and the final modulation with its (scale, shift) halves
swapped back to BFL's (shift, scale). The tiny models' round trip through the model manager's loader (diffusers'
converter) checks both directions.

Not a catalog entry: ``main --base flux`` stays the diffusers folder, which carries its own parts; a single-file main
is useless without three other models, so tests build it beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invokeai_provider.models.flux.bfl_names import (
    DOUBLE_BLOCK,
    DOUBLE_BLOCK_NORMS,
    SINGLE_BLOCK,
    SWAPPED_HALVES,
    TOP_LEVEL,
)
from invokeai_provider.models.testing.tiny_flux import VARIANTS, FluxVariant, _transformer

__all__ = ["bfl_state_dict", "build_flux_checkpoint"]

PREFIX = "model.diffusion_model."
# a single block's RMS norm scales (BFL parameter -> diffusers parameter), beside bfl_names' double-block ones
SINGLE_BLOCK_NORMS = {"norm.query_norm.scale": "attn.norm_q.weight", "norm.key_norm.scale": "attn.norm_k.weight"}


def bfl_state_dict(state: dict[str, Any], *, prefixed: bool = False) -> dict[str, Any]:
    """A diffusers ``FluxTransformer2DModel`` state dict under BFL's names (each tensor used exactly once)."""
    import torch

    left = dict(state)
    out: dict[str, Any] = {}

    def stack(bfl: str, parts: tuple[str, ...]) -> None:
        for kind in ("weight", "bias"):
            if f"{parts[0]}.{kind}" in left:
                out[f"{bfl}.{kind}"] = torch.cat([left.pop(f"{part}.{kind}") for part in parts])

    for bfl, target in TOP_LEVEL.items():
        stack(bfl, (target,))
    for blocks, owner, fused, norms in (("double_blocks", "transformer_blocks", DOUBLE_BLOCK, DOUBLE_BLOCK_NORMS),
                                        ("single_blocks", "single_transformer_blocks", SINGLE_BLOCK,
                                         SINGLE_BLOCK_NORMS)):
        count = len({key.split(".")[1] for key in state if key.startswith(owner + ".")})
        for i in range(count):
            for bfl, parts in fused.items():
                stack(f"{blocks}.{i}.{bfl}", tuple(f"{owner}.{i}.{part}" for part in parts))
            for bfl, norm in norms.items():
                out[f"{blocks}.{i}.{bfl}"] = left.pop(f"{owner}.{i}.{norm}")
    for name in [key for key in out if key.rsplit(".", 1)[0] in SWAPPED_HALVES]:  # diffusers' (scale, shift) halves
        scale, shift = out[name].chunk(2)
        out[name] = torch.cat([shift, scale])
    if left:
        raise ValueError(f"diffusers tensors without a BFL name: {sorted(left)[:4]}")
    return {(PREFIX if prefixed else "") + key: value.contiguous() for key, value in out.items()}


def build_flux_checkpoint(dest: Path, *, variant: FluxVariant = "dev", seed: int = 0, prefixed: bool = False) -> Path:
    """The tiny FLUX.1 transformer (the same weights as `build_flux_model`'s for the same seed) as one BFL-named
    ``.safetensors`` file; ``prefixed`` puts its keys under ``model.diffusion_model.``, as bundled checkpoints do."""
    from safetensors.torch import save_file

    if variant not in VARIANTS:
        raise ValueError(f"FLUX variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    dest = Path(dest)
    if dest.suffix != ".safetensors" or dest.exists():
        raise ValueError(f"{dest}: expected a new .safetensors file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    state = bfl_state_dict(_transformer(variant, seed).state_dict(), prefixed=prefixed)
    save_file(state, str(dest), metadata={"format": "pt"})
    return dest

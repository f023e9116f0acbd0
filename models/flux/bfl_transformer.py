"""Black Forest Labs' single-file FLUX.1 transformers (``flux1-dev.safetensors``, ``flux1-schnell``, ``flux1-fill-dev``,
``flux1-kontext-dev``) as diffusers' ``FluxTransformer2DModel``, the class every FLUX node here runs.

InvokeAI runs these files with BFL's own model class; here they go through diffusers' converter
(``convert_flux_transformer_checkpoint_to_diffusers``) with the architecture read from the tensor shapes, since
diffusers would otherwise fetch a config from the hub. Two things are not in the shapes the converter reads:

- a single block's fused ``linear1`` (q, k, v, MLP rows): the converter splits it at FLUX.1's 3,072 width whatever
  the file's, so it is split here at the file's own width (`split_bfl_rows`, the rows table FLUX LoRAs use), and the
  converter is handed an empty meta placeholder of the shape it expects; narrow test models convert like real ones;
- the rotary axes, not stored at all: FLUX.1's (16, 56, 56) for its 128-wide heads; the tiny test models' 16-wide
  heads use (4, 6, 6). Other head widths are refused, as a guess would give wrong images.

A bundled file (transformer keys under ``model.diffusion_model.``, maybe beside a VAE or text encoders) keeps only
the transformer, as InvokeAI does.

A GGUF file (city96's ``flux1-dev-Q8_0.gguf``: the same BFL names, quantized) goes through the same conversion with
its weights still quantized (`load_gguf_transformer`): GGUF blocks are laid out row by row, so splitting a fused
layer's rows splits its quantized bytes, and no weight is dequantized to convert it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

from invokeai_provider.models.flux.bfl_names import block_count

if TYPE_CHECKING:
    import torch

__all__ = ["BflTransformerError", "PREFIX", "load_bfl_transformer", "load_gguf_transformer", "to_diffusers",
           "transformer_config", "transformer_only"]

PREFIX = "model.diffusion_model."
ROPE_AXES = {128: (16, 56, 56), 16: (4, 6, 6)}  # head width -> rotary axes (FLUX.1's; the tiny models')
MLP_RATIO = 4  # FluxTransformer2DModel's fixed MLP width per hidden width
CONVERTER_WIDTH = 3072  # the width diffusers' converter assumes when it splits a single block's linear1
NEEDED = ("img_in.weight", "txt_in.weight", "vector_in.in_layer.weight", "time_in.in_layer.weight",
          "final_layer.linear.weight", "double_blocks.0.img_attn.norm.key_norm.scale", "double_blocks.0.img_mlp.0.weight")
_LINEAR1 = re.compile(r"single_blocks\.\d+\.linear1\.(weight|bias)")
_V = TypeVar("_V")


class BflTransformerError(ValueError):
    """A BFL-named transformer whose shapes or names do not make a FLUX.1 ``FluxTransformer2DModel``."""


def transformer_only(state: Mapping[str, _V]) -> dict[str, _V]:
    """The transformer's entries under bare BFL names: a bundled file's ``model.diffusion_model.`` ones only."""
    if any(key.startswith(PREFIX) for key in state):
        return {key[len(PREFIX):]: value for key, value in state.items() if key.startswith(PREFIX)}
    return dict(state)


def transformer_config(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """``FluxTransformer2DModel`` arguments from bare BFL names' shapes (what a config.json on the hub would say)."""
    missing = [key for key in NEEDED if key not in shapes]
    if missing:
        raise BflTransformerError(f"not a complete FLUX.1 transformer: no {', '.join(missing)}")
    inner, in_channels = shapes["img_in.weight"]
    head = shapes["double_blocks.0.img_attn.norm.key_norm.scale"][0]
    if head not in ROPE_AXES or inner % head:
        raise BflTransformerError(f"attention heads {head} wide in a {inner}-wide transformer; FLUX.1's are 128 wide "
                                  "(its rotary axes are not stored in the file, so no other width can be loaded)")
    mlp = shapes["double_blocks.0.img_mlp.0.weight"][0]
    if mlp != MLP_RATIO * inner:
        raise BflTransformerError(f"an MLP {mlp} wide for a {inner}-wide transformer; FLUX.1's is {MLP_RATIO}x")
    return dict(patch_size=1, in_channels=int(in_channels), out_channels=int(shapes["final_layer.linear.weight"][0]),
                num_layers=block_count(shapes, "double_blocks"), num_single_layers=block_count(shapes, "single_blocks"),
                attention_head_dim=int(head), num_attention_heads=int(inner) // int(head),
                joint_attention_dim=int(shapes["txt_in.weight"][1]),
                pooled_projection_dim=int(shapes["vector_in.in_layer.weight"][1]),
                guidance_embeds="guidance_in.in_layer.weight" in shapes, axes_dims_rope=ROPE_AXES[head])


def to_diffusers(state: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Bare BFL names -> diffusers', by diffusers' converter (single blocks' ``linear1`` split at the file's width).

    Every tensor must find its place: a name the converter does not take is refused."""
    import torch
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from invokeai_provider.models.flux.lora_conversion import split_bfl_rows

    remaining = dict(state)
    width = remaining["img_in.weight"].shape[0]
    split: dict[str, torch.Tensor] = {}
    for key in [key for key in remaining if _LINEAR1.fullmatch(key)]:
        layer, kind = key.rsplit(".", 1)
        tensor = remaining.pop(key)
        try:
            rows = split_bfl_rows(layer, tensor, width)
        except ValueError as exc:
            raise BflTransformerError(str(exc)) from None
        split |= {f"{target}.{kind}": part for target, part in rows.items()}
        # what the converter pops and splits at its fixed width; its (meta) pieces are replaced below
        placeholder = (3 * CONVERTER_WIDTH + MLP_RATIO * CONVERTER_WIDTH, *tensor.shape[1:])
        remaining[key] = torch.empty(placeholder, dtype=tensor.dtype, device="meta")
    try:
        converted = convert_flux_transformer_checkpoint_to_diffusers(remaining)
    except KeyError as exc:
        raise BflTransformerError(f"not a complete FLUX.1 transformer: no {exc.args[0]}") from None
    if remaining:  # the converter pops what it places
        raise BflTransformerError(f"{len(remaining)} tensors that FLUX.1's transformer does not have, such as "
                                  f"{', '.join(sorted(remaining)[:4])}")
    converted |= split
    return converted


def load_bfl_transformer(path: Path, dtype: Any = None) -> Any:
    """The file's transformer as an eval-mode ``FluxTransformer2DModel`` in ``dtype`` (the file's when None), built
    without random initialisation (meta weights, then the file's tensors assigned)."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from safetensors import safe_open

    state: dict[str, Any] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in transformer_only({key: key for key in handle.keys()}).values():
            tensor = handle.get_tensor(key)
            state[key.removeprefix(PREFIX)] = tensor if dtype is None else tensor.to(dtype)
    config = transformer_config({key: tuple(value.shape) for key, value in state.items()})
    converted = to_diffusers(state)
    del state
    with init_empty_weights(include_buffers=False):
        model = FluxTransformer2DModel(**config)
    missing, unexpected = model.load_state_dict(converted, strict=False, assign=True)
    meta = [name for name, value in model.state_dict().items() if value.is_meta]
    if missing or unexpected or meta:
        raise BflTransformerError(f"{path}: the tensors do not fit FluxTransformer2DModel({config}): missing "
                                  f"{sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}, unset {meta[:4]}")
    return model.eval()


def load_gguf_transformer(path: Path, dtype: Any) -> Any:
    """A GGUF FLUX.1 transformer (BFL's names, bare or bundled) as ``FluxTransformer2DModel`` whose linear layers keep
    their quantized weights (diffusers' ``GGUFLinear``, dequantized per call in ``dtype``); converted by `to_diffusers`
    on the quantized rows, then loaded by diffusers' GGUF quantizer (the names already diffusers', it converts
    nothing more)."""
    from diffusers import FluxTransformer2DModel

    from invokeai_provider.models.quantization import gguf

    state = transformer_only(gguf.read_gguf(path))
    config = transformer_config(gguf.gguf_shapes(state))
    return gguf.load_diffusers_model(FluxTransformer2DModel, to_diffusers(state), config, dtype, path.name)

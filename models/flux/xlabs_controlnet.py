"""XLabs FLUX ControlNets as diffusers' ``FluxControlNetModel`` with its input-hint path.

XLabs ships single files with Black Forest Labs' names (``double_blocks.N.img_attn.qkv``, ``img_in``,
``input_hint_block.K``, ``pos_embed_input``, ``controlnet_blocks.N``): double blocks only, a small convolutional
encoder of the control image in place of the VAE, and no config. diffusers runs the same network as
``FluxControlNetModel(conditioning_embedding_channels=..., patch_size=2)``, so the keys are renamed once on load
(fused q/k/v rows split) and the config is read from the shapes. FLUX.1's rotary axes are not in the weights;
they are FLUX.1's for 128-wide heads, and other widths are refused.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from invokeai_provider.models.flux.bfl_names import DOUBLE_BLOCK, DOUBLE_BLOCK_NORMS, TOP_LEVEL, block_count
from invokeai_provider.models.flux.controlnet import FLUX_ROPE_AXES, ControlNetLoadError

if TYPE_CHECKING:
    import torch

# BFL module -> diffusers module, outside the blocks (XLabs' ControlNets have no final layer)
_TOP = {**{k: v for k, v in TOP_LEVEL.items() if not k.startswith("final_layer.")},
        "pos_embed_input": "controlnet_x_embedder"}
# inside double block N: BFL parameter -> diffusers parameter (after ``double_blocks.N.`` / ``transformer_blocks.N.``)
_BLOCK = {**{f"{bfl}.{kind}": f"{target}.{kind}" for bfl, (target, *rest) in DOUBLE_BLOCK.items() if not rest
             for kind in ("weight", "bias")}, **DOUBLE_BLOCK_NORMS}
# fused attention projections: one BFL tensor holds q, k and v's rows in that order
_FUSED = {bfl: targets for bfl, targets in DOUBLE_BLOCK.items() if len(targets) > 1}
# the hint encoder: a Sequential of convolutions with SiLUs between (odd indices hold no weights)
_HINT = {0: "conv_in", 2: "blocks.0", 4: "blocks.1", 6: "blocks.2", 8: "blocks.3", 10: "blocks.4", 12: "blocks.5",
         14: "conv_out"}
_HINT_WIDTH = 16  # diffusers builds the hint encoder 16 channels wide throughout, as XLabs' is


def xlabs_config(state: dict[str, "torch.Tensor"]) -> dict[str, Any]:
    """A ``FluxControlNetModel`` config read from an XLabs file's shapes."""
    try:
        inner, in_channels = state["img_in.weight"].shape
        head = int(state["double_blocks.0.img_attn.norm.query_norm.scale"].shape[0])
        hint_out = int(state[f"input_hint_block.{max(_HINT)}.weight"].shape[0])
        hint_widths = {int(state[f"input_hint_block.{i}.weight"].shape[0]) for i in _HINT if i != max(_HINT)}
        config = {"in_channels": int(in_channels), "num_layers": block_count(state, "double_blocks"),
                  "num_single_layers": 0, "attention_head_dim": head, "num_attention_heads": int(inner) // head,
                  "joint_attention_dim": int(state["txt_in.weight"].shape[1]),
                  "pooled_projection_dim": int(state["vector_in.in_layer.weight"].shape[1]),
                  "guidance_embeds": "guidance_in.in_layer.weight" in state,
                  "conditioning_embedding_channels": hint_out}
        hint_tokens = int(state["pos_embed_input.weight"].shape[1])
    except KeyError as missing:
        raise ControlNetLoadError(f"an XLabs FLUX ControlNet without {missing.args[0]!r}") from None
    if hint_widths != {_HINT_WIDTH}:
        raise ControlNetLoadError(f"its control-image encoder is {sorted(hint_widths)} channels wide; XLabs' (and "
                                  f"diffusers') is {_HINT_WIDTH}")
    patch = math.isqrt(hint_tokens // hint_out)
    if patch * patch * hint_out != hint_tokens:
        raise ControlNetLoadError(f"pos_embed_input takes {hint_tokens} features, not {hint_out} channels in square "
                                  "patches")
    if head != 128:
        raise ControlNetLoadError(f"attention heads {head} wide; an XLabs single file needs FLUX.1's 128 (other "
                                  "widths need a diffusers folder with its config.json)")
    return {**config, "patch_size": patch, "axes_dims_rope": list(FLUX_ROPE_AXES)}


def xlabs_to_diffusers(state: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """The state dict renamed to diffusers' ``FluxControlNetModel`` keys; unknown keys are refused, not dropped."""
    out: dict[str, "torch.Tensor"] = {}
    unknown = []
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if module in _TOP:
            out[f"{_TOP[module]}.{param}"] = tensor
        elif re.fullmatch(r"controlnet_blocks\.\d+\.(weight|bias)", key):
            out[key] = tensor
        elif (m := re.fullmatch(r"input_hint_block\.(\d+)\.(weight|bias)", key)) and int(m.group(1)) in _HINT:
            out[f"input_hint_block.{_HINT[int(m.group(1))]}.{m.group(2)}"] = tensor
        elif m := re.fullmatch(r"double_blocks\.(\d+)\.(.+)", key):
            prefix, rest = f"transformer_blocks.{m.group(1)}.", m.group(2)
            fused, _, param = rest.rpartition(".")
            if rest in _BLOCK:
                out[prefix + _BLOCK[rest]] = tensor
            elif fused in _FUSED:
                for name, part in zip(_FUSED[fused], tensor.chunk(3, dim=0)):
                    out[f"{prefix}{name}.{param}"] = part.contiguous()
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ControlNetLoadError(f"keys an XLabs FLUX ControlNet does not have: {sorted(unknown)[:4]}")
    return out


def diffusers_to_xlabs(state: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """The inverse renaming (q/k/v fused again), for writing an XLabs-layout file from a diffusers model."""
    import torch

    top = {v: k for k, v in _TOP.items()}
    block = {v: k for k, v in _BLOCK.items()}
    hint = {v: k for k, v in _HINT.items()}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if module in top:
            out[f"{top[module]}.{param}"] = tensor
        elif key.startswith("controlnet_blocks."):
            out[key] = tensor
        elif key.startswith("input_hint_block."):
            out[f"input_hint_block.{hint[key[len('input_hint_block.'):].rpartition('.')[0]]}.{param}"] = tensor
        elif m := re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", key):
            prefix, rest = f"double_blocks.{m.group(1)}.", m.group(2)
            sub = rest.rpartition(".")[0]
            if rest in block:
                out[prefix + block[rest]] = tensor
            for fused, names in _FUSED.items():
                if sub == names[0]:  # q's row block: fuse k and v's after it
                    out[f"{prefix}{fused}.{param}"] = torch.cat(
                        [state[f"transformer_blocks.{m.group(1)}.{name}.{param}"] for name in names])
        else:
            raise ValueError(f"{key}: not part of an XLabs FLUX ControlNet")
    return out


def load_xlabs(state: dict[str, "torch.Tensor"], dtype: "torch.dtype") -> Any:
    """diffusers' ``FluxControlNetModel`` holding an XLabs file's weights."""
    from diffusers import FluxControlNetModel

    from accelerate import init_empty_weights

    config = xlabs_config(state)
    with init_empty_weights():  # the file holds every weight: no random initialisation of FLUX-sized layers
        model = FluxControlNetModel.from_config(config)
    try:
        model.load_state_dict(xlabs_to_diffusers(state), strict=True, assign=True)
    except RuntimeError as error:  # missing, unexpected or misshapen weights
        raise ControlNetLoadError(f"weights do not fit the config read from them: {str(error)[:400]}") from None
    return model.to(dtype=dtype).eval()

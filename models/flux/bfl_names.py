"""Black Forest Labs' FLUX.1 layer names and diffusers' ``FluxTransformer2DModel`` names for the same layers: what
LoRA files, XLabs ControlNets and Control LoRAs written against BFL's model are renamed with.

One BFL layer may be several diffusers layers fused: a double block's ``qkv`` is ``to_q``/``to_k``/``to_v`` and a
single block's ``linear1`` is those three and ``proj_mlp``, their rows in that order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# in double block i (``double_blocks.i.`` -> ``transformer_blocks.i.``): BFL layer -> the diffusers layers it holds
DOUBLE_BLOCK: dict[str, tuple[str, ...]] = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn.proj": ("attn.to_out.0",),
    "img_mlp.0": ("ff.net.0.proj",),
    "img_mlp.2": ("ff.net.2",),
    "img_mod.lin": ("norm1.linear",),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn.proj": ("attn.to_add_out",),
    "txt_mlp.0": ("ff_context.net.0.proj",),
    "txt_mlp.2": ("ff_context.net.2",),
    "txt_mod.lin": ("norm1_context.linear",),
}
# a double block's RMS norm scales (BFL parameter -> diffusers parameter)
DOUBLE_BLOCK_NORMS: dict[str, str] = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
# in single block i (``single_blocks.i.`` -> ``single_transformer_blocks.i.``)
SINGLE_BLOCK: dict[str, tuple[str, ...]] = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation.lin": ("norm.linear",),
}
# outside the blocks
TOP_LEVEL: dict[str, str] = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out",
    "final_layer.adaLN_modulation.1": "norm_out.linear",
}
# BFL's rows (shift, scale) are diffusers' (scale, shift) here: the halves of the output rows swap
SWAPPED_HALVES = frozenset({"final_layer.adaLN_modulation.1"})


@dataclass(frozen=True)
class BflNames:
    """One BFL transformer's layer names and the diffusers layers each holds: FLUX.1's here, FLUX.2's (whose
    single blocks keep ``linear1`` fused and whose modulations are shared) in ``models.flux2.bfl_names``; LoRA
    conversion reads either."""

    double_block: dict[str, tuple[str, ...]]
    single_block: dict[str, tuple[str, ...]]
    top_level: dict[str, str]
    swapped_halves: frozenset[str] = SWAPPED_HALVES


FLUX1_NAMES = BflNames(DOUBLE_BLOCK, SINGLE_BLOCK, TOP_LEVEL)


def block_count(keys: Iterable[str], blocks: str) -> int:
    """How many blocks named ``<blocks>.<i>.`` a state dict's keys have (a config read from the weights)."""
    return len({m.group(1) for key in keys if (m := re.match(rf"{blocks}\.(\d+)\.", key))})

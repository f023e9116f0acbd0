"""diffusers -> LDM/SGM state-dict key names (the inverse of diffusers' ``single_file_utils`` converters).

LoRA files name UNet layers by their LDM keys (kohya), and single-file checkpoints use the LDM/SGM layout, so
both the LoRA loader and the tiny single-file builder need the mapping.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["clip_to_ldm", "open_clip_to_ldm", "unet_key_to_ldm", "unet_to_ldm", "vae_to_ldm"]


_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def unet_key_to_ldm(key: str, config: Any) -> str:
    """LDM name (without ``model.diffusion_model.``) of one diffusers UNet2DConditionModel key.

    LDM numbers blocks flatly: ``input_blocks.0`` is conv_in, then per down block ``layers_per_block`` entries
    (``.0`` resnet, ``.1`` attention) and one downsampler entry (``.0.op``); ``middle_block`` is resnet/attn/resnet;
    ``output_blocks`` hold ``layers_per_block + 1`` entries per up block, the upsampler sitting after the attention.
    """
    lpb = int(config["layers_per_block"])
    parts = key.split(".")
    head, rest = parts[0], parts[1:]

    def resnet(tail: list[str]) -> str:
        return ".".join([_UNET_RESNET.get(tail[0], tail[0]), *tail[1:]])

    if head == "down_blocks":
        block, kind, tail = int(rest[0]), rest[1], rest[2:]
        base_index = 1 + block * (lpb + 1)
        if kind == "resnets":
            return f"input_blocks.{base_index + int(tail[0])}.0.{resnet(tail[1:])}"
        if kind == "attentions":
            return f"input_blocks.{base_index + int(tail[0])}.1.{'.'.join(tail[1:])}"
        if kind == "downsamplers" and tail[1] == "conv":
            return f"input_blocks.{base_index + lpb}.0.op.{'.'.join(tail[2:])}"
    elif head == "mid_block":
        kind, index, tail = rest[0], int(rest[1]), rest[2:]
        if kind == "resnets":
            return f"middle_block.{2 * index}.{resnet(tail)}"
        if kind == "attentions" and index == 0:
            return f"middle_block.1.{'.'.join(tail)}"
    elif head == "up_blocks":
        block, kind, tail = int(rest[0]), rest[1], rest[2:]
        base_index = block * (lpb + 1)
        if kind == "resnets":
            return f"output_blocks.{base_index + int(tail[0])}.0.{resnet(tail[1:])}"
        if kind == "attentions":
            return f"output_blocks.{base_index + int(tail[0])}.1.{'.'.join(tail[1:])}"
        if kind == "upsamplers" and tail[1] == "conv":
            slot = 2 if "CrossAttn" in config["up_block_types"][block] else 1
            return f"output_blocks.{base_index + lpb}.{slot}.conv.{'.'.join(tail[2:])}"
    else:
        module, _, leaf = key.rpartition(".")
        if module in _UNET_TOP:
            return f"{_UNET_TOP[module]}.{leaf}"
    raise KeyError(f"no LDM name for UNet key {key!r}")


def unet_to_ldm(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """diffusers UNet state dict -> LDM keys (no prefix). Tensors are shared, shapes are identical."""
    return {unet_key_to_ldm(k, config): v for k, v in state_dict.items()}


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state_dict: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL state dict -> LDM keys (no prefix).

    LDM numbers decoder levels bottom-up (``up.0`` is the last diffusers up block) and stores the mid attention's
    projections as 1x1 convolutions.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        part, _, rest = key.partition(".")  # encoder | decoder | quant_conv | post_quant_conv
        m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)", rest)
        if rest.startswith("conv_norm_out."):
            new = f"{part}.norm_out.{rest.split('.', 1)[1]}"
        elif m:
            direction, block, kind, index, tail = m.groups()
            level = int(block) if direction == "down" else num_blocks - 1 - int(block)
            if kind == "resnets":
                new = f"{part}.{direction}.{level}.block.{index}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                new = f"{part}.{direction}.{level}.{kind[:-2]}.{tail}"  # downsample / upsample
        elif rest.startswith("mid_block.resnets."):
            index, tail = rest.split(".", 3)[2:]
            new = f"{part}.mid.block_{int(index) + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        elif rest.startswith("mid_block.attentions.0."):
            module, _, leaf = rest.removeprefix("mid_block.attentions.0.").rpartition(".")
            new = f"{part}.mid.attn_1.{_VAE_ATTN[module]}.{leaf}"
            if leaf == "weight" and module != "group_norm":
                value = value[:, :, None, None]
        else:
            new = key
        out[new] = value
    return out


def _text_model_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical CLIP names (``text_model.`` prefix): transformers >= 5.6 flattened CLIPTextModel but files did not."""
    canonical = ("text_model.", "text_projection.")
    return {k if k.startswith(canonical) else f"text_model.{k}": v for k, v in state_dict.items()}


def clip_to_ldm(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """HF CLIPTextModel -> LDM (``cond_stage_model.transformer.`` / ``conditioner.embedders.0.transformer.``)."""
    return {prefix + k: v for k, v in _text_model_keys(state_dict).items()}


_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPEN_CLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def open_clip_to_ldm(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """HF CLIPTextModel(WithProjection) -> OpenCLIP layout under ``prefix`` (e.g. ``cond_stage_model.model.``).

    OpenCLIP fuses q/k/v into ``attn.in_proj_*`` and stores ``text_projection`` as a (width, dim) matrix.
    """
    import torch

    sd = _text_model_keys(state_dict)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in _OPEN_CLIP_TOP:
            out[prefix + _OPEN_CLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            layer, module, leaf = m.groups()
            block = f"{prefix}transformer.resblocks.{layer}."
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                if module == "self_attn.q_proj":
                    qkv = [sd[f"text_model.encoder.layers.{layer}.self_attn.{p}_proj.{leaf}"] for p in "qkv"]
                    out[f"{block}attn.in_proj_{leaf}"] = torch.cat(qkv, dim=0)
            else:
                out[f"{block}{_OPEN_CLIP_LAYER[module]}.{leaf}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {key!r}")
    return out

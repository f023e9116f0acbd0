"""FLUX ControlNets: recognising and loading them, and the residuals they add to the transformer's blocks, as
InvokeAI's ``flux_denoise`` applies them.

InstantX ControlNets (and their "union" form, with a control-mode embedding) are diffusers'
``FluxControlNetModel``: a diffusers folder, or a single file with diffusers' keys whose config is read from the
shapes. Their conditioning is the control image encoded by the VAE and packed like the latents. XLabs ControlNets
(``input_hint_block``, BFL's block names; `invokeai_provider.models.flux.xlabs_controlnet`) are the same diffusers
model with its input-hint encoder: their conditioning is the control image itself, in [-1, 1], not VAE-encoded.

Each step, every ControlNet whose step range covers the step gives per-block residuals, scaled by its weight and
spread over the transformer's blocks. InstantX: block ``i`` takes sample ``i // ceil(blocks / samples)``, for double
and single blocks. XLabs (double blocks only): block ``i`` takes sample ``i % samples``, cyclically, as XLabs'
model and InvokeAI apply them. The ControlNets' residuals are summed, and the transformer adds them after its
blocks. Only the positive prediction gets them, as in InvokeAI.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Union

if TYPE_CHECKING:
    import torch

INSTANTX_KEYS = frozenset({"controlnet_blocks.0.bias", "controlnet_blocks.0.weight", "controlnet_x_embedder.bias",
                           "controlnet_x_embedder.weight"})
XLABS_KEYS = frozenset({"controlnet_blocks.0.bias", "controlnet_blocks.0.weight", "input_hint_block.0.bias",
                        "input_hint_block.0.weight", "pos_embed_input.bias", "pos_embed_input.weight"})
FLUX_ROPE_AXES = (16, 56, 56)  # FLUX.1's rotary axes for its 128-wide heads; not stored in the weights


class ControlNetLoadError(ValueError):
    """A FLUX ControlNet file this provider cannot run."""


def controlnet_kind(keys: Iterable[str]) -> Optional[str]:
    """``"instantx"``, ``"xlabs"`` or None, from a state dict's keys (InvokeAI's detectors)."""
    names = set(keys)
    if XLABS_KEYS <= names:
        return "xlabs"
    if INSTANTX_KEYS <= names:
        return "instantx"
    return None


def _config_from_weights(state: dict[str, "torch.Tensor"]) -> dict[str, Any]:
    """A ``FluxControlNetModel`` config read from an InstantX single file's shapes."""
    from invokeai_provider.models.flux.bfl_names import block_count

    inner, in_channels = state["x_embedder.weight"].shape
    norm = state.get("transformer_blocks.0.attn.norm_q.weight")
    head = norm.shape[0] if norm is not None else 128
    if head != 128:
        raise ControlNetLoadError(f"attention heads {head} wide; a single-file FLUX ControlNet needs FLUX.1's 128 "
                                  "(other widths need a diffusers folder with its config.json)")
    config = {"in_channels": int(in_channels), "num_layers": block_count(state, "transformer_blocks"),
              "num_single_layers": block_count(state, "single_transformer_blocks"), "attention_head_dim": int(head),
              "num_attention_heads": int(inner) // int(head),
              "joint_attention_dim": int(state["context_embedder.weight"].shape[1]),
              "pooled_projection_dim": int(state["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
              "guidance_embeds": any(k.startswith("time_text_embed.guidance_embedder.") for k in state),
              "axes_dims_rope": list(FLUX_ROPE_AXES)}
    if "controlnet_mode_embedder.weight" in state:
        config["num_mode"] = int(state["controlnet_mode_embedder.weight"].shape[0])
    return config


def is_xlabs(model: Any) -> bool:
    """Whether a loaded ``FluxControlNetModel`` is an XLabs one: only those encode the control image themselves."""
    return getattr(model, "input_hint_block", None) is not None


def load_controlnet(path: Path, dtype: "torch.dtype") -> Any:
    """A FLUX ControlNet from a diffusers folder (InstantX or XLabs, per its config) or a single safetensors file
    (InstantX with diffusers' keys, or XLabs with BFL's)."""
    from diffusers import FluxControlNetModel

    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        return FluxControlNetModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype).eval()
    if path.is_dir():  # a folder holding one single file (as XLabs' repositories do), probed as that file
        weights = sorted(path.glob("*.safetensors"))
        if len(weights) != 1:
            raise ControlNetLoadError(f"{path.name}: no config.json and {len(weights)} safetensors files")
        path = weights[0]
    from safetensors.torch import load_file

    state = load_file(str(path))
    if controlnet_kind(state) == "xlabs":
        from invokeai_provider.models.flux.xlabs_controlnet import load_xlabs

        try:
            return load_xlabs(state, dtype)
        except ControlNetLoadError as error:
            raise ControlNetLoadError(f"{path.name}: {error}") from None
    if controlnet_kind(state) != "instantx":
        raise ControlNetLoadError(f"{path.name}: not a FLUX ControlNet this provider reads (InstantX keys missing)")
    model = FluxControlNetModel.from_config(_config_from_weights(state))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ControlNetLoadError(f"{path.name}: weights do not fit the config read from them (missing "
                                  f"{sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]})")
    return model.to(dtype=dtype).eval()


def folder_is_controlnet(path: Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("_class_name") == "FluxControlNetModel"


@dataclass
class FluxControl:
    """One ControlNet of a ``flux_denoise``: the model, its conditioning and when and how much it acts."""

    model: Any  # diffusers' FluxControlNetModel
    # InstantX: (1, tokens, 64), the control image's packed VAE latents; XLabs: (1, 3, H, W), the image in [-1, 1]
    condition: "torch.Tensor"
    weight: Union[float, list[float]] = 1.0
    begin_step_percent: float = 0.0
    end_step_percent: float = 1.0
    mode: Optional[int] = None  # a union model's control mode (None: none given)

    def weight_at(self, step: int, total: int) -> float:
        """InvokeAI's rule: the weight (or the step's weight from a list) from floor(begin * steps) to
        ceil(end * steps), inclusive; 0 outside."""
        from invokeai_provider.models.image_util.control_image import step_weight

        return step_weight(self.weight, self.begin_step_percent, self.end_step_percent, step, total)


def _spread(samples: Optional[list["torch.Tensor"]], blocks: int) -> Optional[list["torch.Tensor"]]:
    """InstantX's mapping: consecutive blocks share a sample."""
    if not samples:
        return None
    interval = math.ceil(blocks / len(samples))
    return [samples[i // interval] for i in range(blocks)]


def _repeat(samples: Optional[list["torch.Tensor"]], blocks: int) -> Optional[list["torch.Tensor"]]:
    """XLabs' mapping: the samples repeat cyclically over the blocks."""
    if not samples:
        return None
    return [samples[i % len(samples)] for i in range(blocks)]


def control_residuals(controls: list[FluxControl], step: int, total: int, *, tokens: "torch.Tensor",
                      timestep: "torch.Tensor", guidance: Optional[float], t5: "torch.Tensor", clip: "torch.Tensor",
                      txt_ids: "torch.Tensor", img_ids: "torch.Tensor", blocks: tuple[int, int]
                      ) -> tuple[Optional[list["torch.Tensor"]], Optional[list["torch.Tensor"]]]:
    """The summed per-block residuals (double blocks, single blocks) of the ControlNets acting at ``step``."""
    import torch

    double: Optional[list[torch.Tensor]] = None
    single: Optional[list[torch.Tensor]] = None
    for control in controls:
        weight = control.weight_at(step, total)
        if weight < 1e-6:
            continue
        model = control.model
        mode, zeroed = None, None
        if model.union:  # no mode given: InvokeAI feeds a zero mode embedding
            mode = torch.full((tokens.shape[0], 1), control.mode or 0, device=tokens.device, dtype=torch.long)
            if control.mode is None:
                zeroed = model.controlnet_mode_embedder.register_forward_hook(lambda m, i, out: torch.zeros_like(out))
        guidance_vector = (torch.full((tokens.shape[0],), guidance, device=tokens.device, dtype=tokens.dtype)
                           if model.config.guidance_embeds and guidance is not None else None)
        try:
            block_samples, single_samples = model(
                hidden_states=tokens, controlnet_cond=control.condition.to(tokens.device, tokens.dtype),
                controlnet_mode=mode, conditioning_scale=weight, encoder_hidden_states=t5, pooled_projections=clip,
                timestep=timestep, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance_vector, return_dict=False)
        finally:
            if zeroed is not None:
                zeroed.remove()
        per_block: tuple[tuple[str, Optional[list[torch.Tensor]]], ...]
        if is_xlabs(model):  # double blocks only, repeated
            per_block = (("double", _repeat(block_samples, blocks[0])),)
        else:
            per_block = (("double", _spread(block_samples, blocks[0])), ("single", _spread(single_samples, blocks[1])))
        for name, spread in per_block:
            if spread is None:
                continue
            current = double if name == "double" else single
            summed = spread if current is None else [a + b for a, b in zip(current, spread)]
            if name == "double":
                double = summed
            else:
                single = summed
    return double, single

"""SD1/SD2/SDXL ControlNets (diffusers' ``ControlNetModel``) as InvokeAI's ``denoise_latents`` applies them: each
step, every ControlNet whose step range covers the step adds its down- and mid-block residuals to the UNet's, the
ControlNets' residuals summed.

The control modes are InvokeAI's: ``balanced`` runs the ControlNet on both halves of the CFG batch; ``more_prompt``
(soft injection: diffusers' ``guess_mode``, residuals scaled down toward the shallow blocks) also on both;
``more_control`` (soft injection and CFG injection) and ``unbalanced`` (CFG injection alone) only on the conditional
half, the unconditional half getting zero residuals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from invokeai_provider.models.image_util.control_image import step_weight

if TYPE_CHECKING:
    import torch

CONTROL_MODES = ("balanced", "more_prompt", "more_control", "unbalanced")
Residuals = tuple[Optional[list["torch.Tensor"]], Optional["torch.Tensor"]]


@dataclass
class SDControl:
    """One ControlNet of a denoise: the model, its control image and when and how much it acts."""

    model: Any  # diffusers' ControlNetModel
    image: "torch.Tensor"  # (1, 3, H, W) in [0, 1], at the generation's size
    weight: Union[float, list[float]] = 1.0
    begin_step_percent: float = 0.0
    end_step_percent: float = 1.0
    mode: str = "balanced"

    def __post_init__(self) -> None:
        if self.mode not in CONTROL_MODES:
            raise ValueError(f"control_mode {self.mode!r}: expected one of {', '.join(CONTROL_MODES)}")


def control_residuals(controls: list[SDControl], step: int, total: int, *, model_input: "torch.Tensor",
                      timestep: "torch.Tensor", embeds: "torch.Tensor", added: dict[str, "torch.Tensor"]) -> Residuals:
    """The summed residuals of the ControlNets acting at ``step`` of ``total`` for one item's UNet input (its
    unconditional and conditional halves, in that order); (None, None) when none acts."""
    import torch

    down: Optional[list[torch.Tensor]] = None
    mid: Optional[torch.Tensor] = None
    for control in controls:
        weight = step_weight(control.weight, control.begin_step_percent, control.end_step_percent, step, total)
        if weight == 0.0:  # outside its step range (or a zero weight: residuals of zero either way)
            continue
        soft = control.mode in ("more_prompt", "more_control")
        conditional_only = control.mode in ("more_control", "unbalanced")
        sample, states, extra = model_input, embeds, added
        if conditional_only:  # the conditional half alone
            sample, states = model_input.chunk(2)[1], embeds.chunk(2)[1]
            extra = {name: value.chunk(2)[1] for name, value in added.items()}
        image = control.image.to(device=sample.device, dtype=sample.dtype).expand(sample.shape[0], -1, -1, -1)
        block_samples, mid_sample = control.model(
            sample, timestep, encoder_hidden_states=states, controlnet_cond=image, conditioning_scale=weight,
            guess_mode=soft, added_cond_kwargs=extra or None, return_dict=False)
        if conditional_only:
            block_samples = [torch.cat([torch.zeros_like(d), d]) for d in block_samples]
            mid_sample = torch.cat([torch.zeros_like(mid_sample), mid_sample])
        down = list(block_samples) if down is None else [a + b for a, b in zip(down, block_samples)]
        mid = mid_sample if mid is None else mid + mid_sample
    return down, mid


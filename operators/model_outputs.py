"""Output classes of the model and scheduler families, shared with the nodes that produce the same outputs
from elsewhere (the metadata getters). Type strings follow InvokeAI's `invocations/model.py` and
`invocations/scheduler.py`; scheduler names follow `backend/stable_diffusion/schedulers/schedulers.py`.
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

from invokeai_provider.fields import CLIPField, UNetField, VAEField
from invokeai_provider.invocation import (
    BaseInvocationOutput,
    OutputField,
    invocation_output,
)

SCHEDULER_NAME_VALUES = Literal[
    "ddim",
    "ddpm",
    "deis",
    "deis_k",
    "lms",
    "lms_k",
    "pndm",
    "heun",
    "heun_k",
    "euler",
    "euler_k",
    "euler_a",
    "kdpm_2",
    "kdpm_2_k",
    "kdpm_2_a",
    "kdpm_2_a_k",
    "dpmpp_2s",
    "dpmpp_2s_k",
    "dpmpp_2m",
    "dpmpp_2m_k",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_k",
    "dpmpp_3m",
    "dpmpp_3m_k",
    "dpmpp_sde",
    "dpmpp_sde_k",
    "er_sde",
    "unipc",
    "unipc_k",
    "lcm",
    "tcd",
]
SCHEDULER_NAMES: tuple[str, ...] = get_args(SCHEDULER_NAME_VALUES)

# Field descriptions shared with InvokeAI's FieldDescriptions.
MAIN_MODEL_DESCRIPTION = "Main model (UNet, VAE, CLIP) to load"
UNET_DESCRIPTION = "UNet (scheduler, LoRAs)"
CLIP_DESCRIPTION = "CLIP (tokenizer, text encoder, LoRAs) and skipped layer count"
VAE_DESCRIPTION = "VAE"
SCHEDULER_DESCRIPTION = "Scheduler to use during inference"


@invocation_output("vae_output")
class VAEOutput(BaseInvocationOutput):
    """A VAE field."""

    vae: VAEField = OutputField(description=VAE_DESCRIPTION, title="VAE")


@invocation_output("lora_loader_output")
class LoRALoaderOutput(BaseInvocationOutput):
    """UNet and CLIP with LoRAs applied; either may be absent."""

    unet: Optional[UNetField] = OutputField(default=None, description=UNET_DESCRIPTION, title="UNet")
    clip: Optional[CLIPField] = OutputField(default=None, description=CLIP_DESCRIPTION, title="CLIP")


@invocation_output("sdxl_lora_loader_output")
class SDXLLoRALoaderOutput(BaseInvocationOutput):
    """SDXL UNet and both CLIPs with LoRAs applied; any may be absent."""

    unet: Optional[UNetField] = OutputField(default=None, description=UNET_DESCRIPTION, title="UNet")
    clip: Optional[CLIPField] = OutputField(default=None, description=CLIP_DESCRIPTION, title="CLIP 1")
    clip2: Optional[CLIPField] = OutputField(default=None, description=CLIP_DESCRIPTION, title="CLIP 2")


@invocation_output("scheduler_output")
class SchedulerOutput(BaseInvocationOutput):
    """A scheduler name."""

    scheduler: SCHEDULER_NAME_VALUES = OutputField(description=SCHEDULER_DESCRIPTION, ui_type="SchedulerField")

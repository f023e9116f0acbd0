"""Output classes of the model and scheduler families, shared with the nodes that produce the same outputs
from elsewhere (the metadata getters). Type strings follow InvokeAI's `invocations/model.py` and
`invocations/scheduler.py`; scheduler names follow `backend/stable_diffusion/schedulers/schedulers.py`.
"""

from __future__ import annotations

from typing import Optional

from invokeai_provider.core.fields import CLIPField, UNetField, VAEField
from invokeai_provider.core.invocation import (
    BaseInvocationOutput,
    OutputField,
    invocation_output,
)
from invokeai_provider.models.stable_diffusion.schedulers import SCHEDULER_NAME_VALUES

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

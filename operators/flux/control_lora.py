"""``flux_control_lora_loader``: a FLUX Control LoRA (BFL's Canny/Depth LoRAs) and its control image, passed to
``flux_denoise`` (type string, title, version 1.1.1, fields and ``flux_control_lora_loader_output`` as InvokeAI's
flux_control_lora_loader.py). Nothing is loaded here; the patching and the image's latents are
`invokeai_provider.models.flux.control_lora`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ControlLoRAField, ImageField, ModelIdentifierField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.operators.core.models import check_model

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext


@invocation_output("flux_control_lora_loader_output")
class FluxControlLoRALoaderOutput(BaseInvocationOutput):
    """Flux Control LoRA Loader Output"""

    control_lora: ControlLoRAField = OutputField(default=None, title="Flux Control LoRA",
                                                 description="Control LoRAs to apply on model loading")


@invocation("flux_control_lora_loader", title="Control LoRA - FLUX", tags=["lora", "model", "flux"],
            category="model", version="1.1.1")
class FluxControlLoRALoaderInvocation(BaseInvocation):
    """LoRA model and Image to use with FLUX transformer generation."""

    lora: ModelIdentifierField = InputField(description="Control LoRA model to load", title="Control LoRA",
                                            ui_model_base=BaseModelType.Flux, ui_model_type=ModelType.ControlLoRa)
    image: ImageField = InputField(description="The image to encode.")
    weight: float = InputField(default=1.0, description="The weight of the LoRA.")

    def invoke(self, context: "InvocationContext") -> FluxControlLoRALoaderOutput:
        # InvokeAI checks only that the key exists; a wrong kind is an error here too (see check_model)
        check_model(self, "lora", self.lora, context, ModelType.ControlLoRa, (BaseModelType.Flux,))
        return FluxControlLoRALoaderOutput(control_lora=ControlLoRAField(lora=self.lora, img=self.image,
                                                                         weight=self.weight))

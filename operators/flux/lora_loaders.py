"""``flux_lora_loader`` and ``flux_lora_collection_loader``: add FLUX LoRAs to the ``loras`` lists of the
transformer, CLIP and T5 fields that come in (type strings, titles, versions, fields and the shared
``flux_lora_loader_output`` as in InvokeAI's flux_lora_loader.py). Nothing is loaded here: ``flux_denoise`` and
``flux_text_encoder`` patch the LoRAs in for their span and restore the cached weights afterwards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from invokeai_provider.core.fields import CLIPField, LoRAField, ModelIdentifierField, T5EncoderField, TransformerField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.operators.core.models import apply_lora_collection, check_model, refuse_applied, with_lora

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_FLUX = (BaseModelType.Flux,)
_TRANSFORMER = "Transformer"
_CLIP = "CLIP (tokenizer, text encoder, LoRAs) and skipped layer count"
_T5 = "T5 tokenizer and text encoder"


@invocation_output("flux_lora_loader_output")
class FluxLoRALoaderOutput(BaseInvocationOutput):
    """FLUX LoRA Loader Output"""

    transformer: Optional[TransformerField] = OutputField(default=None, description=_TRANSFORMER,
                                                          title="FLUX Transformer")
    clip: Optional[CLIPField] = OutputField(default=None, description=_CLIP, title="CLIP")
    t5_encoder: Optional[T5EncoderField] = OutputField(default=None, description=_T5, title="T5 Encoder")


@invocation("flux_lora_loader", title="Apply LoRA - FLUX", tags=["lora", "model", "flux"], category="model",
            version="1.2.1")
class FluxLoRALoaderInvocation(BaseInvocation):
    """Apply a LoRA model to a FLUX transformer and/or text encoder."""

    lora: ModelIdentifierField = InputField(description="LoRA model to load", title="LoRA",
                                            ui_model_base=BaseModelType.Flux, ui_model_type=ModelType.LoRA)
    weight: float = InputField(default=0.75, description="The weight at which the LoRA is applied to each model")
    transformer: Optional[TransformerField] = InputField(default=None, description=_TRANSFORMER,
                                                         input=Input.Connection, title="FLUX Transformer")
    clip: Optional[CLIPField] = InputField(default=None, title="CLIP", description=_CLIP, input=Input.Connection)
    t5_encoder: Optional[T5EncoderField] = InputField(default=None, title="T5 Encoder", description=_T5,
                                                      input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> FluxLoRALoaderOutput:
        check_model(self, "lora", self.lora, context, ModelType.LoRA, _FLUX)
        targets = {"transformer": self.transformer, "clip": self.clip, "t5_encoder": self.t5_encoder}
        refuse_applied(self, targets.items(), self.lora)
        applied = LoRAField(lora=self.lora, weight=self.weight)
        return FluxLoRALoaderOutput(**{name: with_lora(target, applied) for name, target in targets.items()})


@invocation("flux_lora_collection_loader", title="Apply LoRA Collection - FLUX", tags=["lora", "model", "flux"],
            category="model", version="1.3.2")
class FLUXLoRACollectionLoader(BaseInvocation):
    """Applies a collection of LoRAs to a FLUX transformer."""

    loras: Optional[Union[LoRAField, list[LoRAField]]] = InputField(
        default=None, description="LoRA models and weights. May be a single LoRA or collection.", title="LoRAs",
        ui_model_base=[BaseModelType.Flux], ui_model_type=ModelType.LoRA)
    transformer: Optional[TransformerField] = InputField(default=None, description=_TRANSFORMER,
                                                         input=Input.Connection, title="Transformer")
    clip: Optional[CLIPField] = InputField(default=None, title="CLIP", description=_CLIP, input=Input.Connection)
    t5_encoder: Optional[T5EncoderField] = InputField(default=None, title="T5 Encoder", description=_T5,
                                                      input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> FluxLoRALoaderOutput:
        out = apply_lora_collection(self, self.loras, {"transformer": self.transformer, "clip": self.clip,
                                                       "t5_encoder": self.t5_encoder}, _FLUX, context)
        return FluxLoRALoaderOutput(**out)

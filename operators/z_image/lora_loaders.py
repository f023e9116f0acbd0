"""``z_image_lora_loader`` and ``z_image_lora_collection_loader``: add Z-Image LoRAs to the ``loras`` lists of the
transformer and Qwen3 encoder fields that come in (type strings, titles, versions, fields and the shared
``z_image_lora_loader_output`` as in InvokeAI's z_image_lora_loader.py). Nothing is loaded here: ``z_image_denoise``
and ``z_image_text_encoder`` patch the LoRAs in for their span and restore the cached weights afterwards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from invokeai_provider.core.fields import LoRAField, ModelIdentifierField, Qwen3EncoderField, TransformerField
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

_Z_IMAGE = (BaseModelType.ZImage,)
_TRANSFORMER = "Transformer"
_QWEN3 = "Qwen3 tokenizer and text encoder"


@invocation_output("z_image_lora_loader_output")
class ZImageLoRALoaderOutput(BaseInvocationOutput):
    """Z-Image LoRA Loader Output"""

    transformer: Optional[TransformerField] = OutputField(default=None, description=_TRANSFORMER,
                                                          title="Z-Image Transformer")
    qwen3_encoder: Optional[Qwen3EncoderField] = OutputField(default=None, description=_QWEN3, title="Qwen3 Encoder")


@invocation("z_image_lora_loader", title="Apply LoRA - Z-Image", tags=["lora", "model", "z-image"], category="model",
            version="1.0.0")
class ZImageLoRALoaderInvocation(BaseInvocation):
    """Apply a LoRA model to a Z-Image transformer and/or Qwen3 text encoder."""

    lora: ModelIdentifierField = InputField(description="LoRA model to load", title="LoRA",
                                            ui_model_base=BaseModelType.ZImage, ui_model_type=ModelType.LoRA)
    weight: float = InputField(default=0.75, description="The weight at which the LoRA is applied to each model")
    transformer: Optional[TransformerField] = InputField(default=None, description=_TRANSFORMER,
                                                         input=Input.Connection, title="Z-Image Transformer")
    qwen3_encoder: Optional[Qwen3EncoderField] = InputField(default=None, title="Qwen3 Encoder", description=_QWEN3,
                                                            input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ZImageLoRALoaderOutput:
        check_model(self, "lora", self.lora, context, ModelType.LoRA, _Z_IMAGE)
        targets = {"transformer": self.transformer, "qwen3_encoder": self.qwen3_encoder}
        refuse_applied(self, targets.items(), self.lora)
        applied = LoRAField(lora=self.lora, weight=self.weight)
        return ZImageLoRALoaderOutput(**{name: with_lora(target, applied) for name, target in targets.items()})


@invocation("z_image_lora_collection_loader", title="Apply LoRA Collection - Z-Image",
            tags=["lora", "model", "z-image"], category="model", version="1.0.1")
class ZImageLoRACollectionLoader(BaseInvocation):
    """Applies a collection of LoRAs to a Z-Image transformer."""

    loras: Optional[Union[LoRAField, list[LoRAField]]] = InputField(
        default=None, description="LoRA models and weights. May be a single LoRA or collection.", title="LoRAs",
        ui_model_base=[BaseModelType.ZImage], ui_model_type=ModelType.LoRA)
    transformer: Optional[TransformerField] = InputField(default=None, description=_TRANSFORMER,
                                                         input=Input.Connection, title="Transformer")
    qwen3_encoder: Optional[Qwen3EncoderField] = InputField(default=None, title="Qwen3 Encoder", description=_QWEN3,
                                                            input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ZImageLoRALoaderOutput:
        out = apply_lora_collection(self, self.loras, {"transformer": self.transformer,
                                                       "qwen3_encoder": self.qwen3_encoder}, _Z_IMAGE, context)
        return ZImageLoRALoaderOutput(**out)

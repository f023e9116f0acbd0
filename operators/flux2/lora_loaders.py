"""``flux2_klein_lora_loader`` / ``flux2_klein_lora_collection_loader`` and ``flux2_dev_lora_loader`` /
``flux2_dev_lora_collection_loader``: add FLUX.2 LoRAs to the ``loras`` lists of the transformer and text encoder
(Qwen3 for Klein, Mistral for [dev]) fields that come in (type strings, titles, versions, fields and the shared
``flux2_klein_lora_loader_output`` / ``flux2_dev_lora_loader_output`` as in InvokeAI's flux2_klein_lora_loader.py and
flux2_dev_lora_loader.py). Nothing is loaded here: ``flux2_denoise`` and the text encoder nodes patch the LoRAs in
for their span and restore the cached weights afterwards. As InvokeAI does, a LoRA whose recorded variant is the
other family's is refused (a [dev] LoRA cannot fit a Klein model, nor a Klein LoRA a [dev] one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from invokeai_provider.core.fields import (
    LoRAField,
    MistralEncoderField,
    ModelIdentifierField,
    Qwen3EncoderField,
    TransformerField,
)
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Classification,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, Flux2VariantType, ModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.models import (
    MODEL_SERVICE,
    ModelInputError,
    apply_lora_collection,
    check_model,
    refuse_applied,
    with_lora,
)

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_FLUX2 = (BaseModelType.Flux2,)
_QWEN3 = "Qwen3 tokenizer and text encoder"
_MISTRAL = "Mistral tokenizer/processor and text encoder"


def _refuse_other_family(node: BaseInvocation, field: str, lora: ModelIdentifierField, context: "InvocationContext",
                         *, dev: bool) -> None:
    """A LoRA recorded with the other family's variant ([dev] for a Klein loader, a Klein one for [dev]'s) cannot
    fit the model: refused here rather than as a shape error in the middle of denoising."""
    models = context.services.get(MODEL_SERVICE)
    config = models.get_config(lora) if models is not None and hasattr(models, "get_config") else None
    variant = getattr(config, "variant", None)
    if variant is None or (variant == Flux2VariantType.Dev) == dev:
        return
    if dev:
        raise field_error(ModelInputError, node, field, f"LoRA {lora.name!r} is a FLUX.2 {variant.value} LoRA and "
                          "cannot be applied to a FLUX.2 [dev] model; use flux2_klein_lora_loader for Klein LoRAs")
    raise field_error(ModelInputError, node, field, f"LoRA {lora.name!r} is a FLUX.2 [dev] LoRA and cannot be "
                      "applied to a FLUX.2 Klein model")


def _refuse_dev(node: BaseInvocation, field: str, lora: ModelIdentifierField, context: "InvocationContext") -> None:
    _refuse_other_family(node, field, lora, context, dev=False)


@invocation_output("flux2_klein_lora_loader_output")
class Flux2KleinLoRALoaderOutput(BaseInvocationOutput):
    """FLUX.2 Klein LoRA Loader Output"""

    transformer: Optional[TransformerField] = OutputField(default=None, description="Transformer", title="Transformer")
    qwen3_encoder: Optional[Qwen3EncoderField] = OutputField(default=None, description=_QWEN3, title="Qwen3 Encoder")


@invocation("flux2_klein_lora_loader", title="Apply LoRA - Flux2 Klein", tags=["lora", "model", "flux", "klein", "flux2"],
            category="model", version="1.0.0", classification=Classification.Prototype)
class Flux2KleinLoRALoaderInvocation(BaseInvocation):
    """Apply a LoRA model to a FLUX.2 Klein transformer and/or Qwen3 text encoder."""

    lora: ModelIdentifierField = InputField(description="LoRA model to load", title="LoRA",
                                            ui_model_base=BaseModelType.Flux2, ui_model_type=ModelType.LoRA)
    weight: float = InputField(default=0.75, description="The weight at which the LoRA is applied to each model")
    transformer: Optional[TransformerField] = InputField(default=None, description="Transformer", input=Input.Connection,
                                                         title="Transformer")
    qwen3_encoder: Optional[Qwen3EncoderField] = InputField(default=None, title="Qwen3 Encoder", description=_QWEN3,
                                                            input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> Flux2KleinLoRALoaderOutput:
        check_model(self, "lora", self.lora, context, ModelType.LoRA, _FLUX2)
        _refuse_dev(self, "lora", self.lora, context)
        targets = {"transformer": self.transformer, "qwen3_encoder": self.qwen3_encoder}
        refuse_applied(self, targets.items(), self.lora)
        applied = LoRAField(lora=self.lora, weight=self.weight)
        return Flux2KleinLoRALoaderOutput(**{name: with_lora(target, applied) for name, target in targets.items()})


@invocation("flux2_klein_lora_collection_loader", title="Apply LoRA Collection - Flux2 Klein",
            tags=["lora", "model", "flux", "klein", "flux2"], category="model", version="1.0.1",
            classification=Classification.Prototype)
class Flux2KleinLoRACollectionLoader(BaseInvocation):
    """Applies a collection of LoRAs to a FLUX.2 Klein transformer and/or Qwen3 text encoder."""

    loras: Optional[Union[LoRAField, list[LoRAField]]] = InputField(
        default=None, description="LoRA models and weights. May be a single LoRA or collection.", title="LoRAs",
        ui_model_base=[BaseModelType.Flux2], ui_model_type=ModelType.LoRA)
    transformer: Optional[TransformerField] = InputField(default=None, description="Transformer", input=Input.Connection,
                                                         title="Transformer")
    qwen3_encoder: Optional[Qwen3EncoderField] = InputField(default=None, title="Qwen3 Encoder", description=_QWEN3,
                                                            input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> Flux2KleinLoRALoaderOutput:
        items = self.loras if isinstance(self.loras, list) else [self.loras]
        for item in items:
            if item is not None:
                _refuse_dev(self, "loras", item.lora, context)
        out = apply_lora_collection(self, self.loras, {"transformer": self.transformer,
                                                       "qwen3_encoder": self.qwen3_encoder}, _FLUX2, context)
        return Flux2KleinLoRALoaderOutput(**out)


@invocation_output("flux2_dev_lora_loader_output")
class Flux2DevLoRALoaderOutput(BaseInvocationOutput):
    """FLUX.2 [dev] LoRA loader output."""

    transformer: Optional[TransformerField] = OutputField(default=None, description="Transformer", title="Transformer")
    mistral_encoder: Optional[MistralEncoderField] = OutputField(default=None, description=_MISTRAL,
                                                                 title="Mistral Encoder")


@invocation("flux2_dev_lora_loader", title="Apply LoRA - FLUX.2 [dev]", tags=["lora", "model", "flux", "flux2", "dev"],
            category="model", version="1.0.0", classification=Classification.Prototype)
class Flux2DevLoRALoaderInvocation(BaseInvocation):
    """Apply a LoRA to a FLUX.2 [dev] transformer and/or its Mistral text encoder."""

    lora: ModelIdentifierField = InputField(description="LoRA model to load", title="LoRA",
                                            ui_model_base=BaseModelType.Flux2, ui_model_type=ModelType.LoRA)
    weight: float = InputField(default=0.75, description="The weight at which the LoRA is applied to each model")
    transformer: Optional[TransformerField] = InputField(default=None, description="Transformer", input=Input.Connection,
                                                         title="Transformer")
    mistral_encoder: Optional[MistralEncoderField] = InputField(default=None, title="Mistral Encoder",
                                                                description=_MISTRAL, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> Flux2DevLoRALoaderOutput:
        check_model(self, "lora", self.lora, context, ModelType.LoRA, _FLUX2)
        _refuse_other_family(self, "lora", self.lora, context, dev=True)
        targets = {"transformer": self.transformer, "mistral_encoder": self.mistral_encoder}
        refuse_applied(self, targets.items(), self.lora)
        applied = LoRAField(lora=self.lora, weight=self.weight)
        return Flux2DevLoRALoaderOutput(**{name: with_lora(target, applied) for name, target in targets.items()})


@invocation("flux2_dev_lora_collection_loader", title="Apply LoRA Collection - FLUX.2 [dev]",
            tags=["lora", "model", "flux", "flux2", "dev"], category="model", version="1.0.0",
            classification=Classification.Prototype)
class Flux2DevLoRACollectionLoader(BaseInvocation):
    """Apply a collection of LoRAs to a FLUX.2 [dev] transformer and/or Mistral encoder."""

    loras: Optional[Union[LoRAField, list[LoRAField]]] = InputField(
        default=None, description="LoRA models and weights. May be a single LoRA or collection.", title="LoRAs")
    transformer: Optional[TransformerField] = InputField(default=None, description="Transformer", input=Input.Connection,
                                                         title="Transformer")
    mistral_encoder: Optional[MistralEncoderField] = InputField(default=None, title="Mistral Encoder",
                                                                description=_MISTRAL, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> Flux2DevLoRALoaderOutput:
        items = self.loras if isinstance(self.loras, list) else [self.loras]
        for item in items:
            if item is not None:
                check_model(self, "loras", item.lora, context, ModelType.LoRA, _FLUX2)
                _refuse_other_family(self, "loras", item.lora, context, dev=True)
        out = apply_lora_collection(self, self.loras, {"transformer": self.transformer,
                                                       "mistral_encoder": self.mistral_encoder}, _FLUX2, context)
        return Flux2DevLoRALoaderOutput(**out)

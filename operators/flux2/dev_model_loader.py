"""``flux2_dev_model_loader``: splits a FLUX.2 [dev] main model into transformer, Mistral encoder and VAE
identifiers, as InvokeAI's flux2_dev_model_loader.py does (type string, title, version 1.0.0, fields and output).

The transformer always comes from ``model``, which must be [dev] (a Klein transformer reads Qwen3's context, not
Mistral's). A diffusers [dev] main carries its own Mistral encoder and VAE; a BFL single file is the transformer
alone, and then they come from the standalone models selected, or from ``mistral_source_model``, a diffusers FLUX.2
pipeline: any FLUX.2 pipeline's VAE fits (the 32-channel VAE is shared), but only a [dev] pipeline's encoder does.
Nothing is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional

from invokeai_provider.core.fields import MistralEncoderField, ModelIdentifierField, TransformerField, VAEField
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
from invokeai_provider.core.taxonomy import BaseModelType, Flux2VariantType, ModelType, SubModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.models import ModelInputError, check_model, submodel
from invokeai_provider.operators.flux2.model_loader import choose_vae, diffusers_source
from invokeai_provider.operators.sd.common import model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

FLUX2 = (BaseModelType.Flux2,)
_MISTRAL = "Mistral tokenizer/processor and text encoder"


def _variant(config: Any) -> str:
    return str(getattr(config.variant, "value", config.variant))


@invocation_output("flux2_dev_model_loader_output")
class Flux2DevModelLoaderOutput(BaseInvocationOutput):
    """FLUX.2 [dev] model loader output."""

    transformer: TransformerField = OutputField(description="Transformer", title="Transformer")
    mistral_encoder: MistralEncoderField = OutputField(description=_MISTRAL, title="Mistral Encoder")
    vae: VAEField = OutputField(description="VAE", title="VAE")
    max_seq_len: Literal[256, 512] = OutputField(description="Max sequence length for the Mistral encoder.",
                                                 title="Max Seq Length")


@invocation("flux2_dev_model_loader", title="Main Model - FLUX.2 [dev]", tags=["model", "flux", "flux2", "dev", "mistral"],
            category="model", version="1.0.0", classification=Classification.Prototype)
class Flux2DevModelLoaderInvocation(BaseInvocation):
    """Load a FLUX.2 [dev] transformer plus its Mistral text encoder and VAE."""

    model: ModelIdentifierField = InputField(description="FLUX.2 [dev] model (Transformer) to load",
                                             input=Input.Direct, ui_model_base=BaseModelType.Flux2,
                                             ui_model_type=ModelType.Main, title="Transformer")
    vae_model: Optional[ModelIdentifierField] = InputField(
        default=None, input=Input.Direct, ui_model_base=BaseModelType.Flux2, ui_model_type=ModelType.VAE, title="VAE",
        description="Standalone FLUX.2 VAE (AutoencoderKLFlux2). If not provided, the VAE is extracted from the "
                    "Diffusers source model.")
    mistral_encoder_model: Optional[ModelIdentifierField] = InputField(
        default=None, input=Input.Direct, ui_model_type=ModelType.MistralEncoder, title="Mistral Encoder",
        description="Standalone Mistral text encoder. Required when the transformer is a single-file safetensors or "
                    "GGUF without a sibling Diffusers source.")
    mistral_source_model: Optional[ModelIdentifierField] = InputField(
        default=None, input=Input.Direct, ui_model_base=BaseModelType.Flux2, ui_model_type=ModelType.Main,
        ui_model_format="diffusers", title="Mistral Source (Diffusers)",
        description="Diffusers FLUX.2 [dev] model to extract VAE and/or Mistral encoder from. Use this if you don't "
                    "have separate VAE / Mistral encoder models. Ignored if both are provided separately.")
    max_seq_len: Literal[256, 512] = InputField(
        default=512, title="Max Seq Length",
        description="Max sequence length for the Mistral encoder. FLUX.2 [dev] uses 512 by default.")

    def invoke(self, context: "InvocationContext") -> Flux2DevModelLoaderOutput:
        check_model(self, "model", self.model, context, ModelType.Main, FLUX2)
        if self.vae_model is not None:
            check_model(self, "vae_model", self.vae_model, context, ModelType.VAE, FLUX2)
        if self.mistral_encoder_model is not None:
            check_model(self, "mistral_encoder_model", self.mistral_encoder_model, context, ModelType.MistralEncoder)
        if self.mistral_source_model is not None:
            check_model(self, "mistral_source_model", self.mistral_source_model, context, ModelType.Main, FLUX2)
        models = model_service(self, context, "model")
        main = models.get_config(self.model)
        if main.variant is not None and main.variant != Flux2VariantType.Dev:
            raise field_error(ModelInputError, self, "model", (
                f"needs a FLUX.2 [dev] transformer, but {main.name!r} is FLUX.2 variant {_variant(main)}; use "
                "flux2_klein_model_loader for Klein models"))
        vae = choose_vae(self, models, main, "mistral_source_model", "Mistral", "FLUX.2 [dev]")
        main_has_parts = main.format.value == "diffusers"
        if self.mistral_encoder_model is not None:
            encoder = self.mistral_encoder_model
        elif main_has_parts:
            encoder = self.model
        elif self.mistral_source_model is not None:
            source = diffusers_source(self, models, "mistral_source_model", "Mistral")
            if source.variant is not None and source.variant != Flux2VariantType.Dev:
                raise field_error(ModelInputError, self, "mistral_source_model", (
                    f"must be a FLUX.2 [dev] pipeline to take its text encoder from, but {source.name!r} is variant "
                    f"{_variant(source)}: its encoder does not fit a [dev] transformer (its VAE would)"))
            encoder = self.mistral_source_model
        else:
            raise field_error(ModelInputError, self, "mistral_encoder_model", (
                f"the selected FLUX.2 [dev] model {main.name!r} is a {main.format.value} (the transformer alone) and "
                "ships no text encoder: select a Mistral Small 3.1 encoder in mistral_encoder_model, or a diffusers "
                "FLUX.2 [dev] model in mistral_source_model"))
        return Flux2DevModelLoaderOutput(
            transformer=TransformerField(transformer=submodel(self.model, SubModelType.Transformer), loras=[]),
            mistral_encoder=MistralEncoderField(tokenizer=submodel(encoder, SubModelType.Tokenizer),
                                                text_encoder=submodel(encoder, SubModelType.TextEncoder), loras=[]),
            vae=VAEField(vae=submodel(vae, SubModelType.VAE)), max_seq_len=self.max_seq_len)

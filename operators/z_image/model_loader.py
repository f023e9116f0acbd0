"""``z_image_model_loader``: splits a Z-Image model into its transformer, Qwen3 encoder and VAE identifiers (type
string, title, version 3.1.0, fields and output as InvokeAI's z_image_model_loader.py).

The transformer is always the main model's. The VAE is ``vae_model`` (a FLUX VAE, which Z-Image shares), else the
``qwen3_source_model``'s; the Qwen3 encoder is ``qwen3_encoder_model`` (a standalone ``qwen3_encoder``), else the
source's. InvokeAI takes a main as its own source only when it is a self-contained SDNQ pipeline; here a
ZImagePipeline folder supplies whichever part is not selected too (InvokeAI would refuse it, asking for the same model
as the source), so a graph InvokeAI runs runs here as well. A single-file transformer has no parts: each part left
empty is refused by its field before anything loads. Nothing is loaded here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from invokeai_provider.core.fields import ModelIdentifierField, Qwen3EncoderField, TransformerField, VAEField
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
from invokeai_provider.core.taxonomy import BaseModelType, ModelType, Qwen3VariantType, SubModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.models import ModelInputError, check_model, submodel
from invokeai_provider.operators.sd.common import model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

Z_IMAGE = (BaseModelType.ZImage,)
QWEN3_DESCRIPTION = "Qwen3 tokenizer and text encoder"
TRANSFORMER_DESCRIPTION = "Z-Image model (Transformer) to load"


@invocation_output("z_image_model_loader_output")
class ZImageModelLoaderOutput(BaseInvocationOutput):
    """Z-Image base model loader output."""

    transformer: TransformerField = OutputField(description="Transformer", title="Transformer")
    qwen3_encoder: Qwen3EncoderField = OutputField(description=QWEN3_DESCRIPTION, title="Qwen3 Encoder")
    vae: VAEField = OutputField(description="VAE", title="VAE")


@invocation("z_image_model_loader", title="Main Model - Z-Image", tags=["model", "z-image"], category="model",
            version="3.1.0", classification=Classification.Prototype)
class ZImageModelLoaderInvocation(BaseInvocation):
    """Loads a Z-Image model, outputting its submodels."""

    model: ModelIdentifierField = InputField(description=TRANSFORMER_DESCRIPTION, input=Input.Direct,
                                             ui_model_base=BaseModelType.ZImage, ui_model_type=ModelType.Main,
                                             title="Transformer")
    vae_model: Optional[ModelIdentifierField] = InputField(
        default=None, description="Standalone VAE model. Z-Image uses the same VAE as FLUX (16-channel). If not "
        "provided, VAE will be loaded from the Qwen3 Source model.", input=Input.Direct,
        ui_model_base=BaseModelType.Flux, ui_model_type=ModelType.VAE, title="VAE")
    qwen3_encoder_model: Optional[ModelIdentifierField] = InputField(
        default=None, description="Standalone Qwen3 Encoder model. If not provided, encoder will be loaded from the "
        "Qwen3 Source model.", input=Input.Direct, ui_model_type=ModelType.Qwen3Encoder, title="Qwen3 Encoder")
    qwen3_source_model: Optional[ModelIdentifierField] = InputField(
        default=None, description="Z-Image pipeline model to extract VAE and/or Qwen3 encoder from. Use this if you "
        "don't have separate VAE/Qwen3 models. Ignored if both VAE and Qwen3 Encoder are provided separately.",
        input=Input.Direct, ui_model_base=BaseModelType.ZImage, ui_model_type=ModelType.Main, title="Qwen3 Source")

    def _pipeline_source(self, context: "InvocationContext") -> Optional[ModelIdentifierField]:
        """Where the parts not selected come from: ``qwen3_source_model`` (which must be a diffusers folder), else the
        main model when it is one; None when neither is."""
        models = model_service(self, context, "model")
        if self.qwen3_source_model is not None:
            config = models.get_config(self.qwen3_source_model)
            if config.format.value != "diffusers":
                raise field_error(ModelInputError, self, "qwen3_source_model", (
                    f"the Qwen3 Source must be a Diffusers-style Z-Image pipeline (with VAE / Qwen3 submodels); "
                    f"the selected model {config.name!r} is in {config.format.value} format"))
            return self.qwen3_source_model
        return self.model if models.get_config(self.model).format.value == "diffusers" else None

    def invoke(self, context: "InvocationContext") -> ZImageModelLoaderOutput:
        check_model(self, "model", self.model, context, ModelType.Main, Z_IMAGE)
        if self.vae_model is not None:
            check_model(self, "vae_model", self.vae_model, context, ModelType.VAE, (BaseModelType.Flux,))
        if self.qwen3_encoder_model is not None:
            check_model(self, "qwen3_encoder_model", self.qwen3_encoder_model, context, ModelType.Qwen3Encoder)
            variant = model_service(self, context, "qwen3_encoder_model").get_config(self.qwen3_encoder_model).variant
            if variant is not None and variant is not Qwen3VariantType.Qwen3_4B:
                raise field_error(ModelInputError, self, "qwen3_encoder_model", (
                    f"Z-Image reads Qwen3-4B's embeddings (2560 wide); the selected encoder is {variant.value}"))
        if self.qwen3_source_model is not None:
            check_model(self, "qwen3_source_model", self.qwen3_source_model, context, ModelType.Main, Z_IMAGE)
        # the source is read (and checked) only for a part not selected: with both selected it is ignored
        source = self._pipeline_source(context) if self.vae_model is None or self.qwen3_encoder_model is None \
            else None
        if self.vae_model is None and source is None:
            raise field_error(ModelInputError, self, "vae_model", "No VAE source provided. Either set 'VAE' to a FLUX "
                              "VAE model, or set 'Qwen3 Source' to a Diffusers Z-Image model.")
        if self.qwen3_encoder_model is None and source is None:
            raise field_error(ModelInputError, self, "qwen3_encoder_model", "No Qwen3 Encoder source provided. Either "
                              "set 'Qwen3 Encoder' to a standalone model, or set 'Qwen3 Source' to a Diffusers "
                              "Z-Image model.")
        encoder = self.qwen3_encoder_model or source
        return ZImageModelLoaderOutput(
            transformer=TransformerField(transformer=submodel(self.model, SubModelType.Transformer), loras=[]),
            qwen3_encoder=Qwen3EncoderField(tokenizer=submodel(encoder, SubModelType.Tokenizer),
                                            text_encoder=submodel(encoder, SubModelType.TextEncoder), loras=[]),
            vae=VAEField(vae=submodel(self.vae_model or source, SubModelType.VAE)))

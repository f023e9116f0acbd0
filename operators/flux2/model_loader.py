"""``flux2_klein_model_loader``: splits a FLUX.2 Klein main model into transformer, Qwen3 encoder and VAE
identifiers, as InvokeAI's flux2_klein_model_loader.py does (type string, title, version 1.1.0, fields and output).

The transformer always comes from ``model``. A diffusers main carries its own Qwen3 encoder and VAE; a BFL single
file is the transformer alone, and then the VAE and the encoder come from the standalone models selected, or from
``qwen3_source_model``, a diffusers Klein main to take them from. As InvokeAI does, a standalone Qwen3 encoder must
be the size the Klein variant was trained with (Klein 4B: Qwen3 4B, Klein 9B: Qwen3 8B), and so must a source
main's (its VAE fits any FLUX.2 main). The VAE must be FLUX.2's 32-channel one: a FLUX.1 VAE is refused here rather
than failing when the latents reach it. Nothing is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional

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
from invokeai_provider.core.taxonomy import (
    BaseModelType,
    Flux2VariantType,
    ModelType,
    Qwen3VariantType,
    SubModelType,
)
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.models import ModelInputError, check_model, submodel
from invokeai_provider.operators.sd.common import model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

FLUX2 = (BaseModelType.Flux2,)
# The Qwen3 size each Klein variant was trained with ([dev] is absent: its encoder is Mistral)
KLEIN_QWEN3 = {Flux2VariantType.Klein4B: Qwen3VariantType.Qwen3_4B, Flux2VariantType.Klein4BBase: Qwen3VariantType.Qwen3_4B,
               Flux2VariantType.Klein9B: Qwen3VariantType.Qwen3_8B, Flux2VariantType.Klein9BBase: Qwen3VariantType.Qwen3_8B}



def diffusers_source(node: Any, models: Any, field: str, encoder: str) -> Any:
    """The record of the source main in ``field``: it must be a diffusers folder, which has the parts."""
    config = models.get_config(getattr(node, field))
    if config.format.value != "diffusers":
        raise field_error(ModelInputError, node, field, (
            f"must be a diffusers FLUX.2 pipeline (with its VAE and {encoder} encoder); {config.name!r} is a "
            f"{config.format.value}"))
    return config


def choose_vae(node: Any, models: Any, main: Any, source_field: str, encoder: str, family: str) -> Any:
    """The VAE a FLUX.2 loader outputs: the one selected, else the diffusers main's own, else the source main's;
    a single-file transformer with none of them is refused naming ``vae_model``."""
    source = getattr(node, source_field)
    if node.vae_model is not None:
        return node.vae_model
    if main.format.value == "diffusers":
        return node.model
    if source is not None:
        diffusers_source(node, models, source_field, encoder)
        return source
    raise field_error(ModelInputError, node, "vae_model", (
        f"the selected {family} model {main.name!r} is a {main.format.value} (the transformer alone) and ships no "
        f"VAE: select a FLUX.2 VAE in vae_model, or a diffusers {family} model in {source_field}"))

@invocation_output("flux2_klein_model_loader_output")
class Flux2KleinModelLoaderOutput(BaseInvocationOutput):
    """Flux2 Klein model loader output."""

    transformer: TransformerField = OutputField(description="Transformer", title="Transformer")
    qwen3_encoder: Qwen3EncoderField = OutputField(description="Qwen3 tokenizer and text encoder", title="Qwen3 Encoder")
    vae: VAEField = OutputField(description="VAE", title="VAE")
    max_seq_len: Literal[256, 512] = OutputField(description="The max sequence length for the Qwen3 encoder.",
                                                 title="Max Seq Length")


@invocation("flux2_klein_model_loader", title="Main Model - Flux2 Klein", tags=["model", "flux", "klein", "qwen3"],
            category="model", version="1.1.0", classification=Classification.Prototype)
class Flux2KleinModelLoaderInvocation(BaseInvocation):
    """Loads a Flux2 Klein model, outputting its submodels."""

    # InvokeAI's is a direct input; here an edge may feed it too (the example workflows feed it from a
    # model_identifier node so that the image metadata records the model chosen in the form)
    model: ModelIdentifierField = InputField(description="Flux model (Transformer) to load", title="Transformer",
                                             ui_model_base=BaseModelType.Flux2, ui_model_type=ModelType.Main)
    vae_model: Optional[ModelIdentifierField] = InputField(
        default=None, title="VAE", input=Input.Direct, ui_model_base=[BaseModelType.Flux, BaseModelType.Flux2],
        ui_model_type=ModelType.VAE,
        description="Standalone VAE model. Flux2 Klein uses the same VAE as FLUX (16-channel). If not provided, VAE "
                    "will be loaded from the Qwen3 Source model.")
    qwen3_encoder_model: Optional[ModelIdentifierField] = InputField(
        default=None, title="Qwen3 Encoder", input=Input.Direct, ui_model_type=ModelType.Qwen3Encoder,
        description="Standalone Qwen3 Encoder model. If not provided, encoder will be loaded from the Qwen3 Source "
                    "model.")
    qwen3_source_model: Optional[ModelIdentifierField] = InputField(
        default=None, title="Qwen3 Source", input=Input.Direct, ui_model_base=BaseModelType.Flux2,
        ui_model_type=ModelType.Main,
        description="Diffusers or SDNQ-pipeline Flux2 Klein model to extract VAE and/or Qwen3 encoder from. Use this "
                    "if you don't have separate VAE/Qwen3 models. Ignored if both VAE and Qwen3 Encoder are provided "
                    "separately.")
    max_seq_len: Literal[256, 512] = InputField(default=512, description="Max sequence length for the Qwen3 encoder.",
                                                title="Max Seq Length")

    def invoke(self, context: "InvocationContext") -> Flux2KleinModelLoaderOutput:
        check_model(self, "model", self.model, context, ModelType.Main, FLUX2)
        if self.vae_model is not None:
            check_model(self, "vae_model", self.vae_model, context, ModelType.VAE, FLUX2)
        if self.qwen3_encoder_model is not None:
            check_model(self, "qwen3_encoder_model", self.qwen3_encoder_model, context, ModelType.Qwen3Encoder)
        if self.qwen3_source_model is not None:
            check_model(self, "qwen3_source_model", self.qwen3_source_model, context, ModelType.Main, FLUX2)
        models = model_service(self, context, "model")
        main = models.get_config(self.model)
        vae = choose_vae(self, models, main, "qwen3_source_model", "Qwen3", "FLUX.2")
        main_has_parts = main.format.value == "diffusers"
        if self.qwen3_encoder_model is not None:
            self._check_encoder_size(models, main)
            encoder = self.qwen3_encoder_model
        elif main_has_parts:
            encoder = self.model
        elif self.qwen3_source_model is not None:
            self._check_source_encoder(models, main)
            encoder = self.qwen3_source_model
        else:
            raise field_error(ModelInputError, self, "qwen3_encoder_model", (
                f"the selected FLUX.2 model {main.name!r} is a {main.format.value} (the transformer alone) and ships "
                "no text encoder: select a Qwen3 encoder in qwen3_encoder_model (Klein 4B needs Qwen3 4B, Klein 9B "
                "Qwen3 8B), or a diffusers Flux2 Klein model in qwen3_source_model"))
        return Flux2KleinModelLoaderOutput(
            transformer=TransformerField(transformer=submodel(self.model, SubModelType.Transformer), loras=[]),
            qwen3_encoder=Qwen3EncoderField(tokenizer=submodel(encoder, SubModelType.Tokenizer),
                                            text_encoder=submodel(encoder, SubModelType.TextEncoder), loras=[]),
            vae=VAEField(vae=submodel(vae, SubModelType.VAE)), max_seq_len=self.max_seq_len)

    def _check_source_encoder(self, models: Any, main: Any) -> None:
        """A source main's encoder goes with this transformer only if both are Klein of the same Qwen3 size."""
        source = diffusers_source(self, models, "qwen3_source_model", "Qwen3")
        source_qwen3 = KLEIN_QWEN3.get(source.variant)
        if source_qwen3 is None:
            raise field_error(ModelInputError, self, "qwen3_source_model", (
                f"must be a FLUX.2 Klein pipeline, but {source.name!r} is variant "
                f"{getattr(source.variant, 'value', source.variant)}: its text encoder does not fit a Klein "
                "transformer"))
        needed = KLEIN_QWEN3.get(main.variant)
        if needed is not None and needed is not source_qwen3:
            raise field_error(ModelInputError, self, "qwen3_source_model", (
                f"Qwen3 encoder size mismatch: FLUX.2 Klein {main.variant.value} needs {needed.value}, but "
                f"{source.name!r} ({source.variant.value}) carries {source_qwen3.value}; 4B pairs with 4B, 9B with 9B"))

    def _check_encoder_size(self, models: Any, main: Any) -> None:
        encoder = models.get_config(self.qwen3_encoder_model)
        needed = KLEIN_QWEN3.get(main.variant)
        if encoder.variant is not None and needed is not None and encoder.variant != needed:
            raise field_error(ModelInputError, self, "qwen3_encoder_model", (
                f"Qwen3 encoder size mismatch: FLUX.2 Klein {main.variant.value} needs {needed.value}, but "
                f"{encoder.name!r} is {getattr(encoder.variant, 'value', encoder.variant)}"))

"""``cogview4_model_loader``: splits a CogView4 main model into transformer, GLM encoder and VAE identifiers, as
InvokeAI's cogview4_model_loader.py does (type string, title, version 1.0.0, field and output). Nothing is loaded:
the identifiers pass on, pointed at the submodel each part is (``transformer``, ``tokenizer`` and ``text_encoder``,
``vae``). InvokeAI has no separate GLM encoder or CogView4 VAE models: every part comes from the main."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import GlmEncoderField, ModelIdentifierField, TransformerField, VAEField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Classification,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.operators.core.models import check_model, submodel

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

COGVIEW4_MODEL_DESCRIPTION = "CogView4 model (Transformer) to load"


@invocation_output("cogview4_model_loader_output")
class CogView4ModelLoaderOutput(BaseInvocationOutput):
    """CogView4 base model loader output."""

    transformer: TransformerField = OutputField(description="Transformer", title="Transformer")
    glm_encoder: GlmEncoderField = OutputField(description="GLM (THUDM) tokenizer and text encoder",
                                               title="GLM Encoder")
    vae: VAEField = OutputField(description="VAE", title="VAE")


@invocation("cogview4_model_loader", title="Main Model - CogView4", tags=["model", "cogview4"], category="model",
            version="1.0.0", classification=Classification.Prototype)
class CogView4ModelLoaderInvocation(BaseInvocation):
    """Loads a CogView4 base model, outputting its submodels."""

    # InvokeAI's is a direct input; here an edge may feed it too (the example workflows feed it from a
    # model_identifier node so that the image metadata records the model chosen in the form)
    model: ModelIdentifierField = InputField(description=COGVIEW4_MODEL_DESCRIPTION,
                                             ui_model_base=BaseModelType.CogView4, ui_model_type=ModelType.Main)

    def invoke(self, context: "InvocationContext") -> CogView4ModelLoaderOutput:
        check_model(self, "model", self.model, context, ModelType.Main, (BaseModelType.CogView4,))
        return CogView4ModelLoaderOutput(
            transformer=TransformerField(transformer=submodel(self.model, SubModelType.Transformer), loras=[]),
            glm_encoder=GlmEncoderField(tokenizer=submodel(self.model, SubModelType.Tokenizer),
                                        text_encoder=submodel(self.model, SubModelType.TextEncoder)),
            vae=VAEField(vae=submodel(self.model, SubModelType.VAE)))

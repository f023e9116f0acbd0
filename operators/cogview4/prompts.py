"""``cogview4_text_encoder``: a prompt encoded by CogView4's GLM (the hidden states of its second-to-last layer, left
padded to a multiple of 16 tokens), stored as one conditioning object. Type string, title, version 1.0.0, fields
and output follow InvokeAI's cogview4_text_encoder.py; the encoding is
`invokeai_provider.models.cogview4.text_encoding`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import CogView4ConditioningField, GlmEncoderField
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
from invokeai_provider.core.limits import PROMPT_LENGTH
from invokeai_provider.operators.sd.common import model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

COGVIEW4 = "cogview4"  # the ``kind`` in a saved conditioning's metadata
GLM_EMBEDS = "glm_embeds"


@invocation_output("cogview4_conditioning_output")
class CogView4ConditioningOutput(BaseInvocationOutput):
    """Base class for nodes that output a CogView text conditioning tensor."""

    conditioning: CogView4ConditioningField = OutputField(description="Conditioning tensor")


@invocation("cogview4_text_encoder", title="Prompt - CogView4", tags=["prompt", "conditioning", "cogview4"],
            category="prompt", version="1.0.0", classification=Classification.Prototype, gpu=True)
class CogView4TextEncoderInvocation(BaseInvocation):
    """Encodes and preps a prompt for a cogview4 image."""

    prompt: str = InputField(description="Text prompt to encode.", ui_component="textarea", limit=PROMPT_LENGTH)
    glm_encoder: GlmEncoderField = InputField(title="GLM Encoder", description="GLM (THUDM) tokenizer and text "
                                              "encoder", input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> CogView4ConditioningOutput:
        from invokeai_provider.models.cogview4.text_encoding import encode_glm

        models = model_service(self, context, "glm_encoder")
        context.util.signal_progress("Running GLM text encoder")
        with models.load(self.glm_encoder.tokenizer) as tokenizer, models.load(self.glm_encoder.text_encoder) as glm:
            embeds = encode_glm(tokenizer, glm, self.prompt, warn=context.logger.warning)
        name = context.conditioning.save_dict({GLM_EMBEDS: embeds.detach().float().cpu()},
                                              metadata={"kind": COGVIEW4})
        return CogView4ConditioningOutput(conditioning=CogView4ConditioningField(conditioning_name=name))

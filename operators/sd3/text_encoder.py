"""``sd3_text_encoder``: a prompt encoded by CLIP-L, CLIP-G and (when connected) T5, stored as one conditioning
object. Type string, title, version 1.0.1, fields and output (``sd3_conditioning_output``) follow InvokeAI's
sd3_text_encoder.py; the encoding is `invokeai_provider.models.sd3.text_encoding`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from invokeai_provider.core.fields import CLIPField, SD3ConditioningField, T5EncoderField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.limits import PROMPT_LENGTH
from invokeai_provider.errors import field_error
from invokeai_provider.operators.sd.common import GenerationError, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

CLIP_DESCRIPTION = "CLIP (tokenizer, text encoder, LoRAs) and skipped layer count"


@invocation_output("sd3_conditioning_output")
class SD3ConditioningOutput(BaseInvocationOutput):
    """Base class for nodes that output a single SD3 conditioning tensor"""

    conditioning: SD3ConditioningField = OutputField(description="Conditioning tensor")


@invocation("sd3_text_encoder", title="Prompt - SD3", tags=["prompt", "conditioning", "sd3"], category="prompt",
            version="1.0.1", gpu=True)
class Sd3TextEncoderInvocation(BaseInvocation):
    """Encodes and preps a prompt for a SD3 image."""

    clip_l: CLIPField = InputField(title="CLIP L", description=CLIP_DESCRIPTION, input=Input.Connection)
    clip_g: CLIPField = InputField(title="CLIP G", description=CLIP_DESCRIPTION, input=Input.Connection)
    # SD3 was trained with text-encoder dropout: T5 may be left out to save time and memory
    t5_encoder: Optional[T5EncoderField] = InputField(title="T5Encoder", default=None,
                                                      description="T5 tokenizer and text encoder",
                                                      input=Input.Connection)
    prompt: str = InputField(description="Text prompt to encode.", limit=PROMPT_LENGTH)

    def _refuse_loras(self) -> None:
        """InvokeAI 6.11 has no SD3 LoRA models or loaders: a LoRA on these fields came from another family."""
        for field in ("clip_l", "clip_g", "t5_encoder"):
            value = getattr(self, field)
            if value is not None and value.loras:
                raise field_error(GenerationError, self, field, f"{len(value.loras)} LoRA(s) given; SD3 has no "
                                  "LoRAs in InvokeAI 6.11 (no SD3 LoRA models or loaders)")

    def _clip(self, context: "InvocationContext", field: str) -> tuple[object, object]:
        from invokeai_provider.models.sd3.text_encoding import CLIP_MAX_LEN, encode_clip, truncated

        clip: CLIPField = getattr(self, field)
        models = model_service(self, context, field)
        with models.load(clip.tokenizer) as tokenizer, models.load(clip.text_encoder) as encoder:
            if not hasattr(encoder, "text_projection"):
                raise field_error(GenerationError, self, field, f"the text encoder {clip.text_encoder.name!r} "
                                  f"({clip.text_encoder.submodel_type}) has no text projection; SD3 needs "
                                  "CLIPTextModelWithProjection")
            if truncated(tokenizer, self.prompt, CLIP_MAX_LEN):
                context.logger.warning(f"{field}: the prompt was truncated to CLIP's {CLIP_MAX_LEN} tokens")
            return encode_clip(tokenizer, encoder, self.prompt)

    def invoke(self, context: "InvocationContext") -> SD3ConditioningOutput:
        from invokeai_provider.models.sd3.text_encoding import (
            KIND,
            T5_MAX_SEQ_LEN,
            SD3Conditioning,
            encode_t5,
            truncated,
        )

        self._refuse_loras()
        context.util.signal_progress("Running CLIP encoder")
        clip_l, clip_l_pooled = self._clip(context, "clip_l")
        clip_g, clip_g_pooled = self._clip(context, "clip_g")
        t5 = None
        if self.t5_encoder is not None:
            context.util.signal_progress("Running T5 encoder")
            models = model_service(self, context, "t5_encoder")
            with models.load(self.t5_encoder.tokenizer) as tokenizer, \
                    models.load(self.t5_encoder.text_encoder) as encoder:
                if truncated(tokenizer, self.prompt, T5_MAX_SEQ_LEN):
                    context.logger.warning(f"t5_encoder: the prompt was truncated to {T5_MAX_SEQ_LEN} tokens")
                t5 = encode_t5(tokenizer, encoder, self.prompt)
        conditioning = SD3Conditioning(clip_l, clip_l_pooled, clip_g, clip_g_pooled, t5)
        name = context.conditioning.save_dict(conditioning.to_dict(), metadata={"kind": KIND})
        return SD3ConditioningOutput(conditioning=SD3ConditioningField(conditioning_name=name))

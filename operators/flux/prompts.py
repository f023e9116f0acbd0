"""``flux_text_encoder``: a prompt encoded by T5 (its last hidden state, padded to the variant's length) and CLIP-L
(its pooled output), stored as one conditioning object. Type string, title, version 1.1.2, fields and output follow
InvokeAI's flux_text_encoder.py; the encoding is `invokeai_provider.models.flux.text_encoding`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

from invokeai_provider.core.fields import CLIPField, FluxConditioningField, T5EncoderField, TensorField
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
from invokeai_provider.core.taxonomy import BaseModelType
from invokeai_provider.operators.sd.common import lora_patched, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

FLUX = "flux"  # the ``kind`` in a saved conditioning's metadata
FLUX_BASE = BaseModelType.Flux


@invocation_output("flux_conditioning_output")
class FluxConditioningOutput(BaseInvocationOutput):
    """Base class for nodes that output a single conditioning tensor"""

    conditioning: FluxConditioningField = OutputField(description="Conditioning tensor")


@invocation("flux_text_encoder", title="Prompt - FLUX", tags=["prompt", "conditioning", "flux"], category="prompt",
            version="1.1.2", gpu=True)
class FluxTextEncoderInvocation(BaseInvocation):
    """Encodes and preps a prompt for a flux image."""

    clip: CLIPField = InputField(title="CLIP", description="CLIP (tokenizer, text encoder, LoRAs) and skipped layer "
                                 "count", input=Input.Connection)
    t5_encoder: T5EncoderField = InputField(title="T5Encoder", description="T5 tokenizer and text encoder",
                                            input=Input.Connection)
    t5_max_seq_len: Literal[256, 512] = InputField(
        description="Max sequence length for the T5 encoder. Expected to be 256 for FLUX schnell models and 512 for "
                    "FLUX dev models.")
    prompt: str = InputField(description="Text prompt to encode.", ui_component="textarea", limit=PROMPT_LENGTH)
    mask: Optional[TensorField] = InputField(
        default=None, description="A mask defining the region that this conditioning prompt applies to.")

    def invoke(self, context: "InvocationContext") -> FluxConditioningOutput:
        from invokeai_provider.models.flux.text_encoding import encode_clip, encode_t5

        models = model_service(self, context, "t5_encoder")
        context.util.signal_progress("Running T5 encoder")
        with models.load(self.t5_encoder.tokenizer) as tokenizer, models.load(self.t5_encoder.text_encoder) as t5, \
                lora_patched(self, context, "t5_encoder", t5, self.t5_encoder.loras, "text_encoder_2", FLUX_BASE):
            t5_embeds = encode_t5(tokenizer, t5, self.prompt, self.t5_max_seq_len)
        context.util.signal_progress("Running CLIP encoder")
        with models.load(self.clip.tokenizer) as tokenizer, models.load(self.clip.text_encoder) as clip, \
                lora_patched(self, context, "clip", clip, self.clip.loras, "text_encoder", FLUX_BASE):
            clip_embeds = encode_clip(tokenizer, clip, self.prompt)
        name = context.conditioning.save_dict({"t5_embeds": t5_embeds.detach().float().cpu(),
                                               "clip_embeds": clip_embeds.detach().float().cpu()},
                                              metadata={"kind": FLUX})
        return FluxConditioningOutput(conditioning=FluxConditioningField(conditioning_name=name, mask=self.mask))

"""``flux2_klein_text_encoder``: a prompt encoded by FLUX.2 Klein's Qwen3 encoder (hidden states 9, 18 and 27 side
by side, and the mean of the last over the prompt's tokens), and ``flux2_dev_text_encoder``: by FLUX.2 [dev]'s
Mistral Small 3.1 (BFL's system message, hidden states 10, 20 and 30 side by side, a zero for the pooled embedding).
Each is stored as one conditioning object under the names FLUX.1's uses, in the shared ``flux_conditioning_output``.
Type strings, titles, versions (1.1.1, 1.0.1) and fields follow InvokeAI's flux2_klein_text_encoder.py and
flux2_dev_text_encoder.py; the encoding is `invokeai_provider.models.flux2.text_encoding`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

from invokeai_provider.core.fields import FluxConditioningField, MistralEncoderField, Qwen3EncoderField, TensorField
from invokeai_provider.core.invocation import BaseInvocation, Classification, Input, InputField, invocation
from invokeai_provider.core.limits import PROMPT_LENGTH
from invokeai_provider.core.taxonomy import BaseModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.flux.prompts import FluxConditioningOutput
from invokeai_provider.operators.sd.common import GenerationError, lora_patched, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext


@invocation("flux2_klein_text_encoder", title="Prompt - Flux2 Klein",
            tags=["prompt", "conditioning", "flux", "klein", "qwen3"], category="prompt", version="1.1.1",
            classification=Classification.Prototype, gpu=True)
class Flux2KleinTextEncoderInvocation(BaseInvocation):
    """Encodes and preps a prompt for Flux2 Klein image generation."""

    prompt: str = InputField(description="Text prompt to encode.", ui_component="textarea", limit=PROMPT_LENGTH)
    qwen3_encoder: Qwen3EncoderField = InputField(title="Qwen3 Encoder", description="Qwen3 tokenizer and text encoder",
                                                  input=Input.Connection)
    max_seq_len: Literal[256, 512] = InputField(default=512, description="Max sequence length for the Qwen3 encoder.")
    mask: Optional[TensorField] = InputField(
        default=None, description="A mask defining the region that this conditioning prompt applies to.")

    def invoke(self, context: "InvocationContext") -> FluxConditioningOutput:
        from invokeai_provider.models.flux2.text_encoding import KIND, encode_klein

        models = model_service(self, context, "qwen3_encoder")
        with models.load(self.qwen3_encoder.text_encoder) as encoder, models.load(self.qwen3_encoder.tokenizer) \
                as tokenizer, lora_patched(self, context, "qwen3_encoder", encoder, self.qwen3_encoder.loras,
                                           "text_encoder", BaseModelType.Flux2):
            context.util.signal_progress("Running Qwen3 text encoder (Klein)")
            encoded = encode_klein(tokenizer, encoder, self.prompt, self.max_seq_len)
        name = context.conditioning.save_dict({"t5_embeds": encoded.embeds.detach().float().cpu(),
                                               "clip_embeds": encoded.pooled.detach().float().cpu()},
                                              metadata={"kind": KIND})
        return FluxConditioningOutput(conditioning=FluxConditioningField(conditioning_name=name, mask=self.mask))


@invocation("flux2_dev_text_encoder", title="Prompt - FLUX.2 [dev]",
            tags=["prompt", "conditioning", "flux", "flux2", "dev", "mistral"], category="prompt", version="1.0.1",
            classification=Classification.Prototype, gpu=True)
class Flux2DevTextEncoderInvocation(BaseInvocation):
    """Encode a prompt for FLUX.2 [dev] using its Mistral Small 3.1 text encoder."""

    prompt: str = InputField(description="Text prompt to encode.", ui_component="textarea", limit=PROMPT_LENGTH)
    mistral_encoder: MistralEncoderField = InputField(title="Mistral Encoder", input=Input.Connection,
                                                      description="Mistral tokenizer/processor and text encoder")
    max_seq_len: Literal[256, 512] = InputField(default=512, description="Max sequence length for the Mistral encoder.")
    mask: Optional[TensorField] = InputField(
        default=None, description="A mask defining the region that this conditioning prompt applies to.")

    def invoke(self, context: "InvocationContext") -> FluxConditioningOutput:
        from invokeai_provider.models.flux2.text_encoding import KIND, EncoderTooShallow, encode_dev

        models = model_service(self, context, "mistral_encoder")
        with models.load(self.mistral_encoder.text_encoder) as encoder, models.load(self.mistral_encoder.tokenizer) \
                as tokenizer, lora_patched(self, context, "mistral_encoder", encoder, self.mistral_encoder.loras,
                                           "text_encoder", BaseModelType.Flux2):
            context.util.signal_progress("Running Mistral text encoder (FLUX.2 [dev])")
            try:
                encoded = encode_dev(tokenizer, encoder, self.prompt, self.max_seq_len)
            except EncoderTooShallow as exc:
                raise field_error(GenerationError, self, "mistral_encoder", str(exc)) from None
        name = context.conditioning.save_dict({"t5_embeds": encoded.embeds.detach().float().cpu(),
                                               "clip_embeds": encoded.pooled.detach().float().cpu()},
                                              metadata={"kind": KIND})
        return FluxConditioningOutput(conditioning=FluxConditioningField(conditioning_name=name, mask=self.mask))

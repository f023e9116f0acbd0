"""Z-Image's prompt nodes: ``z_image_text_encoder`` (the prompt's Qwen3 embeddings, stored as one conditioning object)
and ``z_image_seed_variance_enhancer`` (seeded noise on those embeddings, so that Turbo's images differ more between
seeds). Type strings, titles, versions, fields and the ``z_image_conditioning_output`` follow InvokeAI's
z_image_text_encoder.py and z_image_seed_variance_enhancer.py; the encoding is
`invokeai_provider.models.z_image.text_encoding`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from invokeai_provider.core.fields import Qwen3EncoderField, TensorField, ZImageConditioningField
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
from invokeai_provider.core.taxonomy import BaseModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.sd.common import GenerationError, lora_patched, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

Z_IMAGE = "z-image"  # the ``kind`` in a saved conditioning's metadata
EMBEDS = "prompt_embeds"


@invocation_output("z_image_conditioning_output")
class ZImageConditioningOutput(BaseInvocationOutput):
    """Base class for nodes that output a Z-Image text conditioning tensor."""

    conditioning: ZImageConditioningField = OutputField(description="Conditioning tensor")


def save_embeds(context: "InvocationContext", embeds: "object") -> str:
    return context.conditioning.save_dict({EMBEDS: embeds}, metadata={"kind": Z_IMAGE})


def load_embeds(node: BaseInvocation, context: "InvocationContext", field: str, name: str) -> "object":
    """The ``(tokens, width)`` embeddings of a Z-Image conditioning; another family's is refused naming the field."""
    tensors = context.conditioning.load_dict(name)
    if EMBEDS not in tensors:
        raise field_error(GenerationError, node, field, f"conditioning {name!r} is not a Z-Image conditioning (it has "
                          f"{', '.join(sorted(tensors))}; expected {EMBEDS} from z_image_text_encoder)")
    return tensors[EMBEDS]


@invocation("z_image_text_encoder", title="Prompt - Z-Image", tags=["prompt", "conditioning", "z-image"],
            category="prompt", version="1.1.0", classification=Classification.Prototype, gpu=True)
class ZImageTextEncoderInvocation(BaseInvocation):
    """Encodes and preps a prompt for a Z-Image image.

    Supports regional prompting by connecting a mask input."""

    prompt: str = InputField(description="Text prompt to encode.", ui_component="textarea", limit=PROMPT_LENGTH)
    qwen3_encoder: Qwen3EncoderField = InputField(title="Qwen3 Encoder", description="Qwen3 tokenizer and text encoder",
                                                  input=Input.Connection)
    mask: Optional[TensorField] = InputField(
        default=None, description="A mask defining the region that this conditioning prompt applies to.")

    def invoke(self, context: "InvocationContext") -> ZImageConditioningOutput:
        from invokeai_provider.models.z_image.text_encoding import MAX_SEQ_LEN, encode

        models = model_service(self, context, "qwen3_encoder")
        with models.load(self.qwen3_encoder.tokenizer) as tokenizer, \
                models.load(self.qwen3_encoder.text_encoder) as encoder, \
                lora_patched(self, context, "qwen3_encoder", encoder, self.qwen3_encoder.loras, "text_encoder",
                             BaseModelType.ZImage):
            context.util.signal_progress("Running Qwen3 text encoder")
            embeds, truncated = encode(tokenizer, encoder, self.prompt, MAX_SEQ_LEN)
        if truncated:
            context.logger.warning("%s: the following part of the prompt was truncated because it is longer than "
                                   "%d tokens: %s", self.id, MAX_SEQ_LEN, truncated)
        return ZImageConditioningOutput(conditioning=ZImageConditioningField(
            conditioning_name=save_embeds(context, embeds), mask=self.mask))


@invocation("z_image_seed_variance_enhancer", title="Seed Variance Enhancer - Z-Image",
            tags=["conditioning", "z-image", "variance", "seed"], category="prompt", version="1.0.0",
            classification=Classification.Prototype)
class ZImageSeedVarianceEnhancerInvocation(BaseInvocation):
    """Adds seed-based noise to Z-Image conditioning to increase variance between seeds.

    The noise is uniform in ``[-1, 1)`` times ``strength`` times the embeddings' standard deviation, added to a
    seeded random ``randomize_percent`` of the values (InvokeAI's draws: the noise from ``seed``, the selection from
    ``seed + 1``, both on the CPU)."""

    conditioning: ZImageConditioningField = InputField(description="Conditioning tensor", input=Input.Connection,
                                                       title="Conditioning")
    seed: int = InputField(default=0, ge=0, description="Seed for reproducible noise generation. Different seeds "
                           "produce different noise patterns.")
    strength: float = InputField(default=0.1, ge=0.0, le=2.0, description="Noise strength as multiplier of embedding "
                                 "std. 0=off, 0.1=subtle, 0.5=strong.")
    randomize_percent: float = InputField(default=50.0, ge=1.0, le=100.0, description="Percentage of embedding values "
                                          "to add noise to (1-100). Lower values create more selective noise "
                                          "patterns.")

    def invoke(self, context: "InvocationContext") -> ZImageConditioningOutput:
        import torch

        embeds = load_embeds(self, context, "conditioning", self.conditioning.conditioning_name)
        if self.strength == 0:
            return ZImageConditioningOutput(conditioning=self.conditioning)
        scale = self.strength * torch.std(embeds).item()
        generator = torch.Generator("cpu").manual_seed(self.seed)
        noise = (torch.rand(embeds.shape, generator=generator, dtype=embeds.dtype) * 2 - 1) * scale
        generator.manual_seed(self.seed + 1)
        chosen = torch.bernoulli(torch.full_like(embeds, self.randomize_percent / 100.0), generator=generator).bool()
        return ZImageConditioningOutput(conditioning=ZImageConditioningField(
            conditioning_name=save_embeds(context, embeds + noise * chosen), mask=self.conditioning.mask))

"""Prompt nodes: compel conditioning for SD1.x/SD2.x, SDXL and the SDXL refiner.

Type strings, fields, versions and outputs follow InvokeAI's compel.py. The text encoders come from the run's
model service with their LoRAs, CLIP skip and the prompt's ``<embedding>`` triggers applied for the node
(:mod:`invokeai_provider.models.patches.apply`, :mod:`invokeai_provider.models.stable_diffusion.extensions`);
torch and compel are imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from invokeai_provider.core.fields import CLIPField, ConditioningField, TensorField
from invokeai_provider.core.invocation import BaseInvocation, Input, InputField, invocation
from invokeai_provider.core.limits import PROMPT_LENGTH
from invokeai_provider.core.taxonomy import BaseModelType, SubModelType
from invokeai_provider.operators.core.primitives import ConditioningOutput
from invokeai_provider.operators.sd.common import lora_patched, model_service
from invokeai_provider.operators.sd.model_fields import CLIP_DESCRIPTION

if TYPE_CHECKING:
    import torch

    from invokeai_provider.core.context import InvocationContext

# The ``kind`` recorded in a saved conditioning's metadata: one text encoder, or SDXL's pair.
BASIC, SDXL = "basic", "sdxl"
_PROMPT = "Prompt to be parsed by Compel to create a conditioning tensor"


def _encode(node: BaseInvocation, context: "InvocationContext", clip: CLIPField, prompt: str, *, pooled: bool,
            field: str, penultimate: bool) -> tuple["torch.Tensor", Optional["torch.Tensor"]]:
    """Compel embeddings (and the pooled vector) of one prompt with one CLIP text encoder, its LoRAs applied.

    The prompt is parsed first, off the device: parsing is CPU work that grows with the prompt's length."""
    import torch
    from compel import Compel, ReturnedEmbeddingsType, SplitLongTextMode

    from invokeai_provider.models.stable_diffusion.prompt_parsing import parse_prompt

    with context.util.off_device():
        conjunction = parse_prompt(prompt)

    from invokeai_provider.models.patches.apply import prompt_embeddings
    from invokeai_provider.models.stable_diffusion.extensions import clip_skip

    models = model_service(node, context, field)
    base = models.get_config(clip.text_encoder).base
    second = clip.text_encoder.submodel_type is SubModelType.TextEncoder2
    target = "text_encoder_2" if second else "text_encoder"
    embedding_part = ("clip_g" if second else "clip_l") if base is BaseModelType.StableDiffusionXL else None
    with models.load(clip.tokenizer) as tokenizer, models.load(clip.text_encoder) as text_encoder, \
            lora_patched(node, context, field, text_encoder, clip.loras, target, base), \
            clip_skip(text_encoder, clip.skipped_layers), \
            prompt_embeddings(models, prompt, tokenizer, text_encoder, base, embedding_part) \
            as (patched_tokenizer, ti_manager), torch.no_grad():
        embeddings = (ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED if penultimate
                      else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
        compel = Compel(tokenizer=patched_tokenizer, text_encoder=text_encoder, textual_inversion_manager=ti_manager,
                        truncate_long_prompts=False, returned_embeddings_type=embeddings, requires_pooled=pooled,
                        device=models.device, dtype_for_device_getter=lambda _device: text_encoder.dtype,
                        split_long_text_mode=SplitLongTextMode.SENTENCES)
        embeds, _options = compel.build_conditioning_tensor_for_conjunction(conjunction)
        pooled_embeds = compel.conditioning_provider.get_pooled_embeddings([prompt]) if pooled else None
    return embeds.detach().float().cpu(), None if pooled_embeds is None else pooled_embeds.detach().float().cpu()


def _zeros_like_encoder(node: BaseInvocation, context: "InvocationContext", clip: CLIPField, pooled: bool,
                        field: str) -> tuple["torch.Tensor", Optional["torch.Tensor"]]:
    """InvokeAI's SDXL empty-prompt embedding: zeros of the encoder's width (and pooled width)."""
    import torch

    with model_service(node, context, field).load(clip.text_encoder) as text_encoder:
        config = text_encoder.config
        embeds = torch.zeros((1, config.max_position_embeddings, config.hidden_size))
        pooled_embeds = torch.zeros((1, getattr(config, "projection_dim", config.hidden_size))) if pooled else None
    return embeds, pooled_embeds


def _save_conditioning(context: "InvocationContext", kind: str, **tensors: "torch.Tensor") -> str:
    return context.conditioning.save_dict({k: v for k, v in tensors.items() if v is not None}, metadata={"kind": kind})


@invocation("compel", title="Prompt - SD1.5", tags=["prompt", "compel"], category="prompt", version="1.2.1", gpu=True)
class CompelInvocation(BaseInvocation):
    """Turns a prompt (with compel's weighting syntax) into SD1.x/SD2.x conditioning."""

    prompt: str = InputField(default="", description=_PROMPT,
                             ui_component="textarea", limit=PROMPT_LENGTH)
    clip: CLIPField = InputField(title="CLIP", description=CLIP_DESCRIPTION)
    mask: Optional[TensorField] = InputField(default=None,
                                             description="A mask defining the region that this conditioning prompt applies to.")

    def invoke(self, context: "InvocationContext") -> ConditioningOutput:
        embeds, _ = _encode(self, context, self.clip, self.prompt, pooled=False, field="clip", penultimate=False)
        name = _save_conditioning(context, BASIC, embeds=embeds)
        return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name, mask=self.mask))


def _time_ids(values: tuple[float, ...]) -> "torch.Tensor":
    import torch

    return torch.tensor([list(values)], dtype=torch.float32)


@invocation("sdxl_compel_prompt", title="Prompt - SDXL", tags=["sdxl", "compel", "prompt"], category="prompt",
            version="1.2.1", gpu=True)
class SDXLCompelPromptInvocation(BaseInvocation):
    """Turns a prompt (and optional style prompt) into SDXL conditioning with both text encoders."""

    prompt: str = InputField(default="", description=_PROMPT,
                             ui_component="textarea", limit=PROMPT_LENGTH)
    style: str = InputField(default="", description=_PROMPT,
                            ui_component="textarea", limit=PROMPT_LENGTH)
    original_width: int = InputField(default=1024, description="")
    original_height: int = InputField(default=1024, description="")
    crop_top: int = InputField(default=0, description="")
    crop_left: int = InputField(default=0, description="")
    target_width: int = InputField(default=1024, description="")
    target_height: int = InputField(default=1024, description="")
    clip: CLIPField = InputField(description=CLIP_DESCRIPTION,
                                 input=Input.Connection, title="CLIP 1")
    clip2: CLIPField = InputField(description=CLIP_DESCRIPTION,
                                  input=Input.Connection, title="CLIP 2")
    mask: Optional[TensorField] = InputField(default=None,
                                             description="A mask defining the region that this conditioning prompt applies to.")

    def _clip(self, context: "InvocationContext", clip: CLIPField, prompt: str, pooled: bool,
              field: str) -> tuple["torch.Tensor", Optional["torch.Tensor"]]:
        if prompt == "":
            return _zeros_like_encoder(self, context, clip, pooled, field)
        return _encode(self, context, clip, prompt, pooled=pooled, field=field, penultimate=True)

    def invoke(self, context: "InvocationContext") -> ConditioningOutput:
        import torch

        c1, _ = self._clip(context, self.clip, self.prompt, False, "clip")
        style = self.prompt if self.style.strip() == "" else self.style
        c2, pooled = self._clip(context, self.clip2, style, True, "clip2")
        if c1.shape[1] != c2.shape[1]:  # long prompts give different lengths: pad the shorter with zeros
            length = max(c1.shape[1], c2.shape[1])
            c1, c2 = (torch.nn.functional.pad(c, (0, 0, 0, length - c.shape[1])) for c in (c1, c2))
        time_ids = _time_ids((self.original_height, self.original_width, self.crop_top, self.crop_left,
                              self.target_height, self.target_width))
        name = _save_conditioning(context, SDXL, embeds=torch.cat([c1, c2], dim=-1), pooled_embeds=pooled,
                                  add_time_ids=time_ids)
        return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name, mask=self.mask))


@invocation("sdxl_refiner_compel_prompt", title="Prompt - SDXL Refiner", tags=["sdxl", "compel", "prompt"],
            category="prompt", version="1.1.2", gpu=True)
class SDXLRefinerCompelPromptInvocation(BaseInvocation):
    """Turns a style prompt into SDXL-refiner conditioning (second text encoder, aesthetic score)."""

    style: str = InputField(default="", description=_PROMPT,
                            ui_component="textarea", limit=PROMPT_LENGTH)
    original_width: int = InputField(default=1024, description="")
    original_height: int = InputField(default=1024, description="")
    crop_top: int = InputField(default=0, description="")
    crop_left: int = InputField(default=0, description="")
    aesthetic_score: float = InputField(default=6.0, description="The aesthetic score to apply to the conditioning tensor")
    clip2: CLIPField = InputField(description=CLIP_DESCRIPTION,
                                  input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ConditioningOutput:
        c2, pooled = _encode(self, context, self.clip2, self.style, pooled=True, field="clip2", penultimate=True)
        time_ids = _time_ids((self.original_height, self.original_width, self.crop_top, self.crop_left,
                              self.aesthetic_score))
        name = _save_conditioning(context, SDXL, embeds=c2, pooled_embeds=pooled, add_time_ids=time_ids)
        return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name))

"""``ip_adapter``: an image prompt for SD1.x/SDXL through an IP-Adapter, passed to ``denoise_latents`` (type string,
title, version 1.5.1, fields, validators and ``ip_adapter_output`` as InvokeAI's ip_adapter.py).

As in InvokeAI, the CLIP vision encoder is chosen here: the one an InvokeAI-format adapter names in its folder, else
InvokeAI's starter for ``clip_vision_model`` (`invokeai_provider.models.image_encoders.clip_vision`), and ``method``
becomes the UNet blocks the adapter acts in. Nothing is loaded; the attention is
`invokeai_provider.models.stable_diffusion.cross_attention`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional, Union

from invokeai_provider.core.fields import ImageField, IPAdapterField, ModelIdentifierField, TensorField
from invokeai_provider.core.invocation import BaseInvocation, InputField, invocation
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.controlnet import WeightedStepRange
from invokeai_provider.operators.core.ip_adapter import IPAdapterOutput
from invokeai_provider.operators.core.models import check_model
from invokeai_provider.operators.sd.common import GenerationError, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

# InvokeAI's UNet blocks for each method and base ("block" matches every attention layer)
_STYLE_STRONG_SDXL = [f"up_blocks.{b}.attentions.{a}" for a in (1, 2, 0) for b in range(3)] + [
    f"down_blocks.{b}.attentions.{a}" for b in range(2) for a in range(3)] + [
    "down_blocks.2.attentions.0", "down_blocks.2.attentions.2"]
TARGET_BLOCKS: dict[str, dict[str, list[str]]] = {
    "style": {"sd-1": ["up_blocks.1"], "sdxl": ["up_blocks.0.attentions.1"]},
    "composition": {"sd-1": ["down_blocks.2", "mid_block"], "sdxl": ["down_blocks.2.attentions.1"]},
    "style_precise": {"sd-1": ["up_blocks.1", "down_blocks.2", "mid_block"],
                      "sdxl": ["up_blocks.0.attentions.1", "down_blocks.2.attentions.1"]},
    "style_strong": {"sd-1": ["up_blocks.0", "up_blocks.1", "up_blocks.2", "down_blocks.0", "down_blocks.1"],
                     "sdxl": _STYLE_STRONG_SDXL},
}


def target_blocks(method: str, base: str) -> Optional[list[str]]:
    """The blocks ``method`` acts in for ``base``; None where InvokeAI has no such blocks for the base."""
    if method == "full":
        return ["block"]
    return TARGET_BLOCKS[method].get(base)


@invocation("ip_adapter", title="IP-Adapter - SD1.5, SDXL", tags=["ip_adapter", "control"], category="conditioning",
            version="1.5.1")
class IPAdapterInvocation(BaseInvocation, WeightedStepRange):
    """Collects IP-Adapter info to pass to other nodes."""

    image: Union[ImageField, list[ImageField]] = InputField(description="The IP-Adapter image prompt(s).",
                                                            ui_order=1)
    ip_adapter_model: ModelIdentifierField = InputField(
        description="The IP-Adapter model.", title="IP-Adapter Model", ui_order=-1,
        ui_model_base=[BaseModelType.StableDiffusion1, BaseModelType.StableDiffusionXL],
        ui_model_type=ModelType.IPAdapter)
    clip_vision_model: Literal["ViT-H", "ViT-G", "ViT-L"] = InputField(
        description="CLIP Vision model to use. Overrides model settings. Mandatory for checkpoint models.",
        default="ViT-H", ui_order=2)
    weight: Union[float, list[float]] = InputField(default=1, description="The weight given to the IP-Adapter",
                                                   title="Weight")
    method: Literal["full", "style", "composition", "style_strong", "style_precise"] = InputField(
        default="full", description="The method to apply the IP-Adapter")
    begin_step_percent: float = InputField(default=0, ge=0, le=1, description="When the IP-Adapter is first "
                                           "applied (% of total steps)")
    end_step_percent: float = InputField(default=1, ge=0, le=1, description="When the IP-Adapter is last applied "
                                         "(% of total steps)")
    mask: Optional[TensorField] = InputField(default=None, description="A mask defining the region that this "
                                             "IP-Adapter applies to.")

    def invoke(self, context: "InvocationContext") -> IPAdapterOutput:
        from invokeai_provider.models.image_encoders.clip_vision import (
            ClipVisionError,
            find_clip_vision,
            find_named_clip_vision,
        )

        bases = (BaseModelType.StableDiffusion1, BaseModelType.StableDiffusion2, BaseModelType.StableDiffusionXL)
        check_model(self, "ip_adapter_model", self.ip_adapter_model, context, ModelType.IPAdapter, bases)
        models = model_service(self, context, "ip_adapter_model")
        config = models.get_config(self.ip_adapter_model)
        blocks = target_blocks(self.method, config.base.value)
        if blocks is None:
            raise field_error(GenerationError, self, "method", f"{self.method!r} is defined for sd-1 and sdxl "
                              f"IP-Adapters, not {config.base.value}; use 'full'")
        try:
            if config.image_encoder_model_id:  # InvokeAI's folder names its encoder, overriding clip_vision_model
                encoder = find_named_clip_vision(models.registry.all(), config.image_encoder_model_id)
            else:
                encoder = find_clip_vision(models.registry.all(), self.clip_vision_model)
        except ClipVisionError as exc:
            raise field_error(GenerationError, self, "clip_vision_model", str(exc)) from None
        return IPAdapterOutput(ip_adapter=IPAdapterField(
            image=self.image, ip_adapter_model=self.ip_adapter_model,
            image_encoder_model=ModelIdentifierField.model_validate(encoder.identifier()), weight=self.weight,
            target_blocks=blocks, method=self.method, begin_step_percent=self.begin_step_percent,
            end_step_percent=self.end_step_percent, mask=self.mask))

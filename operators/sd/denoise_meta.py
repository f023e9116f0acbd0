"""``denoise_latents_meta``: ``denoise_latents`` that also outputs the generation's parameters as metadata, which a
decode node writes into the PNG so that InvokeAI can recall them (type string, title, version 1.2.0 and the keys as
in InvokeAI's metadata_linked.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invokeai_provider.core.invocation import WithMetadata, invocation
from invokeai_provider.operators.core.metadata import LatentsMetaOutput, LoRAMetadataField, metadata_field
from invokeai_provider.operators.sd.denoise import DenoiseLatentsInvocation

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext


def _dumped(value: Any) -> list[dict[str, Any]]:
    """A field or a list of them as InvokeAI records them: each dumped without its None values."""
    return [item.model_dump(mode="json", exclude_none=True) for item in (value if isinstance(value, list) else [value])]


@invocation("denoise_latents_meta", title="Denoise - SD1.5, SDXL + Metadata",
            tags=["latents", "denoise", "txt2img", "t2i", "t2l", "img2img", "i2i", "l2l"], category="metadata",
            version="1.2.0", gpu=True)
class DenoiseLatentsMetaInvocation(DenoiseLatentsInvocation, WithMetadata):
    """Denoises latents with a UNet, and outputs the generation's parameters as metadata."""

    def generation_metadata(self, width: int, height: int) -> dict[str, Any]:
        """The incoming metadata with this node's parameters added (InvokeAI's keys)."""
        data: dict[str, Any] = {} if self.metadata is None else dict(self.metadata.root)
        data.update(width=width, height=height, steps=self.steps, cfg_scale=self.cfg_scale,
                    cfg_rescale_multiplier=self.cfg_rescale_multiplier, denoising_start=self.denoising_start,
                    denoising_end=self.denoising_end, scheduler=self.scheduler, model=self.unet.unet,
                    hidiffusion=self.hidiffusion, hidiffusion_raunet=self.hidiffusion_raunet,
                    hidiffusion_window_attn=self.hidiffusion_window_attn,
                    hidiffusion_t1_ratio=self.hidiffusion_t1_ratio, hidiffusion_t2_ratio=self.hidiffusion_t2_ratio)
        for key, value in (("controlnets", self.control), ("ipAdapters", self.ip_adapter),
                           ("t2iAdapters", self.t2i_adapter)):
            if value:
                data[key] = _dumped(value)
        if self.unet.loras:
            data["loras"] = [LoRAMetadataField(model=lora.lora, weight=lora.weight).model_dump(exclude_none=True)
                             for lora in self.unet.loras]
        if self.noise is not None:
            data["seed"] = self.noise.seed
        return data

    def invoke(self, context: "InvocationContext") -> LatentsMetaOutput:
        out = super().invoke(context)
        return LatentsMetaOutput(latents=out.latents, width=out.width, height=out.height,
                                 metadata=metadata_field(self.generation_metadata(out.width, out.height)))

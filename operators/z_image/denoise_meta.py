"""``z_image_denoise_meta``: ``z_image_denoise`` that also outputs the generation's parameters as metadata, which a
decode node writes into the PNG so that InvokeAI can recall them (type string, title, version 1.1.0 and the keys as
in InvokeAI's metadata_linked.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invokeai_provider.core.invocation import WithMetadata, invocation
from invokeai_provider.operators.core.metadata import LatentsMetaOutput, LoRAMetadataField, metadata_field
from invokeai_provider.operators.z_image.denoise import ZImageDenoiseInvocation

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext


@invocation("z_image_denoise_meta", title="Denoise - Z-Image + Metadata",
            tags=["z-image", "latents", "denoise", "txt2img", "t2i", "t2l", "img2img", "i2i", "l2l"],
            category="metadata", version="1.1.0", gpu=True)
class ZImageDenoiseMetaInvocation(ZImageDenoiseInvocation, WithMetadata):
    """Run denoising process with a Z-Image transformer model + metadata."""

    def generation_metadata(self, width: int, height: int) -> dict[str, Any]:
        """The incoming metadata with this node's parameters added (InvokeAI's keys; the seed is the noise's when
        that is what the image came from)."""
        data: dict[str, Any] = {} if self.metadata is None else dict(self.metadata.root)
        noise_seed = self.noise.seed if self.noise is not None else None
        data.update(width=width, height=height, steps=self.steps, guidance=self.guidance_scale,
                    denoising_start=self.denoising_start, denoising_end=self.denoising_end, scheduler=self.scheduler,
                    model=self.transformer.transformer,
                    seed=noise_seed if noise_seed is not None and (self.latents is None or self.add_noise)
                    else self.seed)
        if self.transformer.loras:
            data["loras"] = [LoRAMetadataField(model=lora.lora, weight=lora.weight).model_dump(exclude_none=True)
                             for lora in self.transformer.loras]
        return data

    def invoke(self, context: "InvocationContext") -> LatentsMetaOutput:
        out = super().invoke(context)
        return LatentsMetaOutput(latents=out.latents, width=out.width, height=out.height,
                                 metadata=metadata_field(self.generation_metadata(out.width, out.height)))

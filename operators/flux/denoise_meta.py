"""``flux_denoise_meta``: ``flux_denoise`` that also outputs the generation's parameters as metadata, which a
decode node writes into the PNG so that InvokeAI can recall them (type string, title, version 1.0.1 and the keys as
in InvokeAI's metadata_linked.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invokeai_provider.core.invocation import WithMetadata, invocation
from invokeai_provider.operators.core.metadata import LatentsMetaOutput, LoRAMetadataField, metadata_field
from invokeai_provider.operators.flux.denoise import FluxDenoiseInvocation

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext


@invocation("flux_denoise_meta", title="FLUX Denoise + Metadata",
            tags=["flux", "latents", "denoise", "txt2img", "t2i", "t2l", "img2img", "i2i", "l2l"], category="metadata",
            version="1.0.1", gpu=True)
class FluxDenoiseLatentsMetaInvocation(FluxDenoiseInvocation, WithMetadata):
    """Run denoising process with a FLUX transformer model + metadata."""

    def generation_metadata(self, width: int, height: int) -> dict[str, Any]:
        """The incoming metadata with this node's parameters added (InvokeAI's keys; the seed is the noise's when
        that is what the image came from)."""
        data: dict[str, Any] = {} if self.metadata is None else dict(self.metadata.root)
        noise_seed = self.noise.seed if self.noise is not None else None
        data.update(width=width, height=height, steps=self.num_steps, guidance=self.guidance,
                    denoising_start=self.denoising_start, denoising_end=self.denoising_end,
                    model=self.transformer.transformer,
                    seed=noise_seed if noise_seed is not None and (self.latents is None or self.add_noise)
                    else self.seed,
                    cfg_scale=self.cfg_scale, cfg_scale_start_step=self.cfg_scale_start_step,
                    cfg_scale_end_step=self.cfg_scale_end_step)
        if self.transformer.loras:
            data["loras"] = [LoRAMetadataField(model=lora.lora, weight=lora.weight).model_dump(exclude_none=True)
                             for lora in self.transformer.loras]
        return data

    def invoke(self, context: "InvocationContext") -> LatentsMetaOutput:
        out = super().invoke(context)
        return LatentsMetaOutput(latents=out.latents, width=out.width, height=out.height,
                                 metadata=metadata_field(self.generation_metadata(out.width, out.height)))

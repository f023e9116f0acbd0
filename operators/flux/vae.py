"""FLUX.1's VAE nodes: latents to image and image to latents. Type strings, titles, versions, fields and outputs
follow InvokeAI's flux_vae_decode.py and flux_vae_encode.py; the scaling and shift are in
`invokeai_provider.models.flux.vae`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField, LatentsField, VAEField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    Input,
    InputField,
    WithBoard,
    WithMetadata,
    invocation,
)
from invokeai_provider.operators.core.primitives import ImageOutput, LatentsOutput
from invokeai_provider.operators.image.io import save_image
from invokeai_provider.operators.sd.common import LATENTS_DESCRIPTION, model_service
from invokeai_provider.operators.sd.model_fields import VAE_DESCRIPTION
from invokeai_provider.operators.sd.vae import image_to_tensor

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

@invocation("flux_vae_decode", title="Latents to Image - FLUX", tags=["latents", "image", "vae", "l2i", "flux"], category="latents",
            version="1.0.2", gpu=True)
class FluxVaeDecodeInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Generates an image from latents."""

    latents: LatentsField = InputField(description=LATENTS_DESCRIPTION, input=Input.Connection)
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.flux import vae as flux_vae

        latents = context.tensors.load(self.latents.latents_name)
        context.util.signal_progress("Running VAE")
        with model_service(self, context, "vae").load(self.vae.vae) as model:
            image = flux_vae.decode(model, latents)
        # as InvokeAI converts it: clamped, scaled to 0..255 and truncated
        pixels = (127.5 * (image[0].clamp(-1, 1) + 1.0)).byte().permute(1, 2, 0).cpu().numpy()
        return save_image(self, context, pixels)


@invocation("flux_vae_encode", title="Image to Latents - FLUX", tags=["latents", "image", "vae", "i2l", "flux"], category="latents",
            version="1.0.1", gpu=True)
class FluxVaeEncodeInvocation(BaseInvocation):
    """Encodes an image into latents."""

    image: ImageField = InputField(description="The image to encode.")
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.flux import vae as flux_vae

        tensor = image_to_tensor(context.images.get_pil(self.image.image_name, mode="RGB"))
        context.util.signal_progress("Running VAE")
        with model_service(self, context, "vae").load(self.vae.vae) as model:
            latents = flux_vae.encode_seeded(model, tensor)
        latents = latents.cpu()
        return LatentsOutput.build(latents_name=context.tensors.save(latents), latents=latents, seed=None)

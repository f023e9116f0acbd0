"""Z-Image's VAE nodes (FLUX.1's VAE architecture): ``z_image_l2i`` latents to image and ``z_image_i2l`` image to
latents. Type strings, titles, versions (1.1.0), fields and outputs follow InvokeAI's z_image_latents_to_image.py and
z_image_image_to_latents.py; the scaling and shift are FLUX's (`invokeai_provider.models.flux.vae`), read from the
VAE's config. An image is encoded to a sample drawn with a generator seeded 0, as InvokeAI encodes with FLUX's
autoencoder (its diffusers path draws unseeded), so the same image always gives the same latents."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField, LatentsField, VAEField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    Classification,
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


@invocation("z_image_l2i", title="Latents to Image - Z-Image", tags=["latents", "image", "vae", "l2i", "z-image"],
            category="latents", version="1.1.0", classification=Classification.Prototype, gpu=True)
class ZImageLatentsToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Generates an image from latents using Z-Image VAE (supports both Diffusers and FLUX VAE)."""

    latents: LatentsField = InputField(description=LATENTS_DESCRIPTION, input=Input.Connection)
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.flux import vae as flux_vae

        latents = context.tensors.load(self.latents.latents_name)
        with model_service(self, context, "vae").load(self.vae.vae) as model:
            context.util.signal_progress("Running VAE")
            image = flux_vae.decode(model, latents)
        # as InvokeAI converts it: clamped, scaled to 0..255 and truncated
        pixels = (127.5 * (image[0].clamp(-1, 1) + 1.0)).byte().permute(1, 2, 0).cpu().numpy()
        return save_image(self, context, pixels)


@invocation("z_image_i2l", title="Image to Latents - Z-Image", tags=["image", "latents", "vae", "i2l", "z-image"],
            category="latents", version="1.1.0", classification=Classification.Prototype, gpu=True)
class ZImageImageToLatentsInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Generates latents from an image using Z-Image VAE (supports both Diffusers and FLUX VAE)."""

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

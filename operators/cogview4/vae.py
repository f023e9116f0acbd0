"""CogView4's VAE nodes: ``cogview4_l2i`` (latents to image) and ``cogview4_i2l`` (image to latents). Type strings,
titles, versions, fields and outputs follow InvokeAI's cogview4_latents_to_image.py and
cogview4_image_to_latents.py; the scaling is in `invokeai_provider.models.cogview4.vae`. The decode is seamless
along the VAE field's axes, as InvokeAI's."""

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
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.primitives import ImageOutput, LatentsOutput
from invokeai_provider.operators.image.io import save_image
from invokeai_provider.operators.sd.common import LATENTS_DESCRIPTION, GenerationError, model_service
from invokeai_provider.operators.sd.model_fields import VAE_DESCRIPTION
from invokeai_provider.operators.sd.vae import image_to_tensor

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

LATENT_CHANNELS = 16  # CogView4's VAE


@invocation("cogview4_l2i", title="Latents to Image - CogView4", tags=["latents", "image", "vae", "l2i", "cogview4"],
            category="latents", version="1.0.0", classification=Classification.Prototype, gpu=True)
class CogView4LatentsToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Generates an image from latents."""

    latents: LatentsField = InputField(description=LATENTS_DESCRIPTION, input=Input.Connection)
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.cogview4 import vae as cogview4_vae
        from invokeai_provider.models.stable_diffusion.extensions import seamless

        latents = context.tensors.load(self.latents.latents_name)
        if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
            raise field_error(GenerationError, self, "latents", f"shape {tuple(latents.shape)}; expected CogView4 "
                              f"latents (batch, {LATENT_CHANNELS}, height/8, width/8)")
        context.util.signal_progress("Running VAE")
        with model_service(self, context, "vae").load(self.vae.vae) as model, seamless(model, self.vae.seamless_axes):
            image = cogview4_vae.decode(model, latents)
        return save_image(self, context, cogview4_vae.to_pixels(image))


@invocation("cogview4_i2l", title="Image to Latents - CogView4", tags=["image", "latents", "vae", "i2l", "cogview4"],
            category="latents", version="1.0.0", classification=Classification.Prototype, gpu=True)
class CogView4ImageToLatentsInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Generates latents from an image."""

    image: ImageField = InputField(description="The image to encode.")
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.cogview4 import vae as cogview4_vae

        # as InvokeAI: RGB, resized down to a multiple of 8 pixels, in [-1, 1]
        tensor = image_to_tensor(context.images.get_pil(self.image.image_name, mode="RGB"))
        context.util.signal_progress("Running VAE")
        with model_service(self, context, "vae").load(self.vae.vae) as model:
            latents = cogview4_vae.encode(model, tensor).cpu()
        return LatentsOutput.build(latents_name=context.tensors.save(latents), latents=latents, seed=None)

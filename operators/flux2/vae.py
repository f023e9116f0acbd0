"""FLUX.2's VAE nodes: latents to image (``flux2_vae_decode``) and image to latents (``flux2_vae_encode``), with the
32-channel ``AutoencoderKLFlux2``. Type strings, titles, versions, fields and outputs follow InvokeAI's
flux2_vae_decode.py and flux2_vae_encode.py; the conversions are `invokeai_provider.models.flux2.vae`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def check_flux2_vae(node: BaseInvocation, field: str, vae: Any) -> None:
    """A GenerationError naming the field unless ``vae`` is FLUX.2's 32-channel VAE."""
    channels = getattr(getattr(vae, "config", None), "latent_channels", None)
    if channels != 32 or not hasattr(vae, "bn"):
        raise field_error(GenerationError, node, field, f"expected FLUX.2's 32-channel VAE (AutoencoderKLFlux2), got "
                          f"{type(vae).__name__} with {channels} latent channels")


@invocation("flux2_vae_decode", title="Latents to Image - FLUX2", tags=["latents", "image", "vae", "l2i", "flux2", "klein"],
            category="latents", version="1.0.0", classification=Classification.Prototype, gpu=True)
class Flux2VaeDecodeInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Generates an image from latents using FLUX.2 Klein's 32-channel VAE."""

    latents: LatentsField = InputField(description=LATENTS_DESCRIPTION, input=Input.Connection)
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.flux2 import vae as flux2_vae

        latents = context.tensors.load(self.latents.latents_name)
        if latents.ndim != 4 or latents.shape[1] != 32:
            raise field_error(GenerationError, self, "latents", f"latents of shape {tuple(latents.shape)}; expected "
                              "FLUX.2's (1, 32, height/8, width/8)")
        context.util.signal_progress("Running VAE")
        with model_service(self, context, "vae").load(self.vae.vae) as model:
            check_flux2_vae(self, "vae", model)
            image = flux2_vae.decode(model, latents)
        return save_image(self, context, flux2_vae.to_pixels(image))


@invocation("flux2_vae_encode", title="Image to Latents - FLUX2",
            tags=["latents", "image", "vae", "i2l", "flux2", "klein"], category="latents", version="1.0.0",
            classification=Classification.Prototype, gpu=True)
class Flux2VaeEncodeInvocation(BaseInvocation):
    """Encodes an image into latents using FLUX.2 Klein's 32-channel VAE."""

    image: ImageField = InputField(description="The image to encode.")
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.flux2 import vae as flux2_vae

        tensor = image_to_tensor(context.images.get_pil(self.image.image_name, mode="RGB"))
        context.util.signal_progress("Running VAE Encode")
        with model_service(self, context, "vae").load(self.vae.vae) as model:
            check_flux2_vae(self, "vae", model)
            latents = flux2_vae.encode(model, tensor)
        latents = latents.cpu()
        return LatentsOutput.build(latents_name=context.tensors.save(latents), latents=latents, seed=None)

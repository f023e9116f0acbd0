"""SD3's VAE nodes: ``sd3_l2i`` (latents to image, 1.3.2) and ``sd3_i2l`` (image to latents, 1.0.1), with
InvokeAI's type strings, titles, fields and outputs.

The latents are scaled and shifted by the VAE's own factors, as diffusers' StableDiffusion3Pipeline and Stability's
reference code do (SD3's VAE: scale 1.5305, shift 0.0609). InvokeAI 6.11's SD3 VAE nodes apply the scale only, so
their images sit 0.0609 off in the VAE's latent space; here the pipeline's convention is kept, the one the model
was trained with. Encoding samples the latent distribution with a generator seeded 0 (InvokeAI samples unseeded),
so the same image always gives the same latents, as the FLUX VAE nodes do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField, LatentsField, VAEField
from invokeai_provider.core.invocation import BaseInvocation, Input, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.primitives import ImageOutput, LatentsOutput
from invokeai_provider.operators.image.io import save_image
from invokeai_provider.operators.sd.common import LATENTS_DESCRIPTION, GenerationError, model_service
from invokeai_provider.operators.sd.model_fields import VAE_DESCRIPTION
from invokeai_provider.operators.sd.vae import image_to_tensor

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext


def _check_vae(node: BaseInvocation, vae: object, field: str = "vae") -> None:
    channels = getattr(getattr(vae, "config", None), "latent_channels", None)
    if channels != 16:
        raise field_error(GenerationError, node, field, f"a VAE with {channels} latent channels; SD3's has 16")


@invocation("sd3_l2i", title="Latents to Image - SD3", tags=["latents", "image", "vae", "l2i", "sd3"],
            category="latents", version="1.3.2", gpu=True)
class SD3LatentsToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Generates an image from latents."""

    latents: LatentsField = InputField(description=LATENTS_DESCRIPTION, input=Input.Connection)
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.flux import vae as latent_vae
        from invokeai_provider.models.stable_diffusion.extensions import seamless

        latents = context.tensors.load(self.latents.latents_name)
        if latents.ndim != 4 or latents.shape[1] != 16:
            raise field_error(GenerationError, self, "latents", f"shape {tuple(latents.shape)}; SD3 latents are "
                              "(1, 16, h/8, w/8)")
        context.util.signal_progress("Running VAE")
        with model_service(self, context, "vae").load(self.vae.vae) as vae, seamless(vae, self.vae.seamless_axes):
            _check_vae(self, vae)
            image = latent_vae.decode(vae, latents)
        # as InvokeAI converts it: clamped, scaled to 0..255 and truncated
        pixels = (127.5 * (image[0].clamp(-1, 1) + 1.0)).byte().permute(1, 2, 0).cpu().numpy()
        return save_image(self, context, pixels)


@invocation("sd3_i2l", title="Image to Latents - SD3", tags=["image", "latents", "vae", "i2l", "sd3"],
            category="latents", version="1.0.1", gpu=True)
class SD3ImageToLatentsInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Generates latents from an image."""

    image: ImageField = InputField(description="The image to encode")
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.flux import vae as latent_vae

        tensor = image_to_tensor(context.images.get_pil(self.image.image_name, mode="RGB"))
        context.util.signal_progress("Running VAE")
        with model_service(self, context, "vae").load(self.vae.vae) as vae:
            _check_vae(self, vae)
            latents = latent_vae.encode_seeded(vae, tensor)
        latents = latents.cpu()
        return LatentsOutput.build(latents_name=context.tensors.save(latents), latents=latents, seed=None)

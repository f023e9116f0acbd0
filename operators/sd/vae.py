"""VAE nodes: latents to image (decode) and image to latents (encode), with the image/tensor helpers the mask
nodes share.

Type strings, fields, versions and outputs follow InvokeAI's latents_to_image.py and image_to_latents.py. The
VAE comes from the run's model service; torch, numpy and PIL are imported inside the functions.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Literal

from invokeai_provider.core.fields import ImageField, LatentsField, VAEField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    Input,
    InputField,
    WithBoard,
    WithMetadata,
    invocation,
)
from invokeai_provider.core.taxonomy import BaseModelType
from invokeai_provider.operators.core.primitives import ImageOutput, LatentsOutput
from invokeai_provider.operators.image.io import save_image
from invokeai_provider.operators.sd.common import (
    FP32_DESCRIPTION,
    LATENTS_DESCRIPTION,
    TILED_DESCRIPTION,
    model_service,
)
from invokeai_provider.operators.sd.model_fields import VAE_DESCRIPTION

if TYPE_CHECKING:
    import torch

    from invokeai_provider.core.context import InvocationContext

COMPENSATION_OPTIONS = Literal["None", "SDXL"]
# (scale, bias) applied to SDXL images before encoding: InvokeAI's experimentally found colour-drift fix.
COLOR_COMPENSATION = {"None": (1.0, 0.0), "SDXL": (1.015, -0.002)}
_TILE_SIZE = ("The tile size for VAE tiling in pixels (image space). If set to 0, the default tile size for the model "
              "will be used. Larger tile sizes generally produce better results at the cost of higher memory usage.")


@contextmanager
def open_vae(node: BaseInvocation, context: "InvocationContext", vae: VAEField, fp32: bool, tiled: bool,
             tile_size: int) -> Iterator[Any]:
    """The node's VAE for the block: loaded, seamless along its axes, in float32 when asked for (or on the CPU),
    tiled when asked for; its dtype and tiling are put back afterwards."""
    import torch

    from invokeai_provider.models.stable_diffusion.extensions import seamless

    with model_service(node, context, "vae").load(vae.vae) as model, seamless(model, vae.seamless_axes):
        original = model.dtype
        upcast = (fp32 or model.device.type == "cpu") and original != torch.float32
        if upcast:
            model.to(dtype=torch.float32)
        if tiled:
            model.enable_tiling()
            if tile_size > 0:
                model.tile_sample_min_size = tile_size
                model.tile_latent_min_size = tile_size // 8
        try:
            yield model
        finally:
            model.disable_tiling()
            if upcast:
                model.to(dtype=original)


@invocation("l2i", title="Latents to Image - SD1.5, SDXL", tags=["latents", "image", "vae", "l2i"],
            category="latents", version="1.3.2", gpu=True)
class LatentsToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Decodes latents into an image with the VAE and saves it with its metadata."""

    latents: LatentsField = InputField(description=LATENTS_DESCRIPTION, input=Input.Connection)
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)
    tiled: bool = InputField(default=False, description=TILED_DESCRIPTION)
    tile_size: int = InputField(default=0, multiple_of=8,
                                description=_TILE_SIZE)
    fp32: bool = InputField(default=False, description=FP32_DESCRIPTION)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.image_util.arrays import to_uint8
        from invokeai_provider.models.stable_diffusion.vae_decode import DecodeItem, decode_alone

        latents = context.tensors.load(self.latents.latents_name)
        context.util.signal_progress("Running VAE decoder")
        item = DecodeItem(lambda: open_vae(self, context, self.vae, self.fp32, self.tiled, self.tile_size),
                          {"vae": self.vae.model_dump(mode="json"), "fp32": self.fp32, "tiled": self.tiled,
                           "tile_size": self.tile_size}, latents)
        device = context.services.get("device")  # where a device is shared, decodes of one run share a VAE pass
        decoded = device.decode(item) if device is not None else decode_alone(item)
        return save_image(self, context, to_uint8(decoded.permute(1, 2, 0).numpy(), scale=255))


def image_to_tensor(image: Any, normalize: bool = True, multiple_of: int = 8) -> "torch.Tensor":
    """A PIL image resized down to a multiple of ``multiple_of`` (1: as it is) as a [1, C, H, W] float tensor (in
    [-1, 1] when normalised)."""
    import numpy as np
    import torch

    width, height = image.width - image.width % multiple_of, image.height - image.height % multiple_of
    if (width, height) != image.size:
        image = image.resize((width, height), resample=3)
    array = np.asarray(image).astype(np.float32) / 255.0
    tensor = torch.from_numpy(array)
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    tensor = tensor.unsqueeze(0)
    return tensor * 2.0 - 1.0 if normalize else tensor


def vae_encode(vae: Any, image: "torch.Tensor") -> "torch.Tensor":
    """Scaled latents of an image; the sample is seeded, so the same image always gives the same latents."""
    import torch

    with torch.no_grad():
        distribution = vae.encode(image.to(device=vae.device, dtype=vae.dtype)).latent_dist
        generator = torch.Generator(device="cpu").manual_seed(0)
        noise = torch.randn(distribution.mean.shape, generator=generator, dtype=torch.float32)
        sample = distribution.mean + distribution.std * noise.to(distribution.mean.device, distribution.mean.dtype)
    return (vae.config.scaling_factor * sample).float().cpu()


@invocation("i2l", title="Image to Latents - SD1.5, SDXL", tags=["latents", "image", "vae", "i2l"],
            category="latents", version="1.2.0", gpu=True)
class ImageToLatentsInvocation(BaseInvocation):
    """Encodes an image into latents with the VAE."""

    image: ImageField = InputField(description="The image to encode")
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)
    tiled: bool = InputField(default=False, description=TILED_DESCRIPTION)
    tile_size: int = InputField(default=0, multiple_of=8,
                                description=_TILE_SIZE)
    fp32: bool = InputField(default=False, description=FP32_DESCRIPTION)
    color_compensation: COMPENSATION_OPTIONS = InputField(default="None",
                                                          description="Apply VAE scaling compensation when encoding images (reduces color drift).")

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        image = context.images.get_pil(self.image.image_name, mode="RGB")
        tensor = image_to_tensor(image)
        models = model_service(self, context, "vae")
        if self.color_compensation != "None" and \
                models.get_config(self.vae.vae).base is BaseModelType.StableDiffusionXL:
            scale, bias = COLOR_COMPENSATION[self.color_compensation]
            tensor = tensor * scale + bias
        with open_vae(self, context, self.vae, self.fp32, self.tiled, self.tile_size) as vae:
            latents = vae_encode(vae, tensor)
        name = context.tensors.save(latents)
        return LatentsOutput.build(name, latents)

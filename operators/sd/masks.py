"""Denoise-mask nodes: a mask image (and, for inpainting models, the masked image's latents) made into the
denoise mask that denoise_latents takes, hard-edged or with a gradient edge.

Type strings, fields, versions and outputs follow InvokeAI's create_denoise_mask.py and
create_gradient_mask.py. They encode with the VAE helpers of :mod:`invokeai_provider.operators.sd.vae`;
torch, numpy and PIL are imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

from invokeai_provider.core.fields import DenoiseMaskField, ImageField, UNetField, VAEField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import ModelVariantType
from invokeai_provider.operators.core.primitives import DenoiseMaskOutput
from invokeai_provider.operators.image.io import save_image
from invokeai_provider.operators.sd.common import FP32_DESCRIPTION, TILED_DESCRIPTION, model_service
from invokeai_provider.operators.sd.model_fields import VAE_DESCRIPTION
from invokeai_provider.operators.sd.vae import image_to_tensor, open_vae, vae_encode

if TYPE_CHECKING:
    import numpy as np

    from invokeai_provider.core.context import InvocationContext


@invocation("create_denoise_mask", title="Create Denoise Mask", tags=["mask", "denoise"], category="mask",
            version="1.0.2", gpu=True)
class CreateDenoiseMaskInvocation(BaseInvocation):
    """Turns a mask image (white: keep, black: repaint, as InvokeAI reads it) into a denoise mask."""

    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection, ui_order=0)
    image: Optional[ImageField] = InputField(default=None, description="Image which will be masked", ui_order=1)
    mask: ImageField = InputField(description="The mask to use when pasting", ui_order=2)
    tiled: bool = InputField(default=False, description=TILED_DESCRIPTION, ui_order=3)
    fp32: bool = InputField(default=False, description=FP32_DESCRIPTION, ui_order=4)

    def invoke(self, context: "InvocationContext") -> DenoiseMaskOutput:
        import torch

        mask = image_to_tensor(context.images.get_pil(self.mask.image_name, mode="L"), normalize=False)
        masked_latents_name = None
        if self.image is not None:
            image = image_to_tensor(context.images.get_pil(self.image.image_name, mode="RGB"))
            image_mask = torch.nn.functional.interpolate(mask, size=image.shape[-2:], mode="bilinear",
                                                         align_corners=False)
            masked = image * torch.where(image_mask < 0.5, 0.0, 1.0)
            with open_vae(self, context, self.vae, self.fp32, self.tiled, 0) as vae:
                masked_latents_name = context.tensors.save(vae_encode(vae, masked))
        return DenoiseMaskOutput.build(mask_name=context.tensors.save(mask), masked_latents_name=masked_latents_name,
                                       gradient=False)


@invocation_output("gradient_mask_output")
class GradientMaskOutput(BaseInvocationOutput):
    """A denoise mask whose edge fades, and the area it finally covers."""

    denoise_mask: DenoiseMaskField = OutputField(description="Mask for denoise model run. Values of 0.0 represent "
                                                 "the regions to be fully denoised, and 1.0 represent the regions to be preserved.")
    expanded_mask_area: ImageField = OutputField(description="Image representing the total gradient area of the mask. "
                                                 "For paste-back purposes.")


def _edge_kernel(radius: int, mode: str) -> "np.ndarray":
    """Weights that fall off from the centre to ``radius``: linear (Box Blur) or Gaussian (sigma = radius/2.5)."""
    import numpy as np

    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    distance = np.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2)
    if mode == "Box Blur":
        kernel = 1.0 - distance / radius
    else:
        sigma = radius / 2.5
        gauss = np.exp(-(offsets ** 2) / (2 * sigma * sigma))
        kernel = np.outer(gauss, gauss)
        kernel = kernel / kernel.max()
    kernel[distance > radius] = 0
    return kernel.astype(np.float32)


def _weighted_max_filter(image: "np.ndarray", kernel: "np.ndarray") -> "np.ndarray":
    """max over the kernel window of pixel × weight (a soft dilation)."""
    import numpy as np

    pad_h, pad_w = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(image, ((pad_h, pad_h), (pad_w, pad_w)))
    result = np.zeros_like(image)
    for i, j in zip(*np.nonzero(kernel > 0)):
        np.maximum(result, padded[i:i + image.shape[0], j:j + image.shape[1]] * kernel[i, j], out=result)
    return result


@invocation("create_gradient_mask", title="Create Gradient Mask", tags=["mask", "denoise"], category="mask",
            version="1.3.0", gpu=True)
class CreateGradientMaskInvocation(BaseInvocation):
    """A denoise mask whose edge is expanded into a gradient, so inpainting blends into its surroundings."""

    mask: ImageField = InputField(description="Image which will be masked", ui_order=1)
    edge_radius: int = InputField(default=16, ge=0, description="How far to expand the edges of the mask", ui_order=2)
    coherence_mode: Literal["Gaussian Blur", "Box Blur", "Staged"] = InputField(default="Gaussian Blur", ui_order=3)
    minimum_denoise: float = InputField(default=0.0, ge=0, le=1,
                                        description="Minimum denoise level for the coherence region", ui_order=4)
    image: Optional[ImageField] = InputField(default=None, description="OPTIONAL: Only connect for specialized "
                                             "Inpainting models, masked_latents will be generated from the image with the VAE",
                                             title="[OPTIONAL] Image", ui_order=6)
    unet: Optional[UNetField] = InputField(default=None, description="OPTIONAL: If the Unet is a specialized "
                                           "Inpainting model, masked_latents will be generated from the image with the VAE",
                                           input=Input.Connection, title="[OPTIONAL] UNet", ui_order=5)
    vae: Optional[VAEField] = InputField(default=None, description="OPTIONAL: Only connect for specialized "
                                         "Inpainting models, masked_latents will be generated from the image with the VAE",
                                         input=Input.Connection, title="[OPTIONAL] VAE", ui_order=7)
    tiled: bool = InputField(default=False, description=TILED_DESCRIPTION, ui_order=8)
    fp32: bool = InputField(default=False, description=FP32_DESCRIPTION, ui_order=9)

    def invoke(self, context: "InvocationContext") -> GradientMaskOutput:
        import numpy as np
        import torch
        from PIL import Image

        from invokeai_provider.models.image_util.arrays import to_uint8

        mask_image = context.images.get_pil(self.mask.image_name, mode="L")
        small = mask_image.resize((mask_image.width // 8, mask_image.height // 8), resample=Image.Resampling.BILINEAR)
        original = np.asarray(small, dtype=np.float32)
        radius = self.edge_radius // 8
        if radius > 0:
            dilated = 255 - _weighted_max_filter(255 - original, _edge_kernel(radius, self.coherence_mode))
            threshold = (1 - self.minimum_denoise) * 255
            if self.coherence_mode == "Staged":
                dilated = np.where((dilated < original) & (original > threshold), threshold, original)
            dilated = np.where((dilated > threshold) & (dilated < 255), threshold, dilated)
        else:
            dilated = original.copy()
        dilated = to_uint8(dilated, scale=1, rounding="floor")
        full_size = (small.width * 8, small.height * 8)
        expanded = Image.fromarray(np.where(dilated < 255, 0, 255).astype(np.uint8), mode="L")
        expanded_area = save_image(self, context, expanded.resize(full_size, resample=Image.Resampling.NEAREST),
                                   category="mask").image
        gradient = Image.fromarray(dilated).resize(full_size, resample=Image.Resampling.NEAREST)
        mask_tensor = image_to_tensor(gradient, normalize=False)
        masked_latents_name = None
        if self.unet is not None and self.vae is not None and self.image is not None:
            models = model_service(self, context, "unet")
            if models.get_config(self.unet.unet).variant is ModelVariantType.Inpaint:
                image = image_to_tensor(context.images.get_pil(self.image.image_name, mode="RGB"))
                image_mask = torch.nn.functional.interpolate(mask_tensor, size=image.shape[-2:], mode="bilinear",
                                                             align_corners=False)
                with open_vae(self, context, self.vae, self.fp32, self.tiled, 0) as vae:
                    masked_latents_name = context.tensors.save(
                        vae_encode(vae, image * torch.where(image_mask < 0.5, 0.0, 1.0)))
        return GradientMaskOutput(
            denoise_mask=DenoiseMaskField(mask_name=context.tensors.save(mask_tensor),
                                          masked_latents_name=masked_latents_name, gradient=True),
            expanded_mask_area=expanded_area)

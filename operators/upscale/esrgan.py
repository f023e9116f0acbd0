"""Upscaling without diffusion: ``esrgan``, an ESRGAN / Real-ESRGAN network.

Type string, version, fields, defaults and category follow InvokeAI 6.11 (``upscale.py``). The checkpoint
named by ``model_name`` is read from ``<model root>/core/upscaling/realesrgan/<file>`` (the folder InvokeAI
kept these files in before it fetched them by URL; no download here) into the RRDBNet of
:mod:`invokeai_provider.models.upscalers.rrdb`. torch is imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.image_util.arrays import to_uint8
from invokeai_provider.models.model_manager.core_models import CORE_DIR
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import load_image, save_image

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

ESRGAN_MODELS = Literal[
    "RealESRGAN_x4plus.pth",
    "RealESRGAN_x4plus_anime_6B.pth",
    "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth",
    "RealESRGAN_x2plus.pth",
]
ESRGAN_DIR = f"{CORE_DIR}/upscaling/realesrgan"


@invocation("esrgan", title="Upscale (RealESRGAN)", tags=["esrgan", "upscale"], category="upscale",
            version="1.3.2", gpu=True)
class ESRGANInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The image enlarged 4x (2x with the x2 model) by an ESRGAN network; RGBA out, fully opaque."""

    image: ImageField = InputField(description="The input image")
    model_name: ESRGAN_MODELS = InputField(default="RealESRGAN_x4plus.pth", description="The Real-ESRGAN model to use")
    tile_size: int = InputField(default=400, ge=0,
                                description="Tile size for tiled ESRGAN upscaling (0=tiling disabled)")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        import torch
        from PIL import Image

        from invokeai_provider.models.annotators.checkpoint import use_annotator
        from invokeai_provider.models.upscalers.rrdb import build_esrgan, unwrap_checkpoint, upscale

        # As InvokeAI: any alpha is dropped before upscaling (not upscaled), and the result is opaque RGBA.
        rgb = np.asarray(load_image(self, context, "image", "RGB"), dtype=np.float32) / 255.0
        name = self.model_name
        with use_annotator(self, context, "model_name", name, lambda: build_esrgan(name),
                           what=f"the ESRGAN checkpoint {name}", unwrap=unwrap_checkpoint,
                           folder=ESRGAN_DIR) as net:
            device = next(net.parameters()).device
            batch = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).to(device)
            out = upscale(net, batch, self.tile_size)
        pixels = to_uint8(out[0].permute(1, 2, 0).float().cpu().numpy(), scale=255.0)  # upscale() clamps to 0..1
        return save_image(self, context, Image.fromarray(pixels, "RGB").convert("RGBA"))

"""ESRGAN / Real-ESRGAN upscaling (``esrgan``): a fixed x4 (or x2) super-resolution network, no diffusion.

Type string, version, fields, defaults and category follow InvokeAI 6.11 (``upscale.py``). The checkpoint
named by ``model_name`` is read from ``<model root>/core/upscaling/realesrgan/<file>`` (the folder InvokeAI
kept these files in before it fetched them by URL; no download here) into the RRDBNet of
:mod:`invokeai_provider.models.rrdb_net`. torch is imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from invokeai_provider.fields import ImageField
from invokeai_provider.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.core_models import CORE_DIR
from invokeai_provider.operators.image_util import load_image
from invokeai_provider.operators.primitives import ImageOutput

if TYPE_CHECKING:
    from invokeai_provider.context import InvocationContext

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

        from invokeai_provider.models.annotator_checkpoint import use_annotator
        from invokeai_provider.models.rrdb_net import build_esrgan, unwrap_checkpoint, upscale

        # As InvokeAI: any alpha is dropped before upscaling (not upscaled), and the result is opaque RGBA.
        rgb = np.asarray(load_image(self, context, "image", "RGB"), dtype=np.float32) / 255.0
        name = self.model_name
        with use_annotator(self, context, "model_name", name, lambda: build_esrgan(name),
                           what=f"the ESRGAN checkpoint {name}", unwrap=unwrap_checkpoint,
                           folder=ESRGAN_DIR) as net:
            device = next(net.parameters()).device
            batch = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).to(device)
            out = upscale(net, batch, self.tile_size)
        pixels = (out[0].permute(1, 2, 0).float().cpu().numpy() * 255.0).round().astype(np.uint8)
        return ImageOutput.build(context.images.save(Image.fromarray(pixels, "RGB").convert("RGBA")))

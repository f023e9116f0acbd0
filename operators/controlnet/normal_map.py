"""Surface-normal maps (``normal_map``) from the NormalBae estimator, the input of normal ControlNets.

Type string, version, fields and category follow InvokeAI 6.11 (``normal_bae.py``). The network
(:mod:`invokeai_provider.models.annotators.normal_bae`, an EfficientNet-B5 encoder written here: no ``geffnet`` or
``timm`` needed) loads ``scannet.pt`` from ``<model root>/core/lllyasviel/Annotators``; torch and OpenCV are
imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.image_util.arrays import to_uint8
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import load_rgb, save_image

if TYPE_CHECKING:
    import numpy as np
    import torch

    from invokeai_provider.core.context import InvocationContext

NORMAL_BAE_CHECKPOINT = "scannet.pt"


def normals_to_rgb(normals: "torch.Tensor") -> "np.ndarray":
    """(3, H, W) unit normals in [-1, 1] as an (H, W, 3) uint8 image: x, y, z -> R, G, B by (n + 1) / 2,
    truncated to integers like InvokeAI's ``astype``."""
    scaled = ((normals.float() + 1.0) * 0.5).clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy()
    return to_uint8(scaled, scale=255.0, rounding="floor")


@invocation("normal_map", title="Normal Map", tags=["controlnet", "normal"], category="controlnet",
            version="1.0.0", gpu=True)
class NormalMapInvocation(BaseInvocation, WithMetadata, WithBoard):
    """An RGB map of the surface normal at each pixel (x, y, z as red, green, blue), the size of the image."""

    image: ImageField = InputField(description="The image to process")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import cv2
        import torch

        from invokeai_provider.models.annotators.checkpoint import use_annotator
        from invokeai_provider.models.annotators.normal_bae import NormalBaeNet, network_input, unwrap_checkpoint
        from invokeai_provider.operators.controlnet.mlsd import resize_for_network

        rgb = load_rgb(self, context)
        height, width = rgb.shape[:2]
        resized = resize_for_network(self, rgb, 8, "NormalBae")
        with use_annotator(self, context, "image", NORMAL_BAE_CHECKPOINT, NormalBaeNet, unwrap=unwrap_checkpoint,
                           what=f"the NormalBae (ScanNet) checkpoint {NORMAL_BAE_CHECKPOINT}") as net, \
                torch.no_grad():
            device = next(net.parameters()).device
            prediction = net(network_input(resized).to(device))[-1]
            normals = normals_to_rgb(prediction[0, :3])
        normals = cv2.resize(normals, (width, height), interpolation=cv2.INTER_LINEAR)
        return save_image(self, context, normals)

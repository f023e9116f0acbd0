"""MLSD line-segment detection (``mlsd_detection``), the input of M-LSD ControlNets (straight-line layouts).

Type string, version, fields, defaults and category follow InvokeAI 6.11 (``mlsd.py``). The network
(:mod:`invokeai_provider.models.annotators.mlsd`) loads ``mlsd_large_512_fp32.pth`` from
``<model root>/core/lllyasviel/Annotators`` (or InvokeAI's own download location,
``core/lllyasviel/ControlNet/annotator/ckpts``); torch and OpenCV are imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.model_manager.core_models import CORE_DIR
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import fail, load_rgb, save_image

if TYPE_CHECKING:
    import numpy as np

    from invokeai_provider.core.context import InvocationContext

MLSD_CHECKPOINT = "mlsd_large_512_fp32.pth"
# Where InvokeAI itself fetches the same file from (hub repo lllyasviel/ControlNet), as a second place to look.
MLSD_INVOKEAI_FOLDER = f"{CORE_DIR}/lllyasviel/ControlNet/annotator/ckpts"


def resize_to_multiple(image: "np.ndarray", multiple: int) -> "np.ndarray":
    """InvokeAI's sizing for these networks: the width floored to ``multiple``, the height scaled by the same
    factor and then floored to ``multiple`` (so the aspect ratio is only roughly kept); area resampling."""
    import cv2

    height, width = image.shape[:2]
    new_width = (width // multiple) * multiple
    new_height = int(new_width / width * height)
    new_height -= new_height % multiple
    return cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)


def resize_for_network(node: BaseInvocation, image: "np.ndarray", multiple: int, network: str) -> "np.ndarray":
    """:func:`resize_to_multiple`, or the node's error when the image is too small to give a non-empty
    result (InvokeAI's OpenCV call would fail there with no hint)."""
    height, width = image.shape[:2]
    new_width = width // multiple * multiple
    if new_width == 0 or int(new_width / width * height) < multiple:
        raise fail(node, "image", f"the image is {width}x{height}: {network} needs at least {multiple} px of "
                                  f"width, and a height of at least {multiple} px once the width is floored to a "
                                  f"multiple of {multiple}")
    return resize_to_multiple(image, multiple)


@invocation("mlsd_detection", title="MLSD Detection", tags=["controlnet", "mlsd", "edge"], category="controlnet",
            version="1.0.0", gpu=True)
class MLSDDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A map of the image's straight line segments, white 1 px lines on black, the size of the image."""

    image: ImageField = InputField(description="The image to process")
    score_threshold: float = InputField(default=0.1, ge=0,
                                        description="The threshold used to score points when determining line "
                                                    "segments")
    distance_threshold: float = InputField(default=20.0, ge=0,
                                           description="Threshold for including a line segment - lines shorter "
                                                       "than this distance will be discarded")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import cv2
        import torch

        from invokeai_provider.models.annotators.checkpoint import use_annotator
        from invokeai_provider.models.annotators.mlsd import (
            MobileV2MLSDLarge,
            decode_segments,
            draw_segments,
            network_input,
        )

        rgb = load_rgb(self, context)
        height, width = rgb.shape[:2]
        resized = resize_for_network(self, rgb, 64, "MLSD")
        with use_annotator(self, context, "image", MLSD_CHECKPOINT, MobileV2MLSDLarge,
                           what=f"the M-LSD large checkpoint {MLSD_CHECKPOINT}",
                           also_in=(MLSD_INVOKEAI_FOLDER,)) as net, torch.no_grad():
            device = next(net.parameters()).device
            tp_map = net(network_input(resized).to(device))
            segments = decode_segments(tp_map, self.score_threshold, self.distance_threshold)
        lines = draw_segments(segments, resized.shape[0], resized.shape[1])
        lines = cv2.resize(lines, (width, height), interpolation=cv2.INTER_LINEAR)
        return save_image(self, context, lines)

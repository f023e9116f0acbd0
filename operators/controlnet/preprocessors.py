"""ControlNet preprocessors that need no model: Canny edges, content shuffle, colour map, heuristic resize.

Type strings, versions, fields, defaults and categories follow InvokeAI 6.11 (canny.py, content_shuffle.py,
color_map.py and controlnet.py's ``heuristic_resize``); the pixel work is written here with OpenCV and
numpy, imported inside ``invoke()`` so DAG parsing stays light. The preprocessors that run a detector
model (HED, lineart, depth, pose, ...) live elsewhere; their removed ``*_image_processor`` names resolve
through ``invokeai_provider.core.aliases``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    Classification,
    InputField,
    WithBoard,
    WithMetadata,
    invocation,
)
from invokeai_provider.core.limits import IMAGE_SIDE
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.models.image_util.control_image import heuristic_resize
from invokeai_provider.operators.image.io import fail, load_rgb, save_image

if TYPE_CHECKING:
    import numpy as np

    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "controlnet"  # InvokeAI 6.11; later releases moved these to "controlnet_preprocessors"



# --- Canny ----------------------------------------------------------------------------------------------


@invocation("canny_edge_detection", title="Canny Edge Detection", tags=["controlnet", "canny"],
            category=_CATEGORY, version="1.0.0")
class CannyEdgeDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A white-on-black edge map from OpenCV's Canny detector, the input of canny ControlNets."""

    image: ImageField = InputField(description="The image to process")
    low_threshold: int = InputField(default=100, ge=0, le=255,
                                    description="The low threshold of the Canny pixel gradient (0-255)")
    high_threshold: int = InputField(default=200, ge=0, le=255,
                                     description="The high threshold of the Canny pixel gradient (0-255)")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import cv2
        import numpy as np

        # InvokeAI hands OpenCV a BGR array; keep that order so ties between channels break the same way.
        bgr = np.ascontiguousarray(load_rgb(self, context)[:, :, ::-1])
        edges = cv2.Canny(bgr, self.low_threshold, self.high_threshold)
        return save_image(self, context, np.stack([edges] * 3, axis=2))


# --- content shuffle ------------------------------------------------------------------------------------


def _noise_disk(rng: "np.random.Generator", height: int, width: int, scale: int) -> "np.ndarray":
    """Smooth noise in [0, 1]: a coarse uniform grid (one cell per ``scale`` px) upsampled bicubically."""
    import cv2
    import numpy as np

    coarse = rng.uniform(0.0, 1.0, size=(height // scale + 2, width // scale + 2))
    noise = cv2.resize(coarse, (width + 2 * scale, height + 2 * scale), interpolation=cv2.INTER_CUBIC)
    noise = noise[scale:scale + height, scale:scale + width]
    noise = noise - noise.min()
    peak = noise.max()
    return noise / peak if peak > 0 else np.zeros_like(noise)


def content_shuffle(image: "np.ndarray", scale_factor: int, seed: int) -> "np.ndarray":
    """Each output pixel samples the input at a position given by two smooth noise fields (x and y), so the
    content is scrambled in blobs of about ``scale_factor`` pixels while colours stay the input's."""
    import cv2
    import numpy as np

    height, width = image.shape[:2]
    rng = np.random.default_rng(seed)
    map_x = (_noise_disk(rng, height, width, scale_factor) * float(width - 1)).astype(np.float32)
    map_y = (_noise_disk(rng, height, width, scale_factor) * float(height - 1)).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR)


@invocation("content_shuffle", title="Content Shuffle", tags=["controlnet", "normal"], category=_CATEGORY,
            version="1.0.0")
class ContentShuffleInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Scrambles the image like a 'liquify' filter, for shuffle ControlNets (style without layout).

    InvokeAI draws the noise from numpy's global generator; here the generator is seeded from the image's
    pixels and ``scale_factor``, so a retried task or a recompiled DAG gives the same picture.
    """

    image: ImageField = InputField(description="The image to process")
    scale_factor: int = InputField(default=256, ge=0, description="The scale factor used for the shuffle")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        if self.scale_factor < 1:
            raise fail(self, "scale_factor", f"expected at least 1 (the noise cell size in px), got {self.scale_factor}")
        array = load_rgb(self, context)
        digest = hashlib.sha256(array.tobytes() + f"|{array.shape}|{self.scale_factor}".encode()).digest()
        return save_image(self, context, content_shuffle(array, self.scale_factor, int.from_bytes(digest[:8], "big")))


# --- colour map -----------------------------------------------------------------------------------------


@invocation("color_map", title="Color Map", tags=["controlnet"], category=_CATEGORY, version="1.0.0")
class ColorMapInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A blocky colour layout (one colour per tile), for colour ControlNets / T2I-adapters."""

    image: ImageField = InputField(description="The image to process")
    tile_size: int = InputField(default=64, ge=1, description="Tile size")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import cv2

        array = load_rgb(self, context)
        height, width = array.shape[:2]
        # As InvokeAI: bicubic down to one pixel per tile, nearest back up to full size.
        small = cv2.resize(array, (width // min(self.tile_size, width), height // min(self.tile_size, height)),
                           interpolation=cv2.INTER_CUBIC)
        return save_image(self, context, cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST))


# --- heuristic resize -----------------------------------------------------------------------------------


@invocation("heuristic_resize", title="Heuristic Resize", tags=["image, controlnet"], category="image",
            version="1.1.1", classification=Classification.Prototype)
class HeuristicResizeInvocation(BaseInvocation):
    """Resizes a control image without blurring it: edge maps stay thin and binary, colour maps exact."""

    image: ImageField = InputField(description="The image to resize")
    width: int = InputField(default=512, ge=1, description="The width to resize to (px)", limit=IMAGE_SIDE)
    height: int = InputField(default=512, ge=1, description="The height to resize to (px)", limit=IMAGE_SIDE)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        return save_image(self, context, heuristic_resize(load_rgb(self, context), (self.width, self.height)))

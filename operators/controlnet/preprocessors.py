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


def _thin(binary: "np.ndarray") -> "np.ndarray":
    """Zhang-Suen thinning (what OpenCV-contrib's ``ximgproc.thinning`` does by default) of a 0/255 image.

    opencv-contrib is not a dependency here, so the two sub-iterations are written out with numpy.
    """
    import numpy as np

    img = np.pad((binary > 0).astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p2, p3, p4 = img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:]
            p5, p6, p7 = img[2:, 2:], img[2:, 1:-1], img[2:, :-2]
            p8, p9 = img[1:-1, :-2], img[:-2, :-2]
            ring = (p2, p3, p4, p5, p6, p7, p8, p9, p2)
            neighbours = sum(p.astype(np.int32) for p in ring[:-1])
            transitions = sum(((a == 0) & (b == 1)).astype(np.int32) for a, b in zip(ring[:-1], ring[1:]))
            if step == 0:
                side = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                side = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            centre = img[1:-1, 1:-1]
            remove = (centre == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & side
            if remove.any():
                centre[remove] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1] * np.uint8(255)


def heuristic_resize(image: "np.ndarray", size: tuple[int, int]) -> "np.ndarray":
    """Resizes an RGB array to ``size`` (width, height) with the interpolation its content calls for.

    InvokeAI's fast heuristic: a black-and-white image is treated as an edge map (resized, thinned by
    non-maximum suppression along four directions, Otsu-thresholded and, for one-pixel lines, thinned
    again) so it stays crisp and binary; an image of 3..199 colours is a segmentation map and keeps its
    exact colours (nearest); anything else uses area when shrinking and bicubic when growing.
    """
    import cv2
    import numpy as np

    height, width = image.shape[:2]
    if (width, height) == size:
        return image
    flat = image.reshape(-1, image.shape[-1])
    # InvokeAI samples at most 100k pixels (plus the corners) to count colours; the sample is seeded here.
    count = min(flat.shape[0], 100_000)
    picks = np.random.default_rng(0).choice(flat.shape[0], count, replace=False)
    corners = np.stack([image[0, 0], image[0, width - 1], image[height - 1, 0], image[height - 1, width - 1]])
    sample = np.concatenate([corners, flat[picks]])
    colours = np.unique(sample, axis=0).shape[0]
    is_binary = colours == 2 and sample.min() < 16 and sample.max() > 240
    one_pixel_edge = False
    if is_binary:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        gradient = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        one_pixel_edge = 2 * cv2.countNonZero(gradient) > cv2.countNonZero((grey > 127).astype(np.uint8))

    if 2 < colours < 200:
        interpolation = cv2.INTER_NEAREST
    elif size[0] * size[1] < width * height:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC
    resized = cv2.resize(image, size, interpolation=interpolation)
    if not is_binary:
        return resized

    grey = cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)
    suppressed = np.zeros_like(grey)
    for kernel in _nms_kernels():
        keep = cv2.dilate(grey, kernel) == grey
        suppressed[keep] = grey[keep]
    _, bw = cv2.threshold(suppressed, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if one_pixel_edge:
        bw = _thin(bw)
    return np.stack([bw] * 3, axis=2)


def _nms_kernels() -> list["np.ndarray"]:
    """The four line directions (horizontal, vertical, two diagonals) of the non-maximum suppression."""
    import numpy as np

    return [np.array(k, np.uint8) for k in (
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]],
        [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]],
    )]


@invocation("heuristic_resize", title="Heuristic Resize", tags=["image, controlnet"], category="image",
            version="1.1.1", classification=Classification.Prototype)
class HeuristicResizeInvocation(BaseInvocation):
    """Resizes a control image without blurring it: edge maps stay thin and binary, colour maps exact."""

    image: ImageField = InputField(description="The image to resize")
    width: int = InputField(default=512, ge=1, description="The width to resize to (px)", limit=IMAGE_SIDE)
    height: int = InputField(default=512, ge=1, description="The height to resize to (px)", limit=IMAGE_SIDE)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        return save_image(self, context, heuristic_resize(load_rgb(self, context), (self.width, self.height)))

"""Control images as InvokeAI prepares them for ControlNets (SD's and FLUX's) and T2I-Adapters: resized to the
generation's size by one of its resize modes, with a resize that keeps edge maps thin and binary and colour maps
exact (InvokeAI's heuristic, also the ``heuristic_resize`` node); and the weight a control (or adapter) has at a
step of its step range."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

RESIZE_MODES = ("just_resize", "crop_resize", "fill_resize", "just_resize_simple")


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


def _rgb(image: "np.ndarray") -> "np.ndarray":
    """Three channels: grey repeated, alpha dropped (InvokeAI's channel normalisation before resizing)."""
    import numpy as np

    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return np.concatenate([image] * 3, axis=2)
    return image[:, :, :3]


def prepare_control_image(image: "object", width: int, height: int, resize_mode: str = "just_resize") -> "torch.Tensor":
    """A PIL control image as a ``(1, 3, height, width)`` tensor in [0, 1].

    ``just_resize`` stretches it (heuristically); ``crop_resize`` scales it to cover and crops the middle;
    ``fill_resize`` scales it to fit and pads with the median colour of its border; ``just_resize_simple`` stretches
    it with Lanczos.
    """
    import numpy as np
    import torch
    from PIL import Image

    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode {resize_mode!r}: expected one of {', '.join(RESIZE_MODES)}")
    if resize_mode == "just_resize_simple":
        array = np.asarray(image.convert("RGB").resize((width, height), resample=Image.LANCZOS))  # type: ignore[attr-defined]
    else:
        array = _rgb(np.asarray(image.convert("RGB")))  # type: ignore[attr-defined]
        old_h, old_w = array.shape[:2]
        if resize_mode == "just_resize":
            array = heuristic_resize(array, (width, height))
        elif resize_mode == "fill_resize":
            scale = min(height / old_h, width / old_w)
            resized = heuristic_resize(array, (int(np.round(old_w * scale)), int(np.round(old_h * scale))))
            border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
            canvas = np.tile(np.median(border, axis=0).astype(array.dtype)[None, None], (height, width, 1))
            top, left = max(0, (height - resized.shape[0]) // 2), max(0, (width - resized.shape[1]) // 2)
            canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
            array = canvas
        else:  # crop_resize
            scale = max(height / old_h, width / old_w)
            resized = heuristic_resize(array, (int(np.round(old_w * scale)), int(np.round(old_h * scale))))
            top, left = max(0, (resized.shape[0] - height) // 2), max(0, (resized.shape[1] - width) // 2)
            array = resized[top:top + height, left:left + width]
    tensor = torch.from_numpy(np.array(array, copy=True)).float() / 255.0
    return tensor.permute(2, 0, 1)[None].contiguous()


def step_weight(weight: "float | list[float]", begin_step_percent: float, end_step_percent: float, step: int,
                total: int) -> float:
    """InvokeAI's rule for ControlNets and IP-Adapters: the weight (a list's weight of the step) from
    floor(begin * steps) to ceil(end * steps), inclusive; 0 outside."""
    import math

    if step < math.floor(begin_step_percent * total) or step > math.ceil(end_step_percent * total):
        return 0.0
    return float(weight[step]) if isinstance(weight, list) else float(weight)

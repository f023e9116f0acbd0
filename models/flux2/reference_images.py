"""FLUX.2 Klein's reference images (InvokeAI feeds them through ``flux2_denoise``'s ``kontext_conditioning``): each
image, shrunk to at most 2024² pixels (1024² each when there are several, BFL's caps), encoded by the FLUX.2 VAE (the
posterior's mode), padded to whole 2x2 patches, packed and batch-norm normalized like the latents being denoised.
Their tokens follow the image's, with position ids of index 10, 20, ... and, when there are several, offsets that
tile them on one canvas (each next image goes right or below, whichever keeps the canvas squarer)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.models.flux2 import sampling

if TYPE_CHECKING:
    import torch
    from PIL import Image

MAX_PIXELS_SINGLE = 2024 ** 2
MAX_PIXELS_SEVERAL = 1024 ** 2


def capped(image: "Image.Image", max_pixels: int) -> "Image.Image":
    """The image scaled down (Lanczos, aspect kept) to at most ``max_pixels``; as it is when already smaller."""
    from PIL import Image

    width, height = image.size
    if width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    return image.resize((max(1, int(width * scale)), max(1, int(height * scale))), Image.Resampling.LANCZOS)


def reference_tokens(vae: Any, images: list["Image.Image"],
                     bn: Optional[tuple["torch.Tensor", "torch.Tensor"]]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(1, n, 128)`` tokens (float32, CPU) and ``(n, 4)`` position ids of the reference images."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from invokeai_provider.models.flux2 import vae as flux2_vae

    cap = MAX_PIXELS_SINGLE if len(images) == 1 else MAX_PIXELS_SEVERAL
    all_tokens, all_ids = [], []
    canvas_h = canvas_w = 0
    for index, image in enumerate(images):
        pixels = np.asarray(capped(image.convert("RGB"), cap), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None] * 2.0 - 1.0
        latents = flux2_vae.encode(vae, tensor)
        pad_h, pad_w = latents.shape[-2] % 2, latents.shape[-1] % 2
        if pad_h or pad_w:
            latents = F.pad(latents, (0, pad_w, 0, pad_h), mode="circular")
        h, w = latents.shape[-2:]
        tokens = sampling.pack(latents)
        if bn is not None:
            tokens = sampling.bn_normalize(tokens, bn)
        row = column = 0
        if index == 0:
            canvas_h, canvas_w = h, w
        elif canvas_h + h > canvas_w + w:  # below would be taller than right is wide: go right
            column, canvas_w, canvas_h = canvas_w, canvas_w + w, max(canvas_h, h)
        else:
            row, canvas_h, canvas_w = canvas_h, canvas_h + h, max(canvas_w, w)
        all_tokens.append(tokens)
        all_ids.append(sampling.image_ids(h, w, index=10 + 10 * index, row_offset=row // 2,
                                          column_offset=column // 2))
    return torch.cat(all_tokens, dim=1), torch.cat(all_ids)

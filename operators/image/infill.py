"""Infill nodes: fill the transparent part of an image (before outpainting), and OpenCV's mask inpainting.

Type strings, versions, fields and outputs follow InvokeAI's `invocations/infill.py` and `invocations/cv.py`.
The infill nodes share InvokeAI's behaviour: an image without an alpha channel has nothing to fill and is
passed on as it is; otherwise the fill goes under the image, so opaque pixels never change. OpenCV
(`opencv-python-headless`), PatchMatch (`pypatchmatch`) and torch are imported inside ``invoke()``.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from invokeai_provider.core.fields import ColorField, ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.image_util.arrays import to_uint8
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import fail, load_image, same_size, save_image

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "inpaint"
_TAGS = ["image", "inpaint"]
# InvokeAI's SEED_MAX (invokeai/app/util/misc.py).
SEED_MAX = 4_294_967_295
PIL_RESAMPLING_MODES = Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"]
# PIL.Image.Resampling values, by InvokeAI's names
PIL_RESAMPLING = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


class InfillImageProcessorInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Base of the infill nodes: loads the image, passes an image without alpha through, saves the fill."""

    image: ImageField = InputField(description="The image to process")

    @abstractmethod
    def infill(self, context: "InvocationContext", image: "Image") -> "Image":
        """The image (RGBA) with its transparent pixels filled."""

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        image = load_image(self, context, "image")
        if image.mode != "RGBA":
            return ImageOutput(image=ImageField(image_name=self.image.image_name), width=image.width,
                               height=image.height)
        return save_image(self, context, self.infill(context, image))


def _holes(image: "Image") -> "np.ndarray":
    """The uint8 hole mask OpenCV and PatchMatch take: 255 where the image is not fully opaque, weighted by
    transparency."""
    import numpy as np

    return (255 - np.asarray(image.getchannel("A"))).astype(np.uint8)


@invocation("infill_rgba", title="Solid Color Infill", tags=_TAGS, category=_CATEGORY, version="1.2.2")
class InfillColorInvocation(InfillImageProcessorInvocation):
    """Fills transparent areas with one colour (the image is composited over it)."""

    color: ColorField = InputField(default=ColorField(r=127, g=127, b=127, a=255),
                                   description="The color to use to infill")

    def infill(self, context: "InvocationContext", image: "Image") -> "Image":
        from PIL import Image

        filled = Image.alpha_composite(Image.new("RGBA", image.size, self.color.tuple()), image)
        filled.paste(image, (0, 0), image.getchannel("A"))
        return filled


@invocation("infill_tile", title="Tile Infill", tags=_TAGS, category=_CATEGORY, version="1.2.3")
class InfillTileInvocation(InfillImageProcessorInvocation):
    """Fills transparent areas with tiles cut from the image's fully opaque grid cells, picked at random (seeded).

    Tiles are the cells of a ``tile_size`` grid from the top left that are entirely opaque; the whole image is
    covered with randomly chosen ones and the original is pasted over them.
    """

    tile_size: int = InputField(default=32, ge=1, description="The tile size (px)")
    seed: int = InputField(default=0, ge=0, le=SEED_MAX, description="The seed to use for tile generation (omit for "
                           "random)")

    def infill(self, context: "InvocationContext", image: "Image") -> "Image":
        import numpy as np
        from PIL import Image

        rgba = np.asarray(image)
        height, width = rgba.shape[:2]
        size = self.tile_size
        pool = [rgba[y:y + size, x:x + size, :3]
                for y in range(0, height - size + 1, size) for x in range(0, width - size + 1, size)
                if (rgba[y:y + size, x:x + size, 3] == 255).all()]
        if not pool:
            raise fail(self, "tile_size", f"no fully opaque {size}x{size} tile on the {size}px grid of the "
                                          f"{width}x{height} image: expected a smaller tile size or a more opaque image")
        rng = np.random.default_rng(self.seed)
        tiled = np.zeros((height, width, 3), np.uint8)
        for y in range(0, height, size):
            for x in range(0, width, size):
                tile = pool[rng.integers(len(pool))]
                tiled[y:y + size, x:x + size] = tile[:height - y, :width - x]
        filled = Image.fromarray(tiled, mode="RGB")
        filled.paste(image, (0, 0), image.getchannel("A"))
        return filled


@invocation("infill_patchmatch", title="PatchMatch Infill", tags=_TAGS, category=_CATEGORY, version="1.2.2")
class InfillPatchMatchInvocation(InfillImageProcessorInvocation):
    """Fills transparent areas with PatchMatch: patches of the image that best continue its surroundings.

    The fill runs on the image shrunk by ``downscale`` (much faster, and a fill need not be sharp), is scaled
    back and goes under the original.
    """

    downscale: float = InputField(default=2.0, gt=0, description="Run patchmatch on downscaled image to speedup infill")
    resample_mode: PIL_RESAMPLING_MODES = InputField(default="bicubic", description="The resampling mode")

    def infill(self, context: "InvocationContext", image: "Image") -> "Image":
        import numpy as np
        from PIL import Image

        try:
            from patchmatch import patch_match
        except ImportError as exc:
            raise fail(self, "image", "PatchMatch infill needs the pypatchmatch package, which is not installed "
                                      "on this worker") from exc
        if not patch_match.patchmatch_available:
            raise fail(self, "image", "PatchMatch infill: pypatchmatch's native library could not be loaded")
        resample = PIL_RESAMPLING[self.resample_mode]
        small_size = (int(image.width / self.downscale), int(image.height / self.downscale))
        if min(small_size) < 1:
            raise fail(self, "downscale", f"expected a factor that leaves at least one pixel of the "
                                          f"{image.width}x{image.height} image, got {self.downscale}")
        small = image.resize(small_size, resample=resample) if small_size != image.size else image
        rgb = np.ascontiguousarray(np.asarray(small)[:, :, :3])
        filled = Image.fromarray(patch_match.inpaint(rgb, _holes(small), patch_size=3), mode="RGB")
        if filled.size != image.size:
            filled = filled.resize(image.size, resample=resample)
        filled.paste(image, (0, 0), image.getchannel("A"))
        return filled


@invocation("infill_cv2", title="CV2 Infill", tags=_TAGS, category=_CATEGORY, version="1.2.2")
class CV2InfillInvocation(InfillImageProcessorInvocation):
    """Fills transparent areas with OpenCV's Telea inpainting (colours flow in from the edge of the hole)."""

    def infill(self, context: "InvocationContext", image: "Image") -> "Image":
        import cv2
        import numpy as np
        from PIL import Image

        rgb = np.ascontiguousarray(np.asarray(image)[:, :, :3])
        return Image.fromarray(cv2.inpaint(rgb, _holes(image), 3, cv2.INPAINT_TELEA), mode="RGB")


# --- LaMa -------------------------------------------------------------------------------------------

LAMA_MODEL_URL = "https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt"
LAMA_FILE = "big-lama.pt"
# Where the LaMa TorchScript file is looked for under the model root (InvokeAI downloads it from the URL).
LAMA_RELATIVE_PATHS = (Path("core/misc/lama") / LAMA_FILE, Path("lama") / LAMA_FILE, Path(LAMA_FILE))


def lama_model_path(context: "InvocationContext") -> Optional[Path]:
    """The LaMa TorchScript file: ``$INVOKEAI_LAMA_MODEL`` when set, else the first of LAMA_RELATIVE_PATHS
    under the local model root of the run's model service (None when there is none)."""
    override = os.environ.get("INVOKEAI_LAMA_MODEL")
    if override:
        return Path(override)
    registry = getattr(context.services.get("models"), "registry", None)
    if registry is None or getattr(registry, "is_remote", True):
        return None
    for relative in LAMA_RELATIVE_PATHS:
        if (registry.root / relative).is_file():
            return registry.root / relative
    return None


@invocation("infill_lama", title="LaMa Infill", tags=_TAGS, category=_CATEGORY, version="1.2.2", gpu=True)
class LaMaInfillInvocation(InfillImageProcessorInvocation):
    """Fills transparent areas with the LaMa inpainting network (a TorchScript model taking image and mask).

    No model hub is reachable here, so the file (InvokeAI's ``big-lama.pt``) must be placed in a local model
    root (see ``lama_model_path``); it is held in the model service's RAM/VRAM cache like any other model.
    """

    def infill(self, context: "InvocationContext", image: "Image") -> "Image":
        from contextlib import nullcontext

        import numpy as np
        import torch
        import torch.nn.functional as F
        from PIL import Image

        path = lama_model_path(context)
        if path is None or not path.is_file():
            where = ", ".join(str(p) for p in LAMA_RELATIVE_PATHS)
            raise fail(self, "image", f"LaMa infill needs the LaMa TorchScript model ({LAMA_MODEL_URL}); expected it "
                                      f"at $INVOKEAI_LAMA_MODEL or in the local model root as one of: {where}")

        def build() -> Any:
            return torch.jit.load(str(path), map_location="cpu").eval()

        width, height = image.size
        rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        hole = torch.from_numpy((np.asarray(image.getchannel("A")) < 255).astype(np.float32))[None, None]
        # LaMa's downsampling wants sides that are multiples of 8: pad by repeating the border, crop after
        pad = (0, -width % 8, 0, -height % 8)
        rgb, hole = F.pad(rgb, pad, mode="replicate"), F.pad(hole, pad, mode="replicate")
        cache = getattr(context.services.get("models"), "cache", None)
        key = f"lama:{path.resolve()}:{path.stat().st_mtime_ns}"
        with cache.use(key, build) if cache is not None else nullcontext(build()) as model:
            device = next(iter(model.parameters()), torch.empty(0)).device
            with torch.inference_mode():
                result = model(rgb.to(device), hole.to(device))
        result = result[0, :3, :height, :width].permute(1, 2, 0).float().cpu().numpy()
        if result.shape[:2] != (height, width):
            raise fail(self, "image", f"the LaMa model returned a {result.shape[1]}x{result.shape[0]} image for a "
                                      f"{width}x{height} input")
        filled = Image.fromarray(to_uint8(result, scale=255.0), mode="RGB")
        filled.paste(image, (0, 0), image.getchannel("A"))
        return filled


# --- OpenCV inpaint with a mask image ---------------------------------------------------------------


@invocation("cv_inpaint", title="OpenCV Inpaint", tags=["opencv", "inpaint"], category=_CATEGORY, version="1.3.1")
class CvInpaintInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Repaints the black part of a mask image with OpenCV's Telea inpainting (white is kept)."""

    image: ImageField = InputField(description="The image to inpaint")
    mask: ImageField = InputField(description="The mask to use when inpainting")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import cv2
        import numpy as np
        from PIL import Image

        image = load_image(self, context, "image").convert("RGB")
        mask = load_image(self, context, "mask").convert("L")
        same_size(self, "mask", mask, image, "image")
        holes = (255 - np.asarray(mask)).astype(np.uint8)
        painted = cv2.inpaint(np.ascontiguousarray(np.asarray(image)), holes, 3, cv2.INPAINT_TELEA)
        return save_image(self, context, Image.fromarray(painted, mode="RGB"))

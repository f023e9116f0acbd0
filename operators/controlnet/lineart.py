"""Lineart ControlNet preprocessors: the lineart generator (fine / coarse) and the anime lineart U-Net, under
InvokeAI 6.11's type strings, fields, defaults and outputs (lineart.py, lineart_anime.py).

InvokeAI downloads the checkpoints from the hub repository ``lllyasviel/Annotators``. No hub is reachable
here, so they are read from ``<model root>/core/lllyasviel/Annotators/<file>``: ``sk_model.pth`` (fine),
``sk_model2.pth`` (coarse) and ``netG.pth`` (anime). A ``.safetensors`` file of the same stem is used instead
when present. ``.pth`` files are read weights-only (no pickled objects) and loaded strictly, so a file that is
not the expected network fails naming the node, the field and the file. The networks live in
``invokeai_provider.models.annotators.lineart`` / ``lineart_anime_net``; torch and OpenCV are imported inside
``invoke()`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.annotators.checkpoint import ANNOTATORS_REPO, strip_module_prefix, use_annotator
from invokeai_provider.models.image_util.arrays import to_uint8
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import load_image, save_image

if TYPE_CHECKING:
    import numpy as np

    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "controlnet"  # InvokeAI 6.11; later releases moved these to "controlnet_preprocessors"

# The annotator checkpoints (under the model root's core/lllyasviel/Annotators).
LINEART_FINE_FILE = "sk_model.pth"
LINEART_COARSE_FILE = "sk_model2.pth"
LINEART_ANIME_FILE = "netG.pth"

# InvokeAI zeroes map values below this: the networks leave faint near-black noise that SDXL ControlNets
# react to.
NOISE_FLOOR = 12
# The anime U-Net halves the image 8 times: its input is resized to a multiple of this on each side.
ANIME_MULTIPLE = 256


def finish_map(line: "np.ndarray") -> "np.ndarray":
    """A network output in 0..255 (255 = background) as a white-on-black uint8 edge map, noise floor removed."""
    edges = 255 - to_uint8(line, scale=1, rounding="floor")
    edges[edges < NOISE_FLOOR] = 0
    return edges


@invocation("lineart_edge_detection", title="Lineart Edge Detection", tags=["controlnet", "lineart"],
            category=_CATEGORY, version="1.0.0", gpu=True)
class LineartEdgeDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A white-on-black line drawing of the image (greyscale, the image's size), for lineart ControlNets."""

    image: ImageField = InputField(description="The image to process")
    coarse: bool = InputField(default=False, description="Whether to use coarse mode")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        import torch

        from invokeai_provider.models.annotators.lineart import LineartGenerator

        image = load_image(self, context, "image", "RGB")
        filename = LINEART_COARSE_FILE if self.coarse else LINEART_FINE_FILE
        kind = "coarse" if self.coarse else "fine"
        with use_annotator(self, context, "coarse", filename, LineartGenerator, unwrap=strip_module_prefix,
                           what=f"{filename}, the {kind} lineart generator from the hub repository "
                                f"{ANNOTATORS_REPO}") as model, torch.no_grad():
            device = next(model.parameters()).device
            pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            line = model(pixels.to(device))[0, 0].float().cpu().numpy() * 255.0
        # The generator rounds odd sizes up to a multiple of 4 at the bottom/right; keep the image's own size.
        edges = finish_map(line[:image.height, :image.width])
        return save_image(self, context, edges)


@invocation("lineart_anime_edge_detection", title="Lineart Anime Edge Detection", tags=["controlnet", "lineart"],
            category=_CATEGORY, version="1.0.0", gpu=True)
class LineartAnimeEdgeDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A white-on-black anime-style line drawing of the image (greyscale, the image's size), for lineart
    anime ControlNets."""

    image: ImageField = InputField(description="The image to process")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import cv2
        import numpy as np
        import torch

        from invokeai_provider.models.annotators.lineart_anime import LineartAnimeUNet

        image = load_image(self, context, "image", "RGB")
        width, height = image.size
        fed_width = ANIME_MULTIPLE * -(-width // ANIME_MULTIPLE)
        fed_height = ANIME_MULTIPLE * -(-height // ANIME_MULTIPLE)
        fed = cv2.resize(np.asarray(image, dtype=np.uint8), (fed_width, fed_height), interpolation=cv2.INTER_CUBIC)
        with use_annotator(self, context, "image", LINEART_ANIME_FILE, LineartAnimeUNet, unwrap=strip_module_prefix,
                           what=f"{LINEART_ANIME_FILE}, the anime lineart U-Net from the hub repository "
                                f"{ANNOTATORS_REPO}") as model, torch.no_grad():
            device = next(model.parameters()).device
            pixels = torch.from_numpy(fed.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
            line = model(pixels.to(device))[0, 0].float().cpu().numpy() * 127.5 + 127.5
        line = cv2.resize(line, (width, height), interpolation=cv2.INTER_CUBIC)
        return save_image(self, context, finish_map(line))

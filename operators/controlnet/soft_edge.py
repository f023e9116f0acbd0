"""Soft-edge ControlNet preprocessors: HED and PiDiNet edge maps, under InvokeAI 6.11's type strings,
fields, defaults and outputs (``hed.py``, ``pidi.py``).

InvokeAI downloads the annotator checkpoints (``ControlNetHED.pth``, ``table5_pidinet.pth``) from the hub
repo ``lllyasviel/Annotators``. No hub is reachable here: put the file in
``<model root>/core/lllyasviel/Annotators/`` (a ``.safetensors`` file of the same stem is used instead when
present). The networks (``models/annotators/hed.py``, ``models/annotators/pidi.py``) are built here and the file loaded
strictly through the shared annotator loader (``models/annotator_checkpoint``); the loaded network stays in
the run's model cache. torch and OpenCV are imported inside ``invoke()`` only.

Both nodes give a one-channel (``L``) image the size of the input, white edges on black, as InvokeAI does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.annotators.checkpoint import ANNOTATORS_REPO, use_annotator
from invokeai_provider.models.image_util.arrays import to_uint8
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import load_rgb, save_image

if TYPE_CHECKING:
    import numpy as np

    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "controlnet"  # InvokeAI 6.11; later releases moved these to "controlnet_preprocessors"
# The field named by model errors: neither node has a model field, so errors point at the input it processes.
_MODEL_FIELD = "image"


# --- post-processing -------------------------------------------------------------------------------------


def quantize(probability: "np.ndarray", steps: int = 2) -> "np.ndarray":
    """Edge probabilities quantised to ``steps + 1`` levels (controlnet_aux's "safe step", InvokeAI's
    ``quantize_edges``): with 2 steps, below 1/3 -> 0, below 2/3 -> 0.5, else 1 (1.5 at exactly 1, clipped
    when converted to 8 bits)."""
    import numpy as np

    return (probability.astype(np.float32) * float(steps + 1)).astype(np.int32).astype(np.float32) / float(steps)


def non_maximum_suppression(edges: "np.ndarray", threshold: int, sigma: float) -> "np.ndarray":
    """Thin edges to one pixel: blur by ``sigma``, keep pixels that are a maximum across some direction
    (horizontal, vertical or a diagonal line of 3), then binarise at ``threshold`` (0/255)."""
    import cv2
    import numpy as np

    blurred = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), sigma)
    lines = [np.array(rows, dtype=np.uint8) for rows in (
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]], [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])]
    kept = np.zeros_like(blurred)
    for line in lines:
        np.putmask(kept, cv2.dilate(blurred, kernel=line) == blurred, blurred)
    return np.where(kept > threshold, 255, 0).astype(np.uint8)


def scribble(edges: "np.ndarray") -> "np.ndarray":
    """A bold binary sketch of an edge map (uint8): thinned, blurred and every touched pixel made white."""
    import cv2
    import numpy as np

    blurred = cv2.GaussianBlur(non_maximum_suppression(edges, 127, 3.0), (0, 0), 3.0)
    return np.where(blurred > 4, 255, 0).astype(np.uint8)



# --- nodes -----------------------------------------------------------------------------------------------


@invocation("hed_edge_detection", title="HED Edge Detection", tags=["controlnet", "hed", "softedge"],
            category=_CATEGORY, version="1.0.0", gpu=True)
class HEDEdgeDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A soft edge map from the HED network, for softedge (HED) ControlNets; scribble mode makes it a bold
    binary sketch for scribble ControlNets."""

    image: ImageField = InputField(description="The image to process")
    scribble: bool = InputField(default=False, description="Whether or not to use scribble mode")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.annotators.hed import HED_CHECKPOINT, HEDNet, hed_edge_map

        rgb = load_rgb(self, context)
        with use_annotator(self, context, _MODEL_FIELD, HED_CHECKPOINT, HEDNet,
                           what=f"{HED_CHECKPOINT} from the hub repo {ANNOTATORS_REPO}") as net:
            edges = hed_edge_map(net, rgb)
        return save_image(self, context, scribble(edges) if self.scribble else edges)


@invocation("pidi_edge_detection", title="PiDiNet Edge Detection", tags=["controlnet", "edge"],
            category=_CATEGORY, version="1.0.0", gpu=True)
class PiDiNetEdgeDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A soft edge map from PiDiNet (lighter than HED, for softedge ControlNets); ``quantize_edges`` snaps it
    to three levels, scribble mode makes it a bold binary sketch."""

    image: ImageField = InputField(description="The image to process")
    quantize_edges: bool = InputField(default=False, description="Whether or not to use safe mode")
    scribble: bool = InputField(default=False, description="Whether or not to use scribble mode")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.annotators.pidi import (
            PIDI_CHECKPOINT,
            PiDiNet,
            pidi_edge_probability,
            pidi_state_dict,
        )

        rgb = load_rgb(self, context)
        with use_annotator(self, context, _MODEL_FIELD, PIDI_CHECKPOINT, PiDiNet, unwrap=pidi_state_dict,
                           what=f"{PIDI_CHECKPOINT} from the hub repo {ANNOTATORS_REPO}") as net:
            probability = pidi_edge_probability(net, rgb)
        if self.quantize_edges:
            probability = quantize(probability)
        edges = to_uint8(probability, scale=255.0, rounding="floor")
        return save_image(self, context, scribble(edges) if self.scribble else edges)

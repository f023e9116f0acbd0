"""Soft-edge ControlNet preprocessors: HED and PiDiNet edge maps, under InvokeAI 6.11's type strings,
fields, defaults and outputs (``hed.py``, ``pidi.py``).

InvokeAI downloads the annotator checkpoints (``ControlNetHED.pth``, ``table5_pidinet.pth``) from the hub
repo ``lllyasviel/Annotators``. No hub is reachable here: put the file in
``<model root>/core/lllyasviel/Annotators/`` (a ``.safetensors`` file of the same stem is used instead when
present). The networks (``models/hed_net.py``, ``models/pidi_net.py``) are built here and the file loaded
with ``strict=True`` and ``weights_only=True``; the loaded network stays in the run's model cache. torch and
OpenCV are imported inside ``invoke()`` only.

Both nodes give a one-channel (``L``) image the size of the input, white edges on black, as InvokeAI does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from invokeai_provider.fields import ImageField
from invokeai_provider.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.core_models import CORE_DIR, CoreModel, core_model_root, use_core_model
from invokeai_provider.operators.image_util import fail, load_image
from invokeai_provider.operators.primitives import ImageOutput

if TYPE_CHECKING:
    import numpy as np

    from invokeai_provider.context import InvocationContext

ANNOTATORS_REPO = "lllyasviel/Annotators"
ANNOTATORS_FOLDER = f"{CORE_DIR}/{ANNOTATORS_REPO}"
_CATEGORY = "controlnet"  # InvokeAI 6.11; later releases moved these to "controlnet_preprocessors"
# The field named by model errors: neither node has a model field, so errors point at the input it processes.
_MODEL_FIELD = "image"


# --- checkpoints -----------------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> Any:
    """Tensors from a ``.safetensors`` file, or a ``.pth`` file unpickled with ``weights_only`` (tensors and
    plain containers only: no code in a downloaded file runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _key_mismatch(expected: Any, found: Any) -> str:
    """What keys a loaded state dict lacks or has in excess, a few of each; empty when the key sets agree."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    parts = ([f"missing {few(missing)}"] if missing else []) + ([f"unexpected {few(extra)}"] if extra else [])
    return "; ".join(parts)


def load_annotator(node: BaseInvocation, context: "InvocationContext", filename: str, make_net: Callable[[], Any],
                   weights: Callable[[Any], Any] = lambda checkpoint: checkpoint) -> Any:
    """The network ``make_net()`` with the weights of annotator file ``filename`` (or its ``.safetensors``
    twin), held in the model cache: a context manager giving a :class:`CoreModel` on the execution device.
    ``weights`` picks the state dict out of what the file holds."""
    _, root = core_model_root(node, context, _MODEL_FIELD)
    twin = Path(filename).with_suffix(".safetensors").name
    chosen = twin if (root / ANNOTATORS_FOLDER / twin).is_file() else filename

    def build(folder: Path, device: str) -> CoreModel:
        path = folder / chosen
        net = make_net()
        try:
            state = weights(read_checkpoint(path))
            problem = (_key_mismatch(net.state_dict(), state) if isinstance(state, Mapping)
                       else f"it holds a {type(state).__name__}, not a state dict")
            if not problem:
                net.load_state_dict(state, strict=True)
        except Exception as exc:  # unreadable file, unexpected layout, wrong shapes
            problem = " ".join(str(exc).split())[:300] or type(exc).__name__
        if problem:
            raise fail(node, _MODEL_FIELD, f"{path} is not a {type(net).__name__} checkpoint like {filename} of "
                                           f"{ANNOTATORS_REPO}: {problem}")
        return CoreModel(net.float().eval().to(device))

    return use_core_model(node, context, _MODEL_FIELD, ANNOTATORS_FOLDER, build, required=(chosen,),
                          what=f"{filename} from the hub repo {ANNOTATORS_REPO}")


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


def _save_edges(context: "InvocationContext", edges: "np.ndarray") -> ImageOutput:
    from PIL import Image

    return ImageOutput.build(context.images.save(Image.fromarray(edges)))


def _rgb(node: BaseInvocation, context: "InvocationContext") -> "np.ndarray":
    import numpy as np

    return np.asarray(load_image(node, context, "image", mode="RGB"), dtype=np.uint8)


# --- nodes -----------------------------------------------------------------------------------------------


@invocation("hed_edge_detection", title="HED Edge Detection", tags=["controlnet", "hed", "softedge"],
            category=_CATEGORY, version="1.0.0", gpu=True)
class HEDEdgeDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A soft edge map from the HED network, for softedge (HED) ControlNets; scribble mode makes it a bold
    binary sketch for scribble ControlNets."""

    image: ImageField = InputField(description="The image to process")
    scribble: bool = InputField(default=False, description="Whether or not to use scribble mode")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from invokeai_provider.models.hed_net import HED_CHECKPOINT, HEDNet, hed_edge_map

        rgb = _rgb(self, context)
        with load_annotator(self, context, HED_CHECKPOINT, HEDNet) as core:
            edges = hed_edge_map(core.model, rgb)
        return _save_edges(context, scribble(edges) if self.scribble else edges)


@invocation("pidi_edge_detection", title="PiDiNet Edge Detection", tags=["controlnet", "edge"],
            category=_CATEGORY, version="1.0.0", gpu=True)
class PiDiNetEdgeDetectionInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A soft edge map from PiDiNet (lighter than HED, for softedge ControlNets); ``quantize_edges`` snaps it
    to three levels, scribble mode makes it a bold binary sketch."""

    image: ImageField = InputField(description="The image to process")
    quantize_edges: bool = InputField(default=False, description="Whether or not to use safe mode")
    scribble: bool = InputField(default=False, description="Whether or not to use scribble mode")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np

        from invokeai_provider.models.pidi_net import PIDI_CHECKPOINT, PiDiNet, pidi_edge_probability, pidi_state_dict

        rgb = _rgb(self, context)
        with load_annotator(self, context, PIDI_CHECKPOINT, PiDiNet, pidi_state_dict) as core:
            probability = pidi_edge_probability(core.model, rgb)
        if self.quantize_edges:
            probability = quantize(probability)
        edges = (probability * 255.0).clip(0, 255).astype(np.uint8)
        return _save_edges(context, scribble(edges) if self.scribble else edges)

"""What the image-producing nodes share: their error, reading inputs so that a bad or missing image is
reported against the field that named it, and saving a result image as the node's ImageOutput."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from invokeai_provider.core.invocation import BaseInvocation
from invokeai_provider.errors import ArtifactNotFoundError, InvokeAIProviderError, field_error
from invokeai_provider.operators.core.primitives import ImageOutput

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.core.fields import ImageField


class ImageNodeError(InvokeAIProviderError):
    """An image node cannot run with what it was given; the message names the node, field and expectation."""


def fail(node: BaseInvocation, field: str, problem: str) -> ImageNodeError:
    """The error for a bad input of ``node``: names the node id, its type and the field."""
    return field_error(ImageNodeError, node, field, problem)


def load_image(node: BaseInvocation, context: "InvocationContext", field: str, mode: Optional[str] = None) -> "Image":
    """The image an ImageField input names."""
    value: "ImageField" = getattr(node, field)
    try:
        return context.images.get_pil(value.image_name, mode=mode)
    except ArtifactNotFoundError as exc:
        raise fail(node, field, f"expected an image in the run's store: {exc}") from None


def load_rgb(node: BaseInvocation, context: "InvocationContext", field: str = "image") -> "np.ndarray":
    """The image an ImageField input names, as an (H, W, 3) uint8 RGB array (what the networks take)."""
    import numpy as np

    return np.asarray(load_image(node, context, field, mode="RGB"), dtype=np.uint8)


def same_size(node: BaseInvocation, field: str, image: "Image", other: "Image", other_field: str) -> None:
    """Raises unless two inputs have the same size: the per-pixel nodes have no rule for resizing."""
    if image.size != other.size:
        raise fail(node, field, f"expected the size of {other_field} ({other.width}x{other.height}), "
                                f"got {image.width}x{image.height}")


# Modes a PNG can hold; the others have no PNG form, so the store cannot keep them.
PNG_MODES = ("1", "L", "LA", "I;16", "P", "RGB", "RGBA")


def save_image(node: BaseInvocation, context: "InvocationContext", image: Union["Image", "np.ndarray"], *,
               category: str = "general") -> ImageOutput:
    """Stores a node's result image and returns its ImageOutput.

    The PNG and its image record carry the node's ``metadata`` and ``board`` inputs, as in InvokeAI
    (``context.images.save`` reads them from the node); ``category`` is the record's image category
    ("general", or "mask" for the mask nodes). ``image`` may be an array, taken by ``Image.fromarray`` as it
    is. 32-bit integer images are stored as 16-bit PNGs (values clamped to 0..65535), the widest a PNG holds;
    another mode a PNG cannot hold is an error against the node's ``mode`` field, or else its ``image``.
    """
    from PIL import Image as PILImage

    if not isinstance(image, PILImage.Image):
        image = PILImage.fromarray(image)
    if image.mode == "I":
        import numpy as np

        image = PILImage.fromarray(np.clip(np.asarray(image), 0, 65535).astype(np.uint16))
    if image.mode not in PNG_MODES:
        raise fail(node, "mode" if "mode" in type(node).model_fields else "image",
                   f"the result has mode {image.mode!r}, which a PNG cannot store (expected one of "
                   f"{', '.join(PNG_MODES)})")
    return ImageOutput.build(context.images.save(image, image_category=category))

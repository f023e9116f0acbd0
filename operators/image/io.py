"""What the image, mask, infill and canvas nodes share: their error, and reading inputs so that a bad or
missing image is reported against the field that named it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from invokeai_provider.errors import ArtifactNotFoundError, InvokeAIProviderError
from invokeai_provider.core.invocation import BaseInvocation

if TYPE_CHECKING:
    from PIL.Image import Image

    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.core.fields import ImageField


class ImageNodeError(InvokeAIProviderError):
    """An image node cannot run with what it was given; the message names the node, field and expectation."""


def fail(node: BaseInvocation, field: str, problem: str) -> ImageNodeError:
    """The error for a bad input of ``node``: names the node id, its type and the field."""
    return ImageNodeError(f"node {node.id} ({node.get_type()}): field {field}: {problem}", node_id=node.id,
                          field=field)


def load_image(node: BaseInvocation, context: "InvocationContext", field: str, mode: Optional[str] = None) -> "Image":
    """The image an ImageField input names."""
    value: "ImageField" = getattr(node, field)
    try:
        return context.images.get_pil(value.image_name, mode=mode)
    except ArtifactNotFoundError as exc:
        raise fail(node, field, f"expected an image in the run's store: {exc}") from None


def same_size(node: BaseInvocation, field: str, image: "Image", other: "Image", other_field: str) -> None:
    """Raises unless two inputs have the same size: the per-pixel nodes have no rule for resizing."""
    if image.size != other.size:
        raise fail(node, field, f"expected the size of {other_field} ({other.width}x{other.height}), "
                                f"got {image.width}x{image.height}")

"""Mask nodes: masks as images (L, 0..255) and as boolean tensors ([1, H, W]), and the conversions between them.

Type strings, versions, fields and outputs follow InvokeAI's `invocations/mask.py` and the mask nodes of
`invocations/image.py`. Tensor masks go through the run's tensor store as safetensors; torch and OpenCV are
imported inside ``invoke()`` so DAG parsing stays light. (`create_denoise_mask` and `create_gradient_mask`
live in ``operators.sd.masks``, beside the VAE they need.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import BoundingBoxField, ColorField, ImageField, TensorField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.core.limits import IMAGE_SIDE
from invokeai_provider.models.image_util.arrays import to_uint8
from invokeai_provider.operators.core.primitives import BoundingBoxOutput, ImageOutput, MaskOutput
from invokeai_provider.operators.image.io import fail, load_image, same_size, save_image

if TYPE_CHECKING:
    import numpy as np
    import torch

    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "mask"
WHITE = ColorField(r=255, g=255, b=255, a=255)


def load_mask_tensor(node: BaseInvocation, context: "InvocationContext", field: str, name: str) -> "torch.Tensor":
    """A stored mask as a [H, W] tensor: bool kept, other dtypes thresholded at 0.5; [1, H, W] is squeezed."""
    mask = context.tensors.load(name)
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise fail(node, field, f"expected a mask tensor shaped [H, W] or [1, H, W], got {list(mask.shape)}")
    import torch

    return mask if mask.dtype == torch.bool else mask > 0.5


def save_mask(context: "InvocationContext", mask: "np.ndarray") -> MaskOutput:
    """Stores a [H, W] boolean array as a [1, H, W] bool tensor, InvokeAI's mask layout."""
    import numpy as np
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)).unsqueeze(0)
    return MaskOutput(mask=TensorField(tensor_name=context.tensors.save(tensor)), width=int(tensor.shape[2]),
                      height=int(tensor.shape[1]))


# --- tensor masks -----------------------------------------------------------------------------------


@invocation("rectangle_mask", title="Create Rectangle Mask", tags=["conditioning"], category=_CATEGORY, version="1.0.1")
class RectangleMaskInvocation(BaseInvocation, WithMetadata):
    """A mask that is true inside one rectangle (clipped to the mask), e.g. to confine a regional prompt."""

    width: int = InputField(description="The width of the entire mask.", limit=IMAGE_SIDE)
    height: int = InputField(description="The height of the entire mask.", limit=IMAGE_SIDE)
    x_left: int = InputField(description="The left x-coordinate of the rectangular masked region (inclusive).")
    y_top: int = InputField(description="The top y-coordinate of the rectangular masked region (inclusive).")
    rectangle_width: int = InputField(description="The width of the rectangular masked region.")
    rectangle_height: int = InputField(description="The height of the rectangular masked region.")

    def invoke(self, context: "InvocationContext") -> MaskOutput:
        import numpy as np

        for field in ("width", "height"):
            if getattr(self, field) < 1:
                raise fail(self, field, f"expected a size of at least 1 pixel, got {getattr(self, field)}")
        for field in ("x_left", "y_top", "rectangle_width", "rectangle_height"):
            if getattr(self, field) < 0:
                raise fail(self, field, f"expected a value >= 0, got {getattr(self, field)}")
        mask = np.zeros((self.height, self.width), dtype=bool)
        mask[self.y_top:self.y_top + self.rectangle_height, self.x_left:self.x_left + self.rectangle_width] = True
        return save_mask(context, mask)


@invocation("alpha_mask_to_tensor", title="Alpha Mask to Tensor", tags=["conditioning"], category=_CATEGORY,
            version="1.0.0")
class AlphaMaskToTensorInvocation(BaseInvocation):
    """A tensor mask from an image's alpha: true where any opacity (or, inverted, where fully transparent)."""

    image: ImageField = InputField(description="The mask image to convert.")
    invert: bool = InputField(default=False, description="Whether to invert the mask.")

    def invoke(self, context: "InvocationContext") -> MaskOutput:
        import numpy as np

        alpha = np.asarray(load_image(self, context, "image", "RGBA"))[:, :, 3]
        return save_mask(context, alpha == 0 if self.invert else alpha > 0)


@invocation("invert_tensor_mask", title="Invert Tensor Mask", tags=["conditioning"], category=_CATEGORY,
            version="1.1.0")
class InvertTensorMaskInvocation(BaseInvocation):
    """Swaps the true and false regions of a boolean tensor mask."""

    mask: TensorField = InputField(description="The tensor mask to convert.")

    def invoke(self, context: "InvocationContext") -> MaskOutput:
        import torch

        mask = context.tensors.load(self.mask.tensor_name)
        if mask.dtype != torch.bool:
            raise fail(self, "mask", f"expected a bool tensor, got {mask.dtype}")
        if mask.dim() == 2:
            mask = mask.unsqueeze(0)
        if mask.dim() != 3 or mask.shape[0] != 1:
            raise fail(self, "mask", f"expected a mask shaped [H, W] or [1, H, W], got {list(mask.shape)}")
        return save_mask(context, (~mask[0]).numpy())


@invocation("image_mask_to_tensor", title="Image Mask to Tensor", tags=["conditioning"], category=_CATEGORY,
            version="1.0.0")
class ImageMaskToTensorInvocation(BaseInvocation, WithMetadata):
    """A tensor mask from a grayscale mask image: true where darker than the cutoff (or, inverted, not)."""

    image: ImageField = InputField(description="The mask image to convert.")
    cutoff: int = InputField(default=128, ge=0, le=255, description="Cutoff (<)")
    invert: bool = InputField(default=False, description="Whether to invert the mask.")

    def invoke(self, context: "InvocationContext") -> MaskOutput:
        import numpy as np

        gray = np.asarray(load_image(self, context, "image", "L"))
        return save_mask(context, gray >= self.cutoff if self.invert else gray < self.cutoff)


@invocation("tensor_mask_to_image", title="Tensor Mask to Image", tags=["mask"], category=_CATEGORY, version="1.1.0")
class MaskTensorToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A black-and-white image of a tensor mask (white where true); non-bool masks are cut at 0.5."""

    mask: TensorField = InputField(description="The mask tensor to convert.")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        mask = load_mask_tensor(self, context, "mask", self.mask.tensor_name)
        pixels = mask.cpu().numpy().astype(np.uint8) * 255
        return save_image(self, context, Image.fromarray(pixels, mode="L"))


@invocation("apply_tensor_mask_to_image", title="Apply Tensor Mask to Image", tags=["mask"], category=_CATEGORY,
            version="1.0.0")
class ApplyMaskTensorToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Makes the image transparent where the mask is false; pixels already fully transparent stay so."""

    mask: TensorField = InputField(description="The mask tensor to apply.")
    image: ImageField = InputField(description="The image to apply the mask to.")
    invert: bool = InputField(default=False, description="Whether to invert the mask.")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        image = load_image(self, context, "image", "RGBA")
        mask = load_mask_tensor(self, context, "mask", self.mask.tensor_name).cpu().numpy()
        if mask.shape != (image.height, image.width):
            raise fail(self, "mask", f"expected a mask of the image's size {image.width}x{image.height}, "
                                     f"got {mask.shape[1]}x{mask.shape[0]}")
        if self.invert:
            mask = ~mask
        rgba = np.array(image)
        alpha = rgba[:, :, 3]
        rgba[:, :, 3] = np.where(alpha > 0, mask.astype(np.uint8) * 255, alpha)
        return save_image(self, context, Image.fromarray(rgba, mode="RGBA"))


# --- image masks ------------------------------------------------------------------------------------


@invocation("get_image_mask_bounding_box", title="Get Image Mask Bounding Box", tags=["mask"], category=_CATEGORY,
            version="1.0.0")
class GetMaskBoundingBoxInvocation(BaseInvocation):
    """The box around the pixels of exactly ``mask_color``, grown by ``margin`` and clipped to the image.

    The maximum coordinates are exclusive, as BoundingBoxField says, so cropping to the box keeps every mask
    pixel. A mask without that colour gives the empty box (0, 0, 0, 0).
    """

    mask: ImageField = InputField(description="The mask to crop.")
    margin: int = InputField(default=0, description="Margin to add to the bounding box.")
    mask_color: ColorField = InputField(default=WHITE, description="Color of the mask in the image.")

    def invoke(self, context: "InvocationContext") -> BoundingBoxOutput:
        import numpy as np

        rgba = np.asarray(load_image(self, context, "mask", "RGBA"))
        ys, xs = np.nonzero(np.all(rgba == np.array(self.mask_color.tuple(), dtype=np.uint8), axis=-1))
        if len(xs) == 0:
            return BoundingBoxOutput(bounding_box=BoundingBoxField(x_min=0, y_min=0, x_max=0, y_max=0))
        height, width = rgba.shape[:2]
        box = BoundingBoxField(x_min=max(0, int(xs.min()) - self.margin), y_min=max(0, int(ys.min()) - self.margin),
                               x_max=min(width, int(xs.max()) + 1 + self.margin),
                               y_max=min(height, int(ys.max()) + 1 + self.margin))
        return BoundingBoxOutput(bounding_box=box)


@invocation("tomask", title="Mask from Alpha", tags=["image", "mask"], category=_CATEGORY, version="1.2.2")
class MaskFromAlphaInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The image's alpha channel as a grayscale mask (an image without alpha is fully opaque: all white)."""

    image: ImageField = InputField(description="The image to create the mask from")
    invert: bool = InputField(default=False, description="Whether or not to invert the mask")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import ImageOps

        image = load_image(self, context, "image")
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA", "PA") else image.convert("RGBA").getchannel("A")
        return save_image(self, context, ImageOps.invert(alpha) if self.invert else alpha, category="mask")


@invocation("mask_edge", title="Mask Edge", tags=["image", "mask", "inpaint"], category=_CATEGORY, version="1.2.2")
class MaskEdgeInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A mask of a band around the edges of a mask (black on the band, white elsewhere), for seam repainting.

    The band is the mask's soft (neither black nor white) pixels plus its Canny edges, dilated by
    ``edge_size / 2`` 3x3 steps and box-blurred by ``edge_blur``.
    """

    image: ImageField = InputField(description="The image to apply the mask to")
    edge_size: int = InputField(description="The size of the edge")
    edge_blur: int = InputField(description="The amount of blur on the edge")
    low_threshold: int = InputField(description="First threshold for the hysteresis procedure in Canny edge detection")
    high_threshold: int = InputField(description="Second threshold for the hysteresis procedure in Canny edge "
                                     "detection")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import cv2
        import numpy as np
        from PIL import Image, ImageFilter, ImageOps

        for field in ("edge_size", "edge_blur"):
            if getattr(self, field) < 0:
                raise fail(self, field, f"expected a value >= 0, got {getattr(self, field)}")
        gray = np.asarray(load_image(self, context, "image").convert("L"), dtype=np.uint8)
        soft = np.where((gray > 0) & (gray < 255), 255, 0).astype(np.uint8)
        edges = cv2.Canny(gray, threshold1=self.low_threshold, threshold2=self.high_threshold)
        band = np.maximum(soft, edges)
        band = cv2.dilate(band, np.ones((3, 3), np.uint8), iterations=self.edge_size // 2)
        result = Image.fromarray(band, mode="L")
        if self.edge_blur > 0:
            result = result.filter(ImageFilter.BoxBlur(self.edge_blur))
        return save_image(self, context, ImageOps.invert(result), category="mask")


@invocation("mask_combine", title="Combine Masks", tags=["image", "mask", "multiply"], category=_CATEGORY,
            version="1.2.2")
class MaskCombineInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Multiplies two grayscale masks: black in either stays black (the union of the black regions)."""

    mask1: ImageField = InputField(description="The first mask to combine")
    mask2: ImageField = InputField(description="The second image to combine")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import ImageChops

        first = load_image(self, context, "mask1").convert("L")
        second = load_image(self, context, "mask2").convert("L")
        same_size(self, "mask2", second, first, "mask1")
        return save_image(self, context, ImageChops.multiply(first, second), category="mask")


@invocation("mask_from_id", title="Mask from Segmented Image", tags=["image", "mask", "id"], category=_CATEGORY,
            version="1.0.1")
class MaskFromIDInvocation(BaseInvocation, WithMetadata, WithBoard):
    """White where a segmentation map's RGBA colour is within ``threshold`` (Euclidean) of ``color``."""

    image: ImageField = InputField(description="The image to create the mask from")
    color: ColorField = InputField(description="ID color to mask")
    threshold: int = InputField(default=100, description="Threshold for color detection")
    invert: bool = InputField(default=False, description="Whether or not to invert the mask")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        rgba = np.asarray(load_image(self, context, "image", "RGBA"), dtype=np.float64)
        distance = np.linalg.norm(rgba - np.array(self.color.tuple(), dtype=np.float64), axis=-1)
        selected = distance < self.threshold
        if self.invert:
            selected = ~selected
        return save_image(self, context, Image.fromarray(selected.astype(np.uint8) * 255, mode="L"), category="mask")


# Where the fade curve passes (fraction of the fade distance -> fraction of white): flat for the first pixel so
# the kept region grows by one pixel (hides edge artefacts), then an S-shaped ramp to white at the fade distance.
_FADE_CONTROL = ((0.2, 0.2), (0.8, 0.9), (1.0, 1.0))


@invocation("expand_mask_with_fade", title="Expand Mask with Fade", tags=["image", "mask"], category=_CATEGORY,
            version="1.0.1")
class ExpandMaskWithFadeInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Grows the black (keep) region of a mask with a smooth fade to white over ``fade_size_px`` pixels.

    The mask is first cut at ``threshold`` (above: white); a fade of 0 returns the mask unchanged.
    """

    mask: ImageField = InputField(description="The mask to expand")
    threshold: int = InputField(default=0, ge=0, le=255, description="The threshold for the binary mask (0-255)")
    fade_size_px: int = InputField(default=32, ge=0, description="The size of the fade in pixels")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import cv2
        import numpy as np
        from PIL import Image

        mask = load_image(self, context, "mask", "L")
        if self.fade_size_px == 0:
            return save_image(self, context, mask, category="mask")
        white = (np.asarray(mask) > self.threshold).astype(np.uint8)
        # distance of every white pixel to the nearest black one
        distance = cv2.distanceTransform(white, cv2.DIST_L2, 5)
        fraction = np.clip(distance / self.fade_size_px, 0.0, 1.0)
        xs = np.array([0.0, 1.0 / self.fade_size_px, *(x for x, _ in _FADE_CONTROL)])
        ys = np.array([0.0, 0.0, *(y for _, y in _FADE_CONTROL)])
        curve = np.poly1d(np.polyfit(xs, ys, 3))
        feather = np.clip(np.where(fraction >= 1.0, 1.0, curve(fraction)), 0.0, 1.0)
        result = np.where(white == 0, 0, to_uint8(feather, scale=255, rounding="floor")).astype(np.uint8)
        return save_image(self, context, Image.fromarray(result, mode="L"), category="mask")


@invocation("apply_mask_to_image", title="Apply Mask to Image", tags=["image", "mask", "blend"], category=_CATEGORY,
            version="1.0.0")
class ApplyMaskToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Uses a grayscale mask as the image's alpha channel, so the image can be layered over another."""

    image: ImageField = InputField(description="The image from which to extract the masked region")
    mask: ImageField = InputField(description="The mask defining the region (black=keep, white=discard)")
    invert_mask: bool = InputField(default=False, description="Whether to invert the mask before applying it")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import ImageOps

        image = load_image(self, context, "image", "RGBA")
        mask = load_image(self, context, "mask", "L")
        same_size(self, "mask", mask, image, "image")
        result = image.copy()
        result.putalpha(ImageOps.invert(mask) if self.invert_mask else mask)
        return save_image(self, context, result)

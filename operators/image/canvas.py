"""Canvas helper nodes: hand an image to the canvas, paste a generated region back, panel coordinates.

Type strings, versions, fields and outputs follow InvokeAI's `invocations/canvas.py`, the canvas nodes of
`invocations/image.py` and `invocations/image_panels.py`. Pillow and OpenCV are imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Classification,
    InputField,
    OutputField,
    WithBoard,
    WithMetadata,
    invocation,
    invocation_output,
)
from invokeai_provider.core.limits import IMAGE_SIDE
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import fail, load_image, same_size, save_image

if TYPE_CHECKING:
    from PIL.Image import Image

    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "canvas"


@invocation("canvas_output", title="Canvas Output", tags=["canvas", "output", "image"], category=_CATEGORY,
            version="1.0.0", use_cache=False)
class CanvasOutputInvocation(BaseInvocation):
    """Saves a copy of the image as this node's output: the node a canvas workflow sends to the staging area."""

    image: ImageField = InputField(description="The image to process")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        return save_image(self, context, load_image(self, context, "image"))


def paste_mask(mask: "Image", blur: int) -> "Image":
    """The paste mask for a canvas mask (white: keep the source): with ``blur``, the white area is first eroded
    by three ``blur``-sized steps and Gaussian-blurred, so the seam falls inside the generated region; then it is
    inverted, because pasting takes the generated image where the paste mask is white."""
    import numpy as np
    from PIL import Image, ImageFilter, ImageOps

    mask = mask.convert("L")
    if blur > 0:
        import cv2

        eroded = cv2.erode(np.asarray(mask), np.ones((blur, blur), np.uint8), iterations=3)
        mask = Image.fromarray(eroded, mode="L").filter(ImageFilter.GaussianBlur(blur))
    return ImageOps.invert(mask)


@invocation("canvas_paste_back", title="Canvas Paste Back", tags=["image", "combine"], category=_CATEGORY,
            version="1.0.1")
class CanvasPasteBackInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Pastes the target (generated) image onto the source image where the mask is black, with a soft seam."""

    source_image: ImageField = InputField(description="The source image")
    target_image: ImageField = InputField(description="The target image")
    mask: ImageField = InputField(description="The mask to use when pasting")
    mask_blur: int = InputField(default=0, ge=0, description="The amount to blur the mask by")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        source = load_image(self, context, "source_image")
        target = load_image(self, context, "target_image")
        mask = load_image(self, context, "mask")
        same_size(self, "target_image", target, source, "source_image")
        same_size(self, "mask", mask, source, "source_image")
        result = source.copy()
        result.paste(target, (0, 0), paste_mask(mask, self.mask_blur))
        return save_image(self, context, result)


@invocation("canvas_v2_mask_and_crop", title="Canvas V2 Mask and Crop", tags=["image", "mask", "id"],
            category=_CATEGORY, version="1.0.0", classification=Classification.Deprecated)
class CanvasV2MaskAndCropInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Pastes the generated image onto the source where the mask is black; without a source, returns the
    generated image made transparent where the mask is white."""

    source_image: Optional[ImageField] = InputField(
        default=None, description="The source image onto which the masked generated image is pasted. If omitted, "
                                  "the masked generated image is returned with transparency.")
    generated_image: ImageField = InputField(description="The image to apply the mask to")
    mask: ImageField = InputField(description="The mask to apply")
    mask_blur: int = InputField(default=0, ge=0, description="The amount to blur the mask by")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        generated = load_image(self, context, "generated_image")
        mask = load_image(self, context, "mask")
        same_size(self, "mask", mask, generated, "generated_image")
        alpha = paste_mask(mask, self.mask_blur)
        if self.source_image is None:
            result = generated.convert("RGBA") if generated.mode not in ("RGBA", "LA", "L", "RGB") else generated.copy()
            result.putalpha(alpha)
            return save_image(self, context, result)
        source = load_image(self, context, "source_image")
        same_size(self, "generated_image", generated, source, "source_image")
        result = source.copy()
        result.paste(generated, (0, 0), alpha)
        return save_image(self, context, result)


@invocation_output("image_panel_coordinate_output")
class ImagePanelCoordinateOutput(BaseInvocationOutput):
    """Where one panel of a grid lies in the whole image."""

    x_left: int = OutputField(description="The left x-coordinate of the panel.")
    y_top: int = OutputField(description="The top y-coordinate of the panel.")
    width: int = OutputField(description="The width of the panel.")
    height: int = OutputField(description="The height of the panel.")


@invocation("image_panel_layout", title="Image Panel Layout", tags=["image", "panel", "layout"], category=_CATEGORY,
            version="1.0.0", classification=Classification.Prototype)
class ImagePanelLayoutInvocation(BaseInvocation):
    """The rectangle of one cell of an even ``num_cols`` x ``num_rows`` grid over the image (a remainder that
    does not divide evenly is left out of every panel)."""

    width: int = InputField(description="The width of the entire grid.", limit=IMAGE_SIDE)
    height: int = InputField(description="The height of the entire grid.", limit=IMAGE_SIDE)
    num_cols: int = InputField(default=1, ge=1, description="The number of columns in the grid.")
    num_rows: int = InputField(default=1, ge=1, description="The number of rows in the grid.")
    panel_col_idx: int = InputField(default=0, ge=0, description="The column index of the panel to be processed.")
    panel_row_idx: int = InputField(default=0, ge=0, description="The row index of the panel to be processed.")

    def invoke(self, context: "InvocationContext") -> ImagePanelCoordinateOutput:
        # checked here, not when the node is built: the counts may arrive on edges after the indices are set
        if self.panel_col_idx >= self.num_cols:
            raise fail(self, "panel_col_idx", f"expected a column index between 0 and {self.num_cols - 1}, "
                                              f"got {self.panel_col_idx}")
        if self.panel_row_idx >= self.num_rows:
            raise fail(self, "panel_row_idx", f"expected a row index between 0 and {self.num_rows - 1}, "
                                              f"got {self.panel_row_idx}")
        panel_width, panel_height = self.width // self.num_cols, self.height // self.num_rows
        return ImagePanelCoordinateOutput(x_left=self.panel_col_idx * panel_width,
                                          y_top=self.panel_row_idx * panel_height, width=panel_width,
                                          height=panel_height)

"""Image operation nodes: blank images, crop / pad / paste, resize, pixel arithmetic, blur, channels,
noise, bounding boxes, export, and the layer blend and chroma-key compositor.

Type strings, versions, fields and defaults follow InvokeAI's image.py and composition-nodes.py; the
pixel work is written here with Pillow and numpy (the blend's colour spaces in ``models/image_util/color``),
imported inside ``invoke()`` so DAG parsing stays light. Every image-producing node saves through
``io.save_image``, so its ``metadata`` and ``board`` inputs land in the PNG and the image record as in InvokeAI.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Optional

from invokeai_provider.core.fields import BoundingBoxField, ColorField, ImageField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    InputField,
    WithBoard,
    WithMetadata,
    invocation,
)
from invokeai_provider.core.limits import IMAGE_SIDE, size_problem
from invokeai_provider.models.image_util.arrays import to_uint8
from invokeai_provider.models.image_util.color import (
    cielch_from_linear,
    hsl_from_srgb,
    hsv_from_srgb,
    linear_from_cielch,
    linear_from_oklab,
    linear_from_srgb,
    oklab_from_linear,
    oklab_from_oklch,
    oklch_from_oklab,
    srgb_from_hsl,
    srgb_from_hsv,
    srgb_from_linear,
)
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import PNG_MODES, fail, load_image, save_image

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "image"
SEED_MAX = 2**32 - 1  # InvokeAI's SEED_MAX: the largest uint32

IMAGE_MODES = Literal["L", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"]

PIL_RESAMPLING_MODES = Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"]

IMAGE_CHANNELS = Literal["A", "R", "G", "B"]

COLOR_CHANNELS = Literal[
    "Red (RGBA)", "Green (RGBA)", "Blue (RGBA)", "Alpha (RGBA)",
    "Cyan (CMYK)", "Magenta (CMYK)", "Yellow (CMYK)", "Black (CMYK)",
    "Hue (HSV)", "Saturation (HSV)", "Value (HSV)",
    "Luminosity (LAB)", "A (LAB)", "B (LAB)",
    "Y (YCbCr)", "Cb (YCbCr)", "Cr (YCbCr)",
]
# channel option -> (PIL mode it lives in, band index)
_CHANNEL_BANDS: dict[str, tuple[str, int]] = {
    option: (option[option.index("(") + 1:-1], index)
    for options in (
        ("Red (RGBA)", "Green (RGBA)", "Blue (RGBA)", "Alpha (RGBA)"),
        ("Cyan (CMYK)", "Magenta (CMYK)", "Yellow (CMYK)", "Black (CMYK)"),
        ("Hue (HSV)", "Saturation (HSV)", "Value (HSV)"),
        ("Luminosity (LAB)", "A (LAB)", "B (LAB)"),
        ("Y (YCbCr)", "Cb (YCbCr)", "Cr (YCbCr)"),
    )
    for index, option in enumerate(options)
}

BLEND_MODES = Literal[
    "Normal", "Lighten Only", "Darken Only", "Lighten Only (EAL)", "Darken Only (EAL)",
    "Hue", "Saturation", "Color", "Luminosity", "Linear Dodge (Add)", "Subtract", "Multiply", "Divide",
    "Screen", "Overlay", "Linear Burn", "Difference", "Hard Light", "Soft Light", "Vivid Light",
    "Linear Light", "Color Burn", "Color Dodge",
]
BLEND_COLOR_SPACES = Literal[
    "RGB", "Linear RGB", "HSL (RGB)", "HSV (RGB)", "Okhsl", "Okhsv", "Oklch (Oklab)", "LCh (CIELab)"
]


def _resample(name: str) -> int:
    from PIL import Image

    return {
        "nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
        "hamming": Image.Resampling.HAMMING, "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
    }[name]


def _alpha_of(image: "Image") -> Optional["Image"]:
    return image.getchannel("A") if image.mode in ("RGBA", "LA", "PA") else None


def _fit_to(image: "Image", size: tuple[int, int], fit_width: bool, fit_height: bool, pad_color: Any) -> "Image":
    """Scales a layer onto a base of ``size`` as InvokeAI's blend and compositor do.

    Both flags stretch; otherwise the flag that matches the aspect ratios letterboxes (pad) and the
    other crops to fill (fit); neither leaves the layer as it is.
    """
    from PIL import ImageOps

    base_aspect = size[0] / size[1]
    aspect = image.width / image.height
    if fit_width and fit_height:
        return image.resize(size)
    if (fit_width and base_aspect < aspect) or (fit_height and aspect <= base_aspect):
        return ImageOps.pad(image, size, color=pad_color)
    if (fit_width and aspect <= base_aspect) or (fit_height and base_aspect < aspect):
        return ImageOps.fit(image, size)
    return image


# --- passing on, creating -----------------------------------------------------------------------------


@invocation("show_image", title="Show Image", tags=["image"], category=_CATEGORY, version="1.0.1")
class ShowImageInvocation(BaseInvocation):
    """Passes an image on. InvokeAI opens it in the OS viewer; a worker has no screen, so it is logged."""

    image: ImageField = InputField(description="The image to show")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        image = load_image(self, context, "image")
        context.logger.info("%s: image %s (%dx%d)", self.id, self.image.image_name, image.width, image.height)
        return ImageOutput(image=ImageField(image_name=self.image.image_name), width=image.width, height=image.height)


@invocation("blank_image", title="Blank Image", tags=["image"], category=_CATEGORY, version="1.2.2")
class BlankImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Creates an image of one colour (the colour's alpha is ignored in RGB mode)."""

    width: int = InputField(default=512, description="The width of the image", limit=IMAGE_SIDE)
    height: int = InputField(default=512, description="The height of the image", limit=IMAGE_SIDE)
    mode: Literal["RGB", "RGBA"] = InputField(default="RGB", description="The mode of the image")
    color: ColorField = InputField(default=ColorField(r=0, g=0, b=0, a=255), description="The color of the image")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        for field in ("width", "height"):
            if getattr(self, field) <= 0:
                raise fail(self, field, f"expected a positive number of pixels, got {getattr(self, field)}")
        color = self.color.tuple()
        image = Image.new(self.mode, (self.width, self.height), color if self.mode == "RGBA" else color[:3])
        return save_image(self, context, image)


# --- geometry -------------------------------------------------------------------------------------------


@invocation("img_crop", title="Crop Image", tags=["image", "crop"], category=_CATEGORY, version="1.2.2")
class ImageCropInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Cuts a rectangle out of an image; parts of the rectangle outside the image are transparent."""

    image: ImageField = InputField(description="The image to crop")
    x: int = InputField(default=0, description="The left x coordinate of the crop rectangle")
    y: int = InputField(default=0, description="The top y coordinate of the crop rectangle")
    width: int = InputField(default=512, gt=0, description="The width of the crop rectangle", limit=IMAGE_SIDE)
    height: int = InputField(default=512, gt=0, description="The height of the crop rectangle", limit=IMAGE_SIDE)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        image = load_image(self, context, "image")
        canvas = Image.new("RGBA", (self.width, self.height), (0, 0, 0, 0))
        canvas.paste(image, (-self.x, -self.y))
        return save_image(self, context, canvas)


_PAD = "Number of pixels to pad/crop from the {} (negative values crop inwards, positive values pad outwards)"


@invocation("img_pad_crop", title="Center Pad or Crop Image", tags=["image", "pad", "crop"], category=_CATEGORY,
            version="1.0.0")
class CenterPadCropInvocation(BaseInvocation):
    """Grows (positive) or shrinks (negative) each side of an image; new area is transparent."""

    image: ImageField = InputField(description="The image to crop")
    left: int = InputField(default=0, description=_PAD.format("left"))
    right: int = InputField(default=0, description=_PAD.format("right"))
    top: int = InputField(default=0, description=_PAD.format("top"))
    bottom: int = InputField(default=0, description=_PAD.format("bottom"))

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        image = load_image(self, context, "image")
        width = image.width + self.left + self.right
        height = image.height + self.top + self.bottom
        if width <= 0:
            raise fail(self, "left", f"left + right ({self.left} + {self.right}) crops away the whole "
                                      f"{image.width}px width; expected a positive result width")
        if height <= 0:
            raise fail(self, "top", f"top + bottom ({self.top} + {self.bottom}) crops away the whole "
                                     f"{image.height}px height; expected a positive result height")
        canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        canvas.paste(image, (self.left, self.top))
        return save_image(self, context, canvas)


@invocation("img_paste", title="Paste Image", tags=["image", "paste"], category=_CATEGORY, version="1.2.2")
class ImagePasteInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Lays an image over a base image at (x, y); the canvas grows to hold both unless ``crop``.

    As in InvokeAI the mask is inverted: the image shows where the mask is black.
    """

    base_image: ImageField = InputField(description="The base image")
    image: ImageField = InputField(description="The image to paste")
    mask: Optional[ImageField] = InputField(default=None, description="The mask to use when pasting")
    x: int = InputField(default=0, description="The left x coordinate at which to paste the image")
    y: int = InputField(default=0, description="The top y coordinate at which to paste the image")
    crop: bool = InputField(default=False, description="Crop to base image dimensions")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image, ImageOps

        base = load_image(self, context, "base_image", mode="RGBA")
        image = load_image(self, context, "image", mode="RGBA")
        mask = None
        if self.mask is not None:
            mask = ImageOps.invert(load_image(self, context, "mask", mode="L"))
            if mask.size != image.size:
                raise fail(self, "mask", f"expected the size of the pasted image {image.size}, got {mask.size}")
        left, top = min(0, self.x), min(0, self.y)
        right = max(base.width, self.x + image.width)
        bottom = max(base.height, self.y + image.height)
        size = (right - left, bottom - top)
        canvas = Image.new("RGBA", size, (0, 0, 0, 0))
        canvas.paste(base, (-left, -top))
        layer = Image.new("RGBA", size, (0, 0, 0, 0))
        layer.paste(image, (self.x - left, self.y - top), mask=mask)
        result = Image.alpha_composite(canvas, layer)
        if self.crop:
            result = result.crop((-left, -top, -left + base.width, -top + base.height))
        return save_image(self, context, result)


@invocation("img_resize", title="Resize Image", tags=["image", "resize"], category=_CATEGORY, version="1.2.2")
class ImageResizeInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Resizes an image to an exact width and height."""

    image: ImageField = InputField(description="The image to resize")
    width: int = InputField(default=512, gt=0, description="The width to resize to (px)", limit=IMAGE_SIDE)
    height: int = InputField(default=512, gt=0, description="The height to resize to (px)", limit=IMAGE_SIDE)
    resample_mode: PIL_RESAMPLING_MODES = InputField(default="bicubic", description="The resampling mode")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        image = load_image(self, context, "image")
        resized = image.resize((self.width, self.height), resample=_resample(self.resample_mode))
        return save_image(self, context, resized)


@invocation("img_scale", title="Scale Image", tags=["image", "scale"], category=_CATEGORY, version="1.2.2")
class ImageScaleInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Resizes an image by a factor (sizes rounded down, as InvokeAI does)."""

    image: ImageField = InputField(description="The image to scale")
    scale_factor: float = InputField(default=2.0, gt=0, description="The factor by which to scale the image")
    resample_mode: PIL_RESAMPLING_MODES = InputField(default="bicubic", description="The resampling mode")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        image = load_image(self, context, "image")
        width, height = int(image.width * self.scale_factor), int(image.height * self.scale_factor)
        if width < 1 or height < 1:
            raise fail(self, "scale_factor", f"{self.scale_factor} scales the {image.width}x{image.height} image to "
                                              f"{width}x{height}; expected a factor leaving at least one pixel")
        too_large = size_problem(width, height)
        if too_large:
            raise fail(self, "scale_factor", f"{self.scale_factor} scales the {image.width}x{image.height} image to "
                                              f"{too_large}")
        return save_image(self, context, image.resize((width, height), resample=_resample(self.resample_mode)))


def _bbox(box: BoundingBoxField) -> tuple[int, int, int, int]:
    return (box.x_min, box.y_min, box.x_max, box.y_max)


@invocation("crop_image_to_bounding_box", title="Crop Image to Bounding Box", tags=["image", "crop"],
            category=_CATEGORY, version="1.0.0")
class CropImageToBoundingBoxInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Crops to a bounding box, or, without one, to the image's non-transparent (non-zero) pixels."""

    image: ImageField = InputField(description="The image to crop")
    bounding_box: Optional[BoundingBoxField] = InputField(default=None,
                                                          description="The bounding box to crop the image to")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        image = load_image(self, context, "image")
        if self.bounding_box is not None:
            box = _bbox(self.bounding_box)
            if box[2] <= box[0] or box[3] <= box[1]:
                raise fail(self, "bounding_box", f"expected x_max > x_min and y_max > y_min, got {box}")
        else:
            box = image.getbbox()  # None when every pixel is empty: the whole image is kept
        return save_image(self, context, image.crop(box))


@invocation("paste_image_into_bounding_box", title="Paste Image into Bounding Box", tags=["image", "crop"],
            category=_CATEGORY, version="1.0.0")
class PasteImageIntoBoundingBoxInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Pastes an image of the box's size into the box of a target image, through its own alpha."""

    source_image: ImageField = InputField(description="The image to paste")
    target_image: ImageField = InputField(description="The image to paste into")
    bounding_box: BoundingBoxField = InputField(description="The bounding box to paste the image into")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        source = load_image(self, context, "source_image", mode="RGBA")
        target = load_image(self, context, "target_image", mode="RGBA")
        box = _bbox(self.bounding_box)
        size = (box[2] - box[0], box[3] - box[1])
        if size != source.size:
            raise fail(self, "bounding_box", f"expected a box the size of source_image {source.size}, got {size}")
        if box[2] > target.width or box[3] > target.height:
            raise fail(self, "bounding_box", f"expected a box inside target_image {target.size}, got {box}")
        target.paste(source, box, source)
        return save_image(self, context, target)


# --- pixel arithmetic -----------------------------------------------------------------------------------


@invocation("img_mul", title="Multiply Images", tags=["image", "multiply"], category=_CATEGORY, version="1.2.2")
class ImageMultiplyInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Multiplies two images pixel by pixel (a * b / 255), over the area they share."""

    image1: ImageField = InputField(description="The first image to multiply")
    image2: ImageField = InputField(description="The second image to multiply")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import ImageChops

        first = load_image(self, context, "image1")
        second = load_image(self, context, "image2", mode=first.mode)
        return save_image(self, context, ImageChops.multiply(first, second))


@invocation("img_lerp", title="Lerp Image", tags=["image", "lerp"], category=_CATEGORY, version="1.2.2")
class ImageLerpInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Maps every value from 0..255 onto min..max."""

    image: ImageField = InputField(description="The image to lerp")
    min: int = InputField(default=0, ge=0, le=255, description="The minimum output value")
    max: int = InputField(default=255, ge=0, le=255, description="The maximum output value")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        image = load_image(self, context, "image")
        values = np.asarray(image, dtype=np.float32) / 255.0 * (self.max - self.min) + self.min
        return save_image(self, context, Image.fromarray(values.astype(np.uint8)))  # truncated, as InvokeAI


@invocation("img_ilerp", title="Inverse Lerp Image", tags=["image", "ilerp"], category=_CATEGORY, version="1.2.2")
class ImageInverseLerpInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Stretches min..max onto 0..255, clamping outside; min == max thresholds at min."""

    image: ImageField = InputField(description="The image to lerp")
    min: int = InputField(default=0, ge=0, le=255, description="The minimum input value")
    max: int = InputField(default=255, ge=0, le=255, description="The maximum input value")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np

        image = load_image(self, context, "image")
        values = np.asarray(image, dtype=np.float32)
        if self.max == self.min:
            scaled = np.where(values > self.min, 255.0, 0.0)
        else:
            scaled = np.clip(np.maximum(values - self.min, 0) / float(self.max - self.min), 0, 1) * 255
        return save_image(self, context, to_uint8(scaled, scale=1, rounding="floor"))


# --- filters --------------------------------------------------------------------------------------------


@invocation("img_blur", title="Blur Image", tags=["image", "blur"], category=_CATEGORY, version="1.2.2")
class ImageBlurInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Blurs with premultiplied alpha, so transparent pixels do not bleed their colour into the edges."""

    image: ImageField = InputField(description="The image to blur")
    radius: float = InputField(default=8.0, ge=0, description="The blur radius")
    blur_type: Literal["gaussian", "box"] = InputField(default="gaussian", description="The type of blur")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image, ImageFilter

        image = load_image(self, context, "image", mode="RGBA")
        pixels = np.asarray(image, dtype=np.float32)
        alpha = pixels[..., 3:] / 255.0
        premultiplied = np.concatenate([pixels[..., :3] * alpha, pixels[..., 3:]], axis=-1)
        blur = ImageFilter.GaussianBlur(self.radius) if self.blur_type == "gaussian" else ImageFilter.BoxBlur(self.radius)
        blurred = np.asarray(Image.fromarray(to_uint8(premultiplied, scale=1), "RGBA").filter(blur), dtype=np.float32)
        blurred_alpha = blurred[..., 3:] / 255.0
        rgb = blurred[..., :3] / (blurred_alpha + 1e-6)
        result = np.concatenate([to_uint8(rgb, scale=1, rounding="floor"), blurred[..., 3:].astype(np.uint8)], axis=-1)
        return save_image(self, context, Image.fromarray(result, "RGBA"))


@invocation("unsharp_mask", title="Unsharp Mask", tags=["image", "unsharp_mask"], category=_CATEGORY,
            version="1.2.2")
class UnsharpMaskInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Sharpens by adding back strength% of the difference from a Gaussian blur; alpha is kept."""

    image: ImageField = InputField(description="The image to use")
    radius: float = InputField(default=2, gt=0, description="Unsharp mask radius")
    strength: float = InputField(default=50, ge=0, description="Unsharp mask strength")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image, ImageFilter

        image = load_image(self, context, "image")
        mode, alpha = image.mode, _alpha_of(image)
        rgb = image.convert("RGB")
        blurred = np.asarray(rgb.filter(ImageFilter.GaussianBlur(radius=self.radius)), dtype=np.float64) / 255
        values = np.asarray(rgb, dtype=np.float64) / 255
        sharpened = values + (values - blurred) * (self.strength / 100.0)
        result = Image.fromarray(to_uint8(sharpened, scale=255, rounding="floor"))
        if alpha is not None:
            result = result.convert({"RGBA": "RGB", "LA": "L", "PA": "P"}[mode])
            result.putalpha(alpha)
        else:
            result = result.convert(mode)
        return save_image(self, context, result)


@invocation("img_noise", title="Add Image Noise", tags=["image", "noise"], category=_CATEGORY, version="1.1.0")
class ImageNoiseInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Blends seeded Gaussian or salt-and-pepper noise into an image, optionally only where a mask is black."""

    image: ImageField = InputField(description="The image to add noise to")
    mask: Optional[ImageField] = InputField(
        default=None, description="Optional mask determining where to apply noise (black=noise, white=no noise)")
    seed: int = InputField(default=0, ge=0, le=SEED_MAX, description="Seed for random number generation")
    noise_type: Literal["gaussian", "salt_and_pepper"] = InputField(default="gaussian",
                                                                    description="The type of noise to add")
    amount: float = InputField(default=0.1, ge=0, le=1, description="The amount of noise to add")
    noise_color: bool = InputField(default=True, description="Whether to add colored noise")
    size: int = InputField(default=1, ge=1, description="The size of the noise points")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image, ImageOps

        image = load_image(self, context, "image", mode="RGBA")
        alpha = image.getchannel("A")
        # The same generator InvokeAI seeds, so a seed gives the same noise field.
        rng = np.random.RandomState(np.random.MT19937(np.random.SeedSequence(self.seed)))
        shape = (max(1, image.height // self.size), max(1, image.width // self.size))
        if self.noise_color:
            shape = (*shape, 3)
        if self.noise_type == "gaussian":
            noise = rng.normal(0, 1, shape) * 255
        else:
            noise = rng.choice([0, 255], shape, p=[1 - self.amount, self.amount])
        if not self.noise_color:
            noise = np.stack([noise] * 3, axis=-1)
        noise_image = Image.fromarray(to_uint8(noise, scale=1, rounding="floor"), "RGB").resize(
            image.size, Image.Resampling.NEAREST)
        noisy = Image.blend(image.convert("RGB"), noise_image, self.amount).convert("RGBA")
        if self.mask is not None:
            mask = load_image(self, context, "mask", mode="L")
            if mask.size != image.size:
                mask = mask.resize(image.size, Image.Resampling.LANCZOS)
            result = image.copy()
            result.paste(noisy, (0, 0), mask=ImageOps.invert(mask))
        else:
            result = noisy
        result.putalpha(alpha)
        return save_image(self, context, result)


# --- modes and channels ---------------------------------------------------------------------------------


@invocation("img_chan", title="Extract Image Channel", tags=["image", "channel"], category=_CATEGORY,
            version="1.2.2")
class ImageChannelInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Extracts one channel of an image as a greyscale image."""

    image: ImageField = InputField(description="The image to get the channel from")
    channel: IMAGE_CHANNELS = InputField(default="A", description="The channel to get")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        image = load_image(self, context, "image")
        if self.channel not in image.getbands():
            raise fail(self, "channel", f"the image (mode {image.mode}) has no channel {self.channel!r}; "
                                         f"expected one of {', '.join(image.getbands())}")
        return save_image(self, context, image.getchannel(self.channel))


@invocation("img_conv", title="Convert Image Mode", tags=["image", "convert"], category=_CATEGORY, version="1.2.2")
class ImageConvertInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Converts an image to another PIL mode (only modes a PNG can hold can be stored)."""

    image: ImageField = InputField(description="The image to convert")
    mode: IMAGE_MODES = InputField(default="L", description="The mode to convert to")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        if self.mode not in (*PNG_MODES, "I"):
            raise fail(self, "mode", f"mode {self.mode!r} cannot be stored as PNG; expected one of "
                                      f"{', '.join(m for m in ('L', 'RGB', 'RGBA', 'I'))}")
        return save_image(self, context, load_image(self, context, "image").convert(self.mode))


@invocation("img_hue_adjust", title="Adjust Image Hue", tags=["image", "hue"], category=_CATEGORY, version="1.2.2")
class ImageHueAdjustmentInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Rotates hue in PIL's HSV space (0..255 hue steps); the result is opaque RGBA, as in InvokeAI."""

    image: ImageField = InputField(description="The image to adjust")
    hue: int = InputField(default=0, description="The degrees by which to rotate the hue, 0-360")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        hsv = np.array(load_image(self, context, "image").convert("HSV"))
        shift = int(256 * ((self.hue % 360) / 360))
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 256
        return save_image(self, context, Image.fromarray(hsv, "HSV").convert("RGBA"))


_CHANNEL_TAGS = ["red", "green", "blue", "alpha", "cyan", "magenta", "yellow", "black", "hue", "saturation",
                 "luminosity", "value"]


def _edit_channel(node: BaseInvocation, context: "InvocationContext", channel: str, edit: Any) -> ImageOutput:
    """Applies ``edit`` (float array -> float array) to one band of the image in that band's mode."""
    import numpy as np
    from PIL import Image

    image = load_image(node, context, "image", mode="RGBA")
    mode, band = _CHANNEL_BANDS[channel]
    converted = np.array(image.convert(mode)).astype(np.float64)
    converted[..., band] = edit(converted[..., band])
    result = Image.fromarray(to_uint8(converted, scale=1, rounding="floor"), mode).convert("RGBA")
    if channel != "Alpha (RGBA)":
        result.putalpha(image.getchannel("A"))
    return save_image(node, context, result)


@invocation("img_channel_offset", title="Offset Image Channel", tags=["image", "offset", *_CHANNEL_TAGS],
            category=_CATEGORY, version="1.2.3")
class ImageChannelOffsetInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Adds a value to one channel (clamped; hue wraps around)."""

    image: ImageField = InputField(description="The image to adjust")
    channel: COLOR_CHANNELS = InputField(description="Which channel to adjust")
    offset: int = InputField(default=0, ge=-255, le=255, description="The amount to adjust the channel by")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np

        if self.channel == "Hue (HSV)":
            return _edit_channel(self, context, self.channel, lambda v: (v + self.offset) % 256)
        return _edit_channel(self, context, self.channel, lambda v: np.clip(v + self.offset, 0, 255))


@invocation("img_channel_multiply", title="Multiply Image Channel",
            tags=["image", "invert", "scale", "multiply", *_CHANNEL_TAGS], category=_CATEGORY, version="1.2.3")
class ImageChannelMultiplyInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Scales one channel (clamped to 0..255), optionally inverting it afterwards."""

    image: ImageField = InputField(description="The image to adjust")
    channel: COLOR_CHANNELS = InputField(description="Which channel to adjust")
    scale: float = InputField(default=1.0, ge=0.0, description="The amount to scale the channel by.")
    invert_channel: bool = InputField(default=False, description="Invert the channel after scaling")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np

        def edit(values: "np.ndarray") -> "np.ndarray":
            scaled = np.clip(values * self.scale, 0, 255)
            return 255 - scaled if self.invert_channel else scaled

        return _edit_channel(self, context, self.channel, edit)


# --- export ---------------------------------------------------------------------------------------------


def _run_store(context: "InvocationContext") -> Any:
    """The run's artifact store (the context has no public accessor for it yet)."""
    return context.images._scope.run.store  # noqa: SLF001


@invocation("save_image_to_file", title="Save Image (Gallery + File Export)", tags=["image", "export", "file", "save"],
            category=_CATEGORY, version="1.0.0", use_cache=False)
class SaveImageToFileInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Saves an image like save_image and also exports a copy named ``{prefix}{uuid}{suffix}.{file_format}``.

    InvokeAI writes the copy below its outputs folder; here the outputs folder is the run's ``exports/``
    prefix in the artifact store, so the copy lands beside the run's images (locally or on S3).
    ``uuid`` is the stem of the gallery image's name, which ties the copy to its gallery entry.
    """

    image: ImageField = InputField(description="The image to save and export")
    output_directory: str = InputField(
        default="", description="Target subdirectory (relative to the run's exports folder) for the exported file. "
                                "Nested paths like 'exports/2026' are allowed; absolute paths and '..' are not.")
    prefix: str = InputField(default="", description="Text prepended to the UUID in the exported filename.")
    suffix: str = InputField(default="", description="Text appended to the UUID (before the extension).")
    file_format: Literal["png", "jpg", "webp"] = InputField(
        default="png", description="File format for the exported file. PNG is lossless; JPG/WEBP respect 'quality'.")
    quality: int = InputField(default=95, ge=1, le=100,
                              description="Compression quality for JPG and WEBP (1-100). Ignored for PNG.")

    def _directory(self) -> list[str]:
        from invokeai_provider.storage.base import _SEGMENT

        raw = self.output_directory.replace("\\", "/")
        if raw.startswith("/") or (len(raw) >= 2 and raw[0].isalpha() and raw[1] == ":"):
            raise fail(self, "output_directory", f"absolute paths are not allowed, got {self.output_directory!r}; "
                                                  "expected a path relative to the exports folder")
        parts = [part for part in raw.split("/") if part not in ("", ".")]
        for part in parts:
            if part == ".." or not _SEGMENT.match(part):
                raise fail(self, "output_directory", f"invalid path segment {part!r} in {self.output_directory!r}; "
                                                      "expected letters, digits and ._=+@:- (no '..')")
        return parts

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import io
        from pathlib import PurePosixPath

        from invokeai_provider.storage.base import _SEGMENT, check_key

        directory = self._directory()
        image = load_image(self, context, "image")
        output = save_image(self, context, image)
        filename = f"{self.prefix}{PurePosixPath(output.image.image_name).stem}{self.suffix}.{self.file_format}"
        if "/" in filename or "\\" in filename or not _SEGMENT.match(filename):
            raise fail(self, "prefix" if self.prefix else "suffix",
                        f"the export file name {filename!r} is not a safe file name; expected letters, digits and "
                        "._=+@:- in prefix and suffix")
        buffer = io.BytesIO()
        if self.file_format == "png":
            image.save(buffer, format="PNG")
        elif self.file_format == "jpg":
            image.convert("RGB").save(buffer, format="JPEG", quality=self.quality)
        else:
            image.save(buffer, format="WEBP", quality=self.quality)
        store = _run_store(context)
        key = check_key("/".join([store.prefix, "exports", *directory, filename]))
        store.backend.write_bytes(key, buffer.getvalue())
        context.logger.info("%s: exported %s", self.id, store.backend.uri(key))
        return output


# --- composition ----------------------------------------------------------------------------------------


@invocation("invokeai_img_composite", title="Image Compositor", tags=["image", "compose", "chroma", "key"],
            category=_CATEGORY, version="1.2.0")
class InvokeImageCompositorInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Keys out a subject's plain backdrop (by colour, or by flood fill from the corners) and lays the
    subject over a background."""

    image_subject: ImageField = InputField(description="Image of the subject on a plain monochrome background")
    image_background: ImageField = InputField(description="Image of a background scene")
    chroma_key: str = InputField(default="", description="Can be empty for corner flood select, or CSS-3 color or tuple")
    threshold: int = InputField(default=50, ge=0, description="Subject isolation flood-fill threshold")
    fill_x: bool = InputField(default=False, description="Scale base subject image to fit background width")
    fill_y: bool = InputField(default=True, description="Scale base subject image to fit background height")
    x_offset: int = InputField(default=0, description="x-offset for the subject")
    y_offset: int = InputField(default=0, description="y-offset for the subject")

    def _key_color(self) -> tuple[int, ...]:
        import ast

        from PIL import ImageColor

        text = self.chroma_key.strip()
        try:
            if text.startswith("("):
                values = tuple(int(v) for v in ast.literal_eval(text))
                if not 1 <= len(values) <= 4:
                    raise ValueError("expected 1 to 4 components")
                values = values + (0,) * (3 - len(values)) if len(values) < 3 else values
                return values + (255,) if len(values) == 3 else values
            return tuple(ImageColor.getcolor(text, "RGBA"))  # type: ignore[arg-type]
        except (ValueError, TypeError, SyntaxError) as exc:
            raise fail(self, "chroma_key", f"expected a CSS-3 colour or an (r, g, b[, a]) tuple, got "
                                            f"{self.chroma_key!r} ({exc})") from None

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image, ImageChops, ImageDraw

        background = load_image(self, context, "image_background", mode="RGBA")
        subject = load_image(self, context, "image_subject", mode="RGBA")
        if self.chroma_key.strip():
            key = np.array(self._key_color(), dtype=np.float64)
            pixels = np.array(subject)
            distance = ((pixels[..., :len(key)].astype(np.float64) - key) ** 2).sum(axis=-1)
            pixels[distance < float(self.threshold) ** 2] = 0
            subject = Image.fromarray(pixels, "RGBA")
        else:
            for corner in ((0, 0), (0, subject.height - 1), (subject.width - 1, 0),
                           (subject.width - 1, subject.height - 1)):
                ImageDraw.floodfill(subject, corner, (0, 0, 0, 0), thresh=self.threshold)
        subject = _fit_to(subject, background.size, self.fill_x, self.fill_y, (0, 0, 0, 0))
        if subject.size != background.size:
            raise fail(self, "fill_y", f"with fill_x and fill_y both off the subject {subject.size} must already "
                                        f"be the background's size {background.size}")
        if self.x_offset or self.y_offset:
            subject = ImageChops.offset(subject, self.x_offset, -self.y_offset)  # wraps around, y up
        return save_image(self, context, Image.alpha_composite(background, subject))


# --- layer blend (arrays are [H, W, 3] floats) ------------------------------------------------------------


# space -> (from sRGB, to linear sRGB, lightness index, saturation index, hue index, hue period)
def _blend_spaces() -> dict[str, tuple[Any, Any, Optional[int], Optional[int], Optional[int], Optional[float]]]:
    return {
        "RGB": (lambda s: s, linear_from_srgb, None, None, None, None),
        "Linear": (linear_from_srgb, lambda t: t, None, None, None, None),
        "HSL": (hsl_from_srgb, lambda t: linear_from_srgb(srgb_from_hsl(t)), 2, 1, 0, 360.0),
        "HSV": (hsv_from_srgb, lambda t: linear_from_srgb(srgb_from_hsv(t)), 2, 1, 0, 360.0),
        "Oklch": (lambda s: oklch_from_oklab(oklab_from_linear(linear_from_srgb(s))),
                  lambda t: linear_from_oklab(oklab_from_oklch(t), exact_inverse=True), 0, 1, 2, 360.0),
        "LCh": (lambda s: cielch_from_linear(linear_from_srgb(s)), linear_from_cielch, 0, 1, 2, 2 * math.pi),
    }


def _blend_values(mode: str, upper: "np.ndarray", lower: "np.ndarray", light: Optional[int], sat: Optional[int],
                  hue: Optional[int], period: Optional[float]) -> tuple["np.ndarray", bool]:
    """The blended pixels in the working space, and whether InvokeAI clips them to the gamut afterwards.

    Per-channel formulas act on every channel in RGB spaces and on the lightness channel alone in the
    polar spaces, as InvokeAI's blend does.
    """
    import numpy as np

    def on_lightness(formula: Any, target: "np.ndarray") -> "np.ndarray":
        if light is None:
            return formula(upper, lower)
        result = target.copy()
        result[..., light] = formula(upper[..., light], lower[..., light])
        return result

    def wrap_hue(values: "np.ndarray") -> "np.ndarray":
        if hue is not None:
            values[..., hue] = np.remainder(values[..., hue], period)
        return values

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if mode == "Normal":
            return upper, False
        if mode == "Multiply":
            return lower * upper, False
        if mode == "Screen":
            return 1 - (1 - upper) * (1 - lower), False
        if mode in ("Overlay", "Hard Light"):
            def overlay(u: Any, lo: Any) -> Any:
                test = lo if mode == "Overlay" else u
                return np.where(test < 0.5, 2 * lo * u, 1 - 2 * (1 - lo) * (1 - u))
            return on_lightness(overlay, upper), True
        if mode == "Soft Light":
            def soft(u: Any, lo: Any) -> Any:
                g = np.where(lo <= 0.25, ((16 * lo - 12) * lo + 4) * lo, np.sqrt(np.maximum(lo, 0)))
                return np.where(u <= 0.5, lo - (1 - lo) * lo * (1 - 2 * u), lo + (2 * u - 1) * (g - lo))
            return on_lightness(soft, lower), True
        if mode == "Linear Dodge (Add)":
            return wrap_hue(lower + upper), True
        if mode == "Subtract":
            return wrap_hue(lower - upper), True
        if mode == "Divide":
            return wrap_hue(lower / upper), True
        if mode == "Color Dodge":
            return wrap_hue(lower / (1 - upper)), True
        if mode == "Difference":
            return np.abs(lower - upper), True
        if mode == "Linear Burn":
            return on_lightness(lambda u, lo: lo + u - 1, lower), True
        if mode == "Linear Light":
            return on_lightness(lambda u, lo: lo + 2 * u - 1, lower), True
        if mode == "Color Burn":
            return 1 - np.minimum((1 - lower) / upper, 1.0), True
        if mode == "Vivid Light":
            return on_lightness(lambda u, lo: np.where(u < 0.5, (1 - (1 - lo) / u) / 2, lo / (1 - u) / 2), lower), True
        if mode in ("Darken Only", "Lighten Only"):
            if light is None:
                return (np.minimum if mode == "Darken Only" else np.maximum)(upper, lower), False
            take_lower = (upper[..., light] >= lower[..., light] if mode == "Darken Only"
                          else upper[..., light] < lower[..., light])
            return np.where(take_lower[..., None], lower, upper), False
        if mode in ("Hue", "Saturation", "Color", "Luminosity"):
            keep_lower = {"Hue": (light, sat), "Saturation": (light, hue), "Color": (light,),
                          "Luminosity": (sat, hue)}[mode]
            result = upper.copy()
            for index in keep_lower:
                result[..., index] = lower[..., index]
            return result, False
    raise ValueError(f"unknown blend mode {mode!r}")


@invocation("invokeai_img_blend", title="Image Layer Blend",
            tags=["image", "blend", "layer", "alpha", "composite", "dodge", "burn"], category=_CATEGORY,
            version="1.2.0")
class InvokeImageBlendInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Blends an upper layer onto a base layer with a blend mode, in a chosen colour space, then
    alpha-composites it with opacity and an optional mask (white keeps the base)."""

    layer_upper: ImageField = InputField(description="The top image to blend", ui_order=1)
    blend_mode: BLEND_MODES = InputField(default="Normal", description="Available blend modes", ui_order=2)
    opacity: float = InputField(default=1.0, ge=0, description="Desired opacity of the upper layer", ui_order=3)
    mask: Optional[ImageField] = InputField(default=None, description="Optional mask, used to restrict areas from "
                                                                      "blending", ui_order=4)
    fit_to_width: bool = InputField(default=False, description="Scale upper layer to fit base width", ui_order=5)
    fit_to_height: bool = InputField(default=True, description="Scale upper layer to fit base height", ui_order=6)
    layer_base: ImageField = InputField(description="The bottom image to blend", ui_order=7)
    color_space: BLEND_COLOR_SPACES = InputField(default="RGB", description="Available color spaces for blend "
                                                                            "computations", ui_order=8)
    adaptive_gamut: float = InputField(default=0.0, ge=0, description="Adaptive gamut clipping (0=off). Higher "
                                                                      "prioritizes chroma over lightness", ui_order=9)
    high_precision: bool = InputField(default=True, description="Use more steps in computing gamut when possible",
                                      ui_order=10)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        space = self.color_space.split()[0]
        if space in ("Okhsl", "Okhsv"):
            raise fail(self, "color_space", f"{self.color_space!r} is not supported yet; expected one of RGB, "
                                             "Linear RGB, HSL (RGB), HSV (RGB), Oklch (Oklab), LCh (CIELab)")
        if self.adaptive_gamut > 0:
            context.logger.warning("%s: adaptive_gamut is not implemented; out-of-gamut colours are clamped", self.id)
        if space in ("RGB", "Linear") and self.blend_mode in ("Hue", "Saturation", "Color", "Luminosity"):
            space = "HSL"  # these modes need a hue/saturation/lightness split

        base = load_image(self, context, "layer_base")
        base_mode = base.mode
        upper = load_image(self, context, "layer_upper")
        upper = _fit_to(upper, base.size, self.fit_to_width, self.fit_to_height,
                        tuple(0 for _ in upper.getbands()))
        if upper.size != base.size:
            raise fail(self, "fit_to_height", f"with fit_to_width and fit_to_height both off the upper layer "
                                               f"{upper.size} must already be the base's size {base.size}")
        mask = None
        if self.mask is not None:
            mask_image = _fit_to(load_image(self, context, "mask"), base.size, self.fit_to_width, self.fit_to_height, 0)
            if mask_image.size != base.size:
                raise fail(self, "mask", f"expected a mask the size of layer_base {base.size}, got {mask_image.size}")
            mask = np.asarray(mask_image.convert("L"), dtype=np.float64) / 255.0

        def planes(image: "Image") -> tuple["np.ndarray", "np.ndarray"]:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
            alpha = rgba[..., 3] if image.mode == "RGBA" else np.ones(rgba.shape[:2])
            return rgba[..., :3], alpha

        upper_rgb, upper_alpha = planes(upper)
        lower_rgb, lower_alpha = planes(base)
        to_space, to_linear, light, sat, hue, period = _blend_spaces()[space]
        if self.blend_mode in ("Lighten Only (EAL)", "Darken Only (EAL)"):
            # InvokeAI's equivalent achromatic lightness adds one image-wide constant to CIELab L, which
            # cancels in its normalisation: the comparison is of CIELab lightness.
            upper_l = cielch_from_linear(linear_from_srgb(upper_rgb))[..., 0]
            lower_l = cielch_from_linear(linear_from_srgb(lower_rgb))[..., 0]
            take_lower = upper_l < lower_l if self.blend_mode == "Lighten Only (EAL)" else upper_l >= lower_l
            blended = np.where(take_lower[..., None], to_space(lower_rgb), to_space(upper_rgb))
        else:
            blended, _ = _blend_values(self.blend_mode, to_space(upper_rgb), to_space(lower_rgb), light, sat, hue,
                                       period)
        linear = np.nan_to_num(to_linear(blended), nan=1.0, posinf=1.0, neginf=0.0)
        result_rgb = srgb_from_linear(np.clip(linear, 0.0, 1.0))

        alpha_up = upper_alpha * self.opacity
        if mask is not None:
            alpha_up = alpha_up * (1.0 - mask)
        alpha = alpha_up + lower_alpha * (1.0 - alpha_up)
        with np.errstate(divide="ignore", invalid="ignore"):
            color = (result_rgb * alpha_up[..., None]
                     + lower_rgb * lower_alpha[..., None] * (1.0 - alpha_up)[..., None]) / alpha[..., None]
        color = np.nan_to_num(color, nan=0.0, posinf=1.0, neginf=0.0)
        out = np.concatenate([color, alpha[..., None]], axis=-1)
        image = Image.fromarray(to_uint8(out, scale=255.0), "RGBA")
        return save_image(self, context, image.convert(base_mode))


@invocation("save_image", title="Save Image", tags=["primitives", "image"], category="image", version="1.2.2",
            use_cache=False)
class SaveImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Saves a copy of an image (with this node's metadata and board), unlike the image primitive."""

    image: ImageField = InputField(description="The image to process")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        return save_image(self, context, context.images.get_pil(self.image.image_name))

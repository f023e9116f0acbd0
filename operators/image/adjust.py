"""Image colour and filter nodes: hue rotation (HSV, CIELab, Oklch, Okhsl, Okhsv), equivalent achromatic
lightness, PIL enhancement, value thresholds, dilate/erode, Oklab unsharp mask, histogram colour
correction, invisible watermarks and the NSFW blur.

Type strings, titles, versions, fields and outputs follow InvokeAI's invocations/image.py and
composition-nodes.py. The pixel work is written here on numpy, Pillow and scipy, with the colour-space
maths of ``models/image_util/color``; the watermark nodes use ``models/image_util/watermark`` (interchangeable
with the marks InvokeAI writes) and the NSFW node a safety-checker model from the run's model service.
Heavy modules are imported inside ``invoke()``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Optional

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.image_util.arrays import to_uint8
from invokeai_provider.models.image_util.color import (
    cielab_transforms,
    gamut_clip,
    linear_from_oklab,
    linear_from_srgb,
    okhsl_from_srgb,
    okhsv_from_srgb,
    oklab_from_linear,
    oklab_from_oklch,
    oklch_from_oklab,
    srgb_from_linear,
    srgb_from_okhsl,
    srgb_from_okhsv,
)
from invokeai_provider.operators.core.primitives import ImageOutput, StringOutput
from invokeai_provider.operators.image.io import fail, load_image, save_image

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from PIL.Image import Image

    from invokeai_provider.core.context import InvocationContext


def _split_alpha(image: "Image") -> tuple[str, Optional["Image"]]:
    """The mode to convert back to and the alpha band, for modes whose alpha must survive a colour edit."""
    alpha_modes = {"RGBA": "RGB", "RGBa": "RGB", "LA": "L", "La": "L", "PA": "P"}
    if image.mode in alpha_modes:
        return alpha_modes[image.mode], image.getchannel(image.mode[-1])
    return image.mode, None


def _restore_mode(image: "Image", mode: str, base_mode: str, alpha: Optional["Image"]) -> "Image":
    """Back to the input's mode with its own alpha band (P/L go through RGB as Pillow needs)."""
    if alpha is None:
        return image.convert(mode)
    image = image.convert(base_mode)
    if base_mode == "P":
        image = image.convert("RGB")
    return _merge_alpha(image, mode, alpha)


def _merge_alpha(image: "Image", mode: str, alpha: "Image") -> "Image":
    from PIL import Image

    if mode in ("RGBA", "RGBa", "LA", "La"):
        return Image.merge(mode, (*image.split(), alpha))
    image = image.convert("RGBA")
    image.putalpha(alpha)
    return image.convert(mode) if mode != "PA" else image


def _to_float(image: "Image") -> "np.ndarray":
    import numpy as np

    return np.asarray(image, dtype=np.float64) / 255.0


# --- nodes ----------------------------------------------------------------------------------------------


@invocation("img_hue_adjust_oklch", title="Adjust Image Hue (Oklch)", tags=["image", "hue", "oklch"],
            category="image", version="1.0.0")
class OklchImageHueAdjustmentInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Rotates hue in Oklch, where equal angles look like equal hue changes and lightness stays put."""

    image: ImageField = InputField(description="The image to adjust")
    hue: int = InputField(default=0, description="The degrees by which to rotate the hue, 0-360")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        image = load_image(self, context, "image")
        base_mode, alpha = _split_alpha(image)
        lch = oklch_from_oklab(oklab_from_linear(linear_from_srgb(_to_float(image.convert("RGB")))))
        lch[..., 2] = (lch[..., 2] + self.hue) % 360.0
        rgb = srgb_from_linear(linear_from_oklab(oklab_from_oklch(lch)))
        out = _restore_mode(Image.fromarray(to_uint8(rgb, scale=255.0), "RGB"), image.mode, base_mode, alpha)
        return save_image(self, context, out)


HUE_COLOR_SPACES = Literal["HSV / HSL / RGB", "Okhsl", "Okhsv", "*Oklch / Oklab", "*LCh / CIELab",
                           "*UPLab (w/CIELab_to_UPLab.icc)"]


@invocation("invokeai_img_hue_adjust_plus", title="Adjust Image Hue Plus",
            tags=["image", "hue", "oklab", "cielab", "uplab", "lch", "hsv", "hsl", "lab"], category="image",
            version="1.2.0")
class InvokeAdjustImageHuePlusInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Rotates hue in a chosen colour space; the perceptual ones (*) shift hues evenly but may clip colours."""

    image: ImageField = InputField(description="The image to adjust")
    space: HUE_COLOR_SPACES = InputField(default="HSV / HSL / RGB",
                                         description="Color space in which to rotate hue by polar coords (*: non-invertible)")
    degrees: float = InputField(default=0.0, description="Degrees by which to rotate image hue")
    preserve_lightness: bool = InputField(default=False, description="Whether to preserve CIELAB lightness values")
    ok_adaptive_gamut: float = InputField(ge=0, default=0.05,
                                          description="Higher preserves chroma at the expense of lightness (Oklab)")
    ok_high_precision: bool = InputField(default=True,
                                         description="Use more steps in computing gamut (Oklab/Okhsv/Okhsl)")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image, ImageCms

        if self.space.startswith("*UPLab"):
            raise fail(self, "space", "the UPLab option needs InvokeAI's CIELab_to_UPLab.icc profile, which is not "
                        "shipped here; choose another space (\"*LCh / CIELab\" is the nearest)")
        image = load_image(self, context, "image")
        base_mode, alpha = _split_alpha(image)
        rgb_image = image.convert("RGB")
        steps = 3 if self.ok_high_precision else 1
        to_lab, to_rgb = cielab_transforms()
        original_lab = ImageCms.applyTransform(rgb_image, to_lab)
        if self.space == "HSV / HSL / RGB":
            hsv = np.asarray(rgb_image.convert("HSV"), dtype=np.float64)
            hsv[..., 0] = ((hsv[..., 0] / 255.0 * 360.0 + self.degrees) % 360.0) / 360.0 * 255.0
            out = Image.fromarray(to_uint8(hsv, scale=1), "HSV").convert("RGB")
        elif self.space in ("Okhsl", "Okhsv"):
            forward, back = ((okhsl_from_srgb, srgb_from_okhsl) if self.space == "Okhsl"
                             else (okhsv_from_srgb, srgb_from_okhsv))
            polar = forward(_to_float(rgb_image), steps)
            polar[..., 0] = (polar[..., 0] + self.degrees) % 360.0
            out = Image.fromarray(to_uint8(back(polar, steps), scale=255.0), "RGB")
        elif self.space == "*Oklch / Oklab":
            lch = oklch_from_oklab(oklab_from_linear(linear_from_srgb(_to_float(rgb_image))))
            lch[..., 2] = (lch[..., 2] + self.degrees) % 360.0
            linear = linear_from_oklab(oklab_from_oklch(lch))
            if self.ok_adaptive_gamut > 0:
                linear = gamut_clip(linear, self.ok_adaptive_gamut, steps)
            out = Image.fromarray(to_uint8(srgb_from_linear(linear), scale=255.0), "RGB")
        else:  # "*LCh / CIELab": rotate (a*, b*) about the neutral axis, keeping L*
            lab = np.asarray(original_lab, dtype=np.float64)
            a, b = (lab[..., 1] - 128.0), (lab[..., 2] - 128.0)
            angle = math.radians(self.degrees)
            rot_a, rot_b = a * math.cos(angle) - b * math.sin(angle), a * math.sin(angle) + b * math.cos(angle)
            lab = np.stack([lab[..., 0], rot_a + 128.0, rot_b + 128.0], axis=-1)
            out = ImageCms.applyTransform(Image.fromarray(to_uint8(lab, scale=1), "LAB"),
                                          to_rgb)
        if self.preserve_lightness and not self.space.startswith("*LCh"):
            out_lab = ImageCms.applyTransform(out, to_lab)
            merged = Image.merge("LAB", (original_lab.getchannel("L"), out_lab.getchannel("A"),
                                         out_lab.getchannel("B")))
            out = ImageCms.applyTransform(merged, to_rgb)
        out = _restore_mode(out, image.mode, base_mode, alpha)
        return save_image(self, context, out)


@invocation("invokeai_img_enhance", title="Enhance Image", tags=["enhance", "image"], category="image",
            version="1.2.1")
class InvokeImageEnhanceInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Inverts, then applies PIL's colour, contrast, brightness and sharpness enhancers (1.0 leaves as is)."""

    image: ImageField = InputField(description="The image for which to apply processing")
    invert: bool = InputField(default=False, description="Whether to invert the image colors")
    color: float = InputField(ge=0, default=1.0, description="Color enhancement factor")
    contrast: float = InputField(ge=0, default=1.0, description="Contrast enhancement factor")
    brightness: float = InputField(ge=0, default=1.0, description="Brightness enhancement factor")
    sharpness: float = InputField(ge=0, default=1.0, description="Sharpness enhancement factor")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import ImageEnhance, ImageOps

        image = load_image(self, context, "image")
        if self.invert:
            image = ImageOps.invert(image if image.mode in ("L", "RGB") else image.convert("RGB"))
        for factor, enhancer in ((self.color, ImageEnhance.Color), (self.contrast, ImageEnhance.Contrast),
                                 (self.brightness, ImageEnhance.Brightness), (self.sharpness, ImageEnhance.Sharpness)):
            if factor != 1.0:
                image = enhancer(image).enhance(factor)
        return save_image(self, context, image)


@invocation("invokeai_ealightness", title="Equivalent Achromatic Lightness",
            tags=["image", "channel", "mask", "cielab", "lab"], category="image", version="1.2.0")
class InvokeEquivalentAchromaticLightnessInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A greyscale lightness image from CIELab L*.

    InvokeAI adds a chroma-dependent (Helmholtz-Kohlrausch) term, but sums it over the whole image into one
    constant that its own min/max rescale then removes, so what it returns is L* rescaled to 0-255. This
    returns the same.
    """

    image: ImageField = InputField(description="Image from which to get channel")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        image = load_image(self, context, "image")
        if image.mode not in ("RGB", "LAB"):
            image = image.convert("RGB")
        lightness = image.convert("LAB").getchannel("L")
        return save_image(self, context, lightness)


@invocation("invokeai_img_val_thresholds", title="Image Value Thresholds",
            tags=["image", "mask", "value", "threshold"], category="image", version="1.2.0")
class InvokeImageValueThresholdsInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Values at or above the upper threshold become full, below the lower one zero (swapped when inverted);
    values in between stay, or are stretched over 0-1 when renormalised. Useful to cut masks from images."""

    image: ImageField = InputField(description="The image from which to create a mask")
    invert_output: bool = InputField(default=False, description="Make light areas dark and vice versa")
    renormalize_values: bool = InputField(default=False, description="Rescale remaining values from minimum to maximum")
    lightness_only: bool = InputField(default=False, description="If true, only applies to image lightness (CIELa*b*)")
    threshold_upper: float = InputField(default=0.5, description="Threshold above which will be set to full value")
    threshold_lower: float = InputField(default=0.5, description="Threshold below which will be set to minimum value")

    def _threshold(self, values: "np.ndarray") -> "np.ndarray":
        import numpy as np

        upper, lower = self.threshold_upper, self.threshold_lower
        out = values.copy()
        high, low = values >= upper, values < lower
        if upper != lower and self.renormalize_values:
            middle = (values >= lower) & (values < upper)
            vmin, vmax = min(upper, lower), max(upper, lower)
            stretched = (values[middle] - vmin) / (vmax - vmin)
            out[middle] = 1.0 - stretched if self.invert_output else stretched
        full, zero = (low, high) if self.invert_output else (high, low)
        out[full] = 1.0
        out[zero] = 0.0
        return np.clip(out, 0.0, 1.0)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        image = load_image(self, context, "image")
        if self.lightness_only:
            base_mode, alpha = _split_alpha(image)
            lab = image.convert("RGB").convert("LAB")
            lightness = Image.fromarray(to_uint8(self._threshold(_to_float(lab.getchannel("L"))), scale=255.0), "L")
            out = Image.merge("LAB", (lightness, lab.getchannel("A"), lab.getchannel("B"))).convert("RGB")
            out = _restore_mode(out, image.mode, base_mode, alpha)
        else:
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            out = Image.fromarray(to_uint8(self._threshold(_to_float(image)), scale=255.0), image.mode)
        return save_image(self, context, out)


DILATE_ERODE_MODES = Literal["Dilate", "Erode"]


def ellipse_footprint(radius_w: int, radius_h: int) -> "np.ndarray":
    """The (2*radius_h+1) x (2*radius_w+1) ellipse a dilation grows by, rasterised row by row the way
    OpenCV's MORPH_ELLIPSE element (which InvokeAI uses) is, so results match pixel for pixel."""
    import numpy as np

    footprint = np.zeros((2 * radius_h + 1, 2 * radius_w + 1), dtype=bool)
    for row in range(2 * radius_h + 1):
        dy = row - radius_h
        half = int(np.rint(radius_w * math.sqrt((radius_h ** 2 - dy ** 2) / radius_h ** 2))) if radius_h else 0
        footprint[row, radius_w - half:radius_w + half + 1] = True
    return footprint


@invocation("invokeai_img_dilate_erode", title="Image Dilate or Erode",
            tags=["image", "mask", "dilate", "erode", "expand", "contract", "mask"], category="image", version="1.3.0")
class InvokeImageDilateOrErodeInvocation(BaseInvocation, WithMetadata):
    """Grows (dilate) or shrinks (erode) light areas by an elliptical radius; handy to widen or tighten masks."""

    image: ImageField = InputField(description="The image from which to create a mask")
    lightness_only: bool = InputField(default=False, description="If true, only applies to image lightness (CIELa*b*)")
    radius_w: int = InputField(ge=0, default=4,
                               description="Width (in pixels) by which to dilate(expand) or erode (contract) the image")
    radius_h: int = InputField(ge=0, default=4,
                               description="Height (in pixels) by which to dilate(expand) or erode (contract) the image")
    mode: DILATE_ERODE_MODES = InputField(default="Dilate", description="How to operate on the image")

    def _morph(self, image: "Image") -> "Image":
        import numpy as np
        from PIL import Image
        from scipy import ndimage

        op = ndimage.grey_dilation if self.mode == "Dilate" else ndimage.grey_erosion
        footprint = ellipse_footprint(self.radius_w, self.radius_h)
        array = np.asarray(image)
        if array.ndim == 2:
            out = op(array, footprint=footprint, mode="nearest")
        else:
            out = np.stack([op(array[..., c], footprint=footprint, mode="nearest") for c in range(array.shape[-1])],
                           axis=-1)
        return Image.fromarray(out.astype(array.dtype), image.mode)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        image = load_image(self, context, "image")
        if self.lightness_only:
            base_mode, alpha = _split_alpha(image)
            lab = image.convert("RGB").convert("LAB")
            out = Image.merge("LAB", (self._morph(lab.getchannel("L")), lab.getchannel("A"), lab.getchannel("B")))
            out = _restore_mode(out.convert("RGB"), image.mode, base_mode, alpha)
        else:
            if image.mode in ("1", "P", "PA"):
                image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
            out = self._morph(image)
        return save_image(self, context, out)


@invocation("unsharp_mask_oklab", title="Unsharp Mask (Oklab)", tags=["image", "unsharp_mask", "oklab"],
            category="image", version="1.0.0")
class OklabUnsharpMaskInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Sharpens Oklab lightness only, so edges gain contrast without colour fringes."""

    image: ImageField = InputField(description="The image to use")
    radius: float = InputField(gt=0, description="Unsharp mask radius", default=2)
    strength: float = InputField(ge=0, description="Unsharp mask strength", default=50)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image, ImageFilter

        image = load_image(self, context, "image")
        base_mode, alpha = _split_alpha(image)
        rgb = image.convert("RGB")
        lab = oklab_from_linear(linear_from_srgb(_to_float(rgb)))
        blurred = oklab_from_linear(linear_from_srgb(_to_float(rgb.filter(ImageFilter.GaussianBlur(self.radius)))))
        lab[..., 0] += (lab[..., 0] - blurred[..., 0]) * (self.strength / 100.0)
        out_rgb = srgb_from_linear(linear_from_oklab(np.clip(lab, -1.0, 1.0)))
        out = _restore_mode(Image.fromarray(to_uint8(out_rgb, scale=255.0), "RGB"), image.mode, base_mode, alpha)
        return save_image(self, context, out)


def _match_histogram(source: "np.ndarray", reference: "np.ndarray") -> "np.ndarray":
    """Maps 8-bit values so the source's cumulative histogram follows the reference's."""
    import numpy as np

    def cdf(values: "np.ndarray") -> "np.ndarray":
        counts = np.bincount(values.ravel(), minlength=256).cumsum().astype(np.float64)
        return counts / counts[-1] if counts[-1] > 0 else counts

    table = np.interp(cdf(source), cdf(reference), np.arange(256))
    return table[source].astype(np.uint8)


@invocation("color_correct", title="Color Correct", tags=["image", "color"], category="image", version="2.0.0")
class ColorCorrectInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Matches the base image's colour histograms to a reference (all channels, or luma or chroma only);
    a mask keeps the original where it is white."""

    base_image: ImageField = InputField(description="The image to color-correct")
    color_reference: ImageField = InputField(description="Reference image for color-correction")
    mask: Optional[ImageField] = InputField(default=None, description="Optional mask to limit color correction area")
    colorspace: Literal["RGB", "YCbCr", "YCbCr-Chroma", "YCbCr-Luma"] = InputField(
        default="RGB", description="Colorspace in which to apply histogram matching", title="Color Space")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        base = context.images.get_pil(self.base_image.image_name, "RGBA")
        space = "RGB" if self.colorspace == "RGB" else "YCbCr"
        channels = {"RGB": (0, 1, 2), "YCbCr": (0, 1, 2), "YCbCr-Chroma": (1, 2), "YCbCr-Luma": (0,)}[self.colorspace]
        base_rgb = base.convert("RGB")
        source = np.asarray(base_rgb.convert(space), dtype=np.uint8)
        reference = np.asarray(load_image(self, context, "color_reference").convert("RGB").convert(space),
                               dtype=np.uint8)
        corrected = source.copy()
        for channel in channels:
            corrected[..., channel] = _match_histogram(source[..., channel], reference[..., channel])
        result = Image.fromarray(corrected, space).convert("RGB")
        if self.mask is not None:
            mask = context.images.get_pil(self.mask.image_name, "L")
            if mask.size != result.size:
                raise fail(self, "mask", f"mask is {mask.width}x{mask.height} but base_image is "
                            f"{result.width}x{result.height}; they must be the same size")
            result.paste(base_rgb, mask=mask)
        result = result.convert("RGBA")
        result.putalpha(base.getchannel("A"))
        return save_image(self, context, result)


def _bgr(image: "Image") -> "np.ndarray":
    import numpy as np

    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)[..., ::-1])


def _check_watermark_size(node: BaseInvocation, image: "Image") -> None:
    if image.width * image.height < 256 * 256:
        raise fail(node, "image", f"the invisible watermark needs at least 256x256 = 65536 pixels; the image is "
                    f"{image.width}x{image.height}")


@invocation("img_watermark", title="Add Invisible Watermark", tags=["image", "watermark"], category="image",
            version="1.2.2")
class ImageWatermarkInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Hides the text in the image's frequency domain (DWT-DCT), readable back with decode_watermark."""

    image: ImageField = InputField(description="The image to check")
    text: str = InputField(default="InvokeAI", description="Watermark text")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        from invokeai_provider.models.image_util.watermark import embed_bytes

        image = load_image(self, context, "image")
        _check_watermark_size(self, image)
        if not self.text:
            raise fail(self, "text", "the watermark text must not be empty")
        try:
            bgr = embed_bytes(_bgr(image), self.text.encode("utf-8"))
        except ValueError as exc:  # more bits than the image has blocks: the mark could never be read back
            raise fail(self, "text", f"the watermark text is too long for this image: {exc}") from None
        out = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]), "RGB").convert("RGBA")
        return save_image(self, context, out)


@invocation("decode_watermark", title="Decode Invisible Watermark", tags=["image", "watermark"], category="image",
            version="1.0.0")
class DecodeInvisibleWatermarkInvocation(BaseInvocation):
    """Reads back text hidden by img_watermark; an empty string when none can be read."""

    image: ImageField = InputField(description="The image to decode the watermark from")
    length: int = InputField(default=8, description="The expected watermark length in bytes")

    def invoke(self, context: "InvocationContext") -> StringOutput:
        from invokeai_provider.models.image_util.watermark import extract_bytes

        if self.length < 1:
            raise fail(self, "length", f"expected a watermark length of at least 1 byte, got {self.length}")
        image = load_image(self, context, "image")
        if image.width * image.height < 256 * 256:
            context.logger.warning("%s: image %s is too small to carry an invisible watermark", self.id,
                                   self.image.image_name)
            return StringOutput(value="")
        try:
            raw = extract_bytes(_bgr(image), self.length)
        except Exception as exc:  # noqa: BLE001 - an unreadable watermark is an empty answer, as in InvokeAI
            context.logger.debug("%s: no invisible watermark decoded: %s", self.id, exc)
            return StringOutput(value="")
        return StringOutput(value=bytes(raw).decode("utf-8", errors="ignore").rstrip("\x00"))


# Where InvokeAI keeps its safety checker, relative to the models directory; here: the model root.
SAFETY_CHECKER_PATH = "core/convert/stable-diffusion-safety-checker"


def _build_safety_checker(path: "Path", device: str) -> Any:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    from invokeai_provider.models.model_manager.core_models import CoreModel

    return CoreModel(StableDiffusionSafetyChecker.from_pretrained(path).to(device).eval(),
                     CLIPImageProcessor.from_pretrained(path))


@invocation("img_nsfw", title="Blur NSFW Image", tags=["image", "nsfw"], category="image", version="1.2.3")
class ImageNSFWBlurInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Blurs the image heavily when the Stable Diffusion safety checker flags it; passes it on otherwise."""

    image: ImageField = InputField(description="The image to check")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        import torch
        from PIL import ImageFilter

        image = load_image(self, context, "image")
        rgb = image.convert("RGB")
        pixels = (np.asarray(rgb, dtype=np.float32) / 255.0)[None].transpose(0, 3, 1, 2)
        from invokeai_provider.models.model_manager.core_models import use_core_model

        with use_core_model(self, context, "image", SAFETY_CHECKER_PATH, _build_safety_checker,
                            what="a diffusers StableDiffusionSafetyChecker",
                            required=("config.json", "preprocessor_config.json")) as core, torch.no_grad():
            checker = core.model
            features = core.processor([rgb], return_tensors="pt").pixel_values.to(device=core.device,
                                                                                 dtype=checker.dtype)
            _, flagged = checker(images=pixels, clip_input=features)
        if flagged[0]:
            context.logger.warning("%s: image %s may be NSFW; blurring it", self.id, self.image.image_name)
            image = image.filter(ImageFilter.GaussianBlur(radius=32))
        return save_image(self, context, image)

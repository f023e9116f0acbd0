"""Primitive nodes: constants and pass-throughs for booleans, numbers, strings, images, latents,
conditioning, colors and bounding boxes, together with the output classes every other family returns.

Type strings, versions, fields and output shapes follow InvokeAI's `invocations/primitives.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.core.fields import (
    LATENT_SCALE_FACTOR,
    BoundingBoxField,
    ColorField,
    ConditioningField,
    DenoiseMaskField,
    ImageField,
    LatentsField,
    TensorField,
    VideoField,
)
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "primitives"


def _record_value(record: Any, key: str) -> Any:
    """Reads one key of an image/video record, whether it is a dict or an object with attributes."""
    if isinstance(record, Mapping):
        return record[key]
    return getattr(record, key)


# --- boolean ----------------------------------------------------------------------------------------


@invocation_output("boolean_output")
class BooleanOutput(BaseInvocationOutput):
    """One boolean."""

    value: bool = OutputField(description="The output boolean")


@invocation_output("boolean_collection_output")
class BooleanCollectionOutput(BaseInvocationOutput):
    """A list of booleans."""

    collection: list[bool] = OutputField(description="The output boolean collection")


@invocation("boolean", title="Boolean Primitive", tags=["primitives", "boolean"], category=_CATEGORY, version="1.0.1")
class BooleanInvocation(BaseInvocation):
    """Emits a fixed boolean."""

    value: bool = InputField(default=False, description="The boolean value")

    def invoke(self, context: "InvocationContext") -> BooleanOutput:
        return BooleanOutput(value=self.value)


@invocation("boolean_collection", title="Boolean Collection Primitive", tags=["primitives", "boolean", "collection"],
            category=_CATEGORY, version="1.0.2")
class BooleanCollectionInvocation(BaseInvocation):
    """Emits a fixed list of booleans."""

    collection: list[bool] = InputField(default=[], description="The collection of boolean values")

    def invoke(self, context: "InvocationContext") -> BooleanCollectionOutput:
        return BooleanCollectionOutput(collection=list(self.collection))


# --- integer ----------------------------------------------------------------------------------------


@invocation_output("integer_output")
class IntegerOutput(BaseInvocationOutput):
    """One integer."""

    value: int = OutputField(description="The output integer")


@invocation_output("integer_collection_output")
class IntegerCollectionOutput(BaseInvocationOutput):
    """A list of integers."""

    collection: list[int] = OutputField(description="The int collection")


@invocation("integer", title="Integer Primitive", tags=["primitives", "integer"], category=_CATEGORY, version="1.0.1")
class IntegerInvocation(BaseInvocation):
    """Emits a fixed integer."""

    value: int = InputField(default=0, description="The integer value")

    def invoke(self, context: "InvocationContext") -> IntegerOutput:
        return IntegerOutput(value=self.value)


@invocation("integer_collection", title="Integer Collection Primitive", tags=["primitives", "integer", "collection"],
            category=_CATEGORY, version="1.0.2")
class IntegerCollectionInvocation(BaseInvocation):
    """Emits a fixed list of integers."""

    collection: list[int] = InputField(default=[], description="The collection of integer values")

    def invoke(self, context: "InvocationContext") -> IntegerCollectionOutput:
        return IntegerCollectionOutput(collection=list(self.collection))


# --- float ------------------------------------------------------------------------------------------


@invocation_output("float_output")
class FloatOutput(BaseInvocationOutput):
    """One float."""

    value: float = OutputField(description="The output float")


@invocation_output("float_collection_output")
class FloatCollectionOutput(BaseInvocationOutput):
    """A list of floats."""

    collection: list[float] = OutputField(description="The float collection")


@invocation("float", title="Float Primitive", tags=["primitives", "float"], category=_CATEGORY, version="1.0.1")
class FloatInvocation(BaseInvocation):
    """Emits a fixed float."""

    value: float = InputField(default=0.0, description="The float value")

    def invoke(self, context: "InvocationContext") -> FloatOutput:
        return FloatOutput(value=self.value)


@invocation("float_collection", title="Float Collection Primitive", tags=["primitives", "float", "collection"],
            category=_CATEGORY, version="1.0.2")
class FloatCollectionInvocation(BaseInvocation):
    """Emits a fixed list of floats."""

    collection: list[float] = InputField(default=[], description="The collection of float values")

    def invoke(self, context: "InvocationContext") -> FloatCollectionOutput:
        return FloatCollectionOutput(collection=list(self.collection))


# --- string -----------------------------------------------------------------------------------------


@invocation_output("string_output")
class StringOutput(BaseInvocationOutput):
    """One string."""

    value: str = OutputField(description="The output string")


@invocation_output("string_collection_output")
class StringCollectionOutput(BaseInvocationOutput):
    """A list of strings."""

    collection: list[str] = OutputField(description="The output strings")


@invocation("string", title="String Primitive", tags=["primitives", "string"], category=_CATEGORY, version="1.0.1")
class StringInvocation(BaseInvocation):
    """Emits a fixed string."""

    value: str = InputField(default="", description="The string value", ui_component="textarea")

    def invoke(self, context: "InvocationContext") -> StringOutput:
        return StringOutput(value=self.value)


@invocation("string_collection", title="String Collection Primitive", tags=["primitives", "string", "collection"],
            category=_CATEGORY, version="1.0.2")
class StringCollectionInvocation(BaseInvocation):
    """Emits a fixed list of strings."""

    collection: list[str] = InputField(default=[], description="The collection of string values")

    def invoke(self, context: "InvocationContext") -> StringCollectionOutput:
        return StringCollectionOutput(collection=list(self.collection))


# --- image ------------------------------------------------------------------------------------------


@invocation_output("image_output")
class ImageOutput(BaseInvocationOutput):
    """One image, by name, with its size."""

    image: ImageField = OutputField(description="The output image")
    width: int = OutputField(description="The width of the image in pixels")
    height: int = OutputField(description="The height of the image in pixels")

    @classmethod
    def build(cls, record: Any) -> "ImageOutput":
        """From an image record as returned by `context.images.save()` (keys image_name, width, height)."""
        return cls(
            image=ImageField(image_name=_record_value(record, "image_name")),
            width=_record_value(record, "width"),
            height=_record_value(record, "height"),
        )


@invocation_output("image_collection_output")
class ImageCollectionOutput(BaseInvocationOutput):
    """A list of images, by name."""

    collection: list[ImageField] = OutputField(description="The output images")


@invocation("image", title="Image Primitive", tags=["primitives", "image"], category=_CATEGORY, version="1.0.2")
class ImageInvocation(BaseInvocation):
    """Passes on an image already in the store, adding its width and height."""

    image: ImageField = InputField(description="The image to load")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        pil = context.images.get_pil(self.image.image_name)
        return ImageOutput(image=ImageField(image_name=self.image.image_name), width=pil.width, height=pil.height)


@invocation("image_collection", title="Image Collection Primitive", tags=["primitives", "image", "collection"],
            category=_CATEGORY, version="1.0.2")
class ImageCollectionInvocation(BaseInvocation):
    """Builds a list of images: an incoming list (if connected) followed by the images chosen on the node."""

    collection: Optional[list[ImageField]] = InputField(
        default=None, description="An optional image collection to append to", input=Input.Connection,
        title="Collection", ui_order=0,
    )
    images: Optional[list[ImageField]] = InputField(
        default=None, description="The images to append to the collection", input=Input.Direct,
        title="Images", ui_order=1,
    )

    def invoke(self, context: "InvocationContext") -> ImageCollectionOutput:
        return ImageCollectionOutput(collection=list(self.collection or []) + list(self.images or []))


# --- video (output only; the `video` node needs a video store this package does not have) ----------


@invocation_output("video_output")
class VideoOutput(BaseInvocationOutput):
    """One video, by name, with its size, frame count and timing."""

    video: VideoField = OutputField(description="The output video")
    width: int = OutputField(description="The width of the video in pixels")
    height: int = OutputField(description="The height of the video in pixels")
    num_frames: int = OutputField(description="The number of frames in the video")
    fps: float = OutputField(description="The frames-per-second of the video")
    duration: float = OutputField(description="The duration of the video in seconds")

    @classmethod
    def build(cls, record: Any, num_frames: Optional[int] = None) -> "VideoOutput":
        """From a video record (keys video_name, width, height, duration, fps); the frame count defaults
        to duration x fps, or 0 when the frame rate is unknown."""
        fps = float(_record_value(record, "fps") or 0.0)
        duration = float(_record_value(record, "duration"))
        if num_frames is None:
            num_frames = int(round(duration * fps)) if fps > 0 else 0
        return cls(
            video=VideoField(video_name=_record_value(record, "video_name")),
            width=_record_value(record, "width"),
            height=_record_value(record, "height"),
            num_frames=num_frames,
            fps=fps,
            duration=duration,
        )


# --- denoise mask and mask --------------------------------------------------------------------------


@invocation_output("denoise_mask_output")
class DenoiseMaskOutput(BaseInvocationOutput):
    """A mask prepared for a denoise run."""

    denoise_mask: DenoiseMaskField = OutputField(description="Mask for denoise model run")

    @classmethod
    def build(cls, mask_name: str, masked_latents_name: Optional[str] = None,
              gradient: bool = False) -> "DenoiseMaskOutput":
        return cls(denoise_mask=DenoiseMaskField(mask_name=mask_name, masked_latents_name=masked_latents_name,
                                                 gradient=gradient))


@invocation_output("mask_output")
class MaskOutput(BaseInvocationOutput):
    """A boolean mask tensor of shape [1, H, W], by name, with its size."""

    mask: TensorField = OutputField(description="The mask.")
    width: int = OutputField(description="The width of the mask in pixels.")
    height: int = OutputField(description="The height of the mask in pixels.")


# --- latents ----------------------------------------------------------------------------------------


@invocation_output("latents_output")
class LatentsOutput(BaseInvocationOutput):
    """One latents tensor, by name, with the image size it stands for."""

    latents: LatentsField = OutputField(description="Latents tensor")
    width: int = OutputField(description="Width of output (px)")
    height: int = OutputField(description="Height of output (px)")

    @classmethod
    def build(cls, latents_name: str, latents: Any, seed: Optional[int] = None) -> "LatentsOutput":
        """From a stored latents tensor shaped [batch, channels, height, width]; sizes are in pixels."""
        shape = tuple(latents.shape)
        return cls(
            latents=LatentsField(latents_name=latents_name, seed=seed),
            width=int(shape[3]) * LATENT_SCALE_FACTOR,
            height=int(shape[2]) * LATENT_SCALE_FACTOR,
        )


@invocation_output("latents_collection_output")
class LatentsCollectionOutput(BaseInvocationOutput):
    """A list of latents tensors, by name."""

    collection: list[LatentsField] = OutputField(description="Latents tensor")


@invocation("latents", title="Latents Primitive", tags=["primitives", "latents"], category=_CATEGORY,
            version="1.0.2")
class LatentsInvocation(BaseInvocation):
    """Passes on a latents tensor, adding the pixel size it corresponds to."""

    latents: LatentsField = InputField(description="The latents tensor", input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        tensor = context.tensors.load(self.latents.latents_name)
        return LatentsOutput.build(self.latents.latents_name, tensor)


@invocation("latents_collection", title="Latents Collection Primitive",
            tags=["primitives", "latents", "collection"], category=_CATEGORY, version="1.0.1")
class LatentsCollectionInvocation(BaseInvocation):
    """Passes on a list of latents tensors."""

    collection: list[LatentsField] = InputField(description="The collection of latents tensors")

    def invoke(self, context: "InvocationContext") -> LatentsCollectionOutput:
        return LatentsCollectionOutput(collection=list(self.collection))


# --- color ------------------------------------------------------------------------------------------


@invocation_output("color_output")
class ColorOutput(BaseInvocationOutput):
    """One RGBA color."""

    color: ColorField = OutputField(description="The output color")


@invocation_output("color_collection_output")
class ColorCollectionOutput(BaseInvocationOutput):
    """A list of RGBA colors."""

    collection: list[ColorField] = OutputField(description="The output colors")


@invocation("color", title="Color Primitive", tags=["primitives", "color"], category=_CATEGORY, version="1.0.1")
class ColorInvocation(BaseInvocation):
    """Emits a fixed RGBA color (opaque black unless set)."""

    color: ColorField = InputField(default=ColorField(r=0, g=0, b=0, a=255), description="The color value")

    def invoke(self, context: "InvocationContext") -> ColorOutput:
        return ColorOutput(color=self.color)


# --- conditioning -----------------------------------------------------------------------------------


@invocation_output("conditioning_output")
class ConditioningOutput(BaseInvocationOutput):
    """One SD1/SD2/SDXL conditioning, by name."""

    conditioning: ConditioningField = OutputField(description="Conditioning tensor")

    @classmethod
    def build(cls, conditioning_name: str) -> "ConditioningOutput":
        return cls(conditioning=ConditioningField(conditioning_name=conditioning_name))


@invocation_output("conditioning_collection_output")
class ConditioningCollectionOutput(BaseInvocationOutput):
    """A list of SD1/SD2/SDXL conditionings, by name."""

    collection: list[ConditioningField] = OutputField(description="The output conditioning tensors")


@invocation("conditioning", title="Conditioning Primitive", tags=["primitives", "conditioning"],
            category=_CATEGORY, version="1.0.1")
class ConditioningInvocation(BaseInvocation):
    """Passes on a conditioning."""

    conditioning: ConditioningField = InputField(description="Conditioning tensor", input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ConditioningOutput:
        return ConditioningOutput(conditioning=self.conditioning)


@invocation("conditioning_collection", title="Conditioning Collection Primitive",
            tags=["primitives", "conditioning", "collection"], category=_CATEGORY, version="1.0.2")
class ConditioningCollectionInvocation(BaseInvocation):
    """Passes on a list of conditionings."""

    collection: list[ConditioningField] = InputField(default=[], description="The collection of conditioning tensors")

    def invoke(self, context: "InvocationContext") -> ConditioningCollectionOutput:
        return ConditioningCollectionOutput(collection=list(self.collection))


# --- bounding box -----------------------------------------------------------------------------------


@invocation_output("bounding_box_output")
class BoundingBoxOutput(BaseInvocationOutput):
    """One bounding box."""

    bounding_box: BoundingBoxField = OutputField(description="The output bounding box.")


@invocation_output("bounding_box_collection_output")
class BoundingBoxCollectionOutput(BaseInvocationOutput):
    """A list of bounding boxes."""

    collection: list[BoundingBoxField] = OutputField(description="The output bounding boxes.", title="Bounding Boxes")


@invocation("bounding_box", title="Bounding Box", tags=["primitives", "segmentation", "collection", "bounding box"],
            category=_CATEGORY, version="1.0.0")
class BoundingBoxInvocation(BaseInvocation):
    """Makes a bounding box from its corner coordinates."""

    x_min: int = InputField(default=0, description="x-coordinate of the bounding box's top left vertex")
    y_min: int = InputField(default=0, description="y-coordinate of the bounding box's top left vertex")
    x_max: int = InputField(default=0, description="x-coordinate of the bounding box's bottom right vertex")
    y_max: int = InputField(default=0, description="y-coordinate of the bounding box's bottom right vertex")

    def invoke(self, context: "InvocationContext") -> BoundingBoxOutput:
        return BoundingBoxOutput(
            bounding_box=BoundingBoxField(x_min=self.x_min, y_min=self.y_min, x_max=self.x_max, y_max=self.y_max)
        )

"""The nodes that turn images into FLUX conditioning: ``flux_kontext`` (a Kontext reference image),
``flux_kontext_image_prep`` (references resized and put side by side, as Kontext likes them) and ``flux_fill``
(an image and the mask to fill). Type strings, titles, versions, fields and outputs follow InvokeAI's
flux_kontext.py, image.py and flux_fill.py. The first and last only package their inputs; ``flux_denoise`` encodes
them (`invokeai_provider.models.flux.image_conditioning`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invokeai_provider.core.fields import (
    FluxFillConditioningField,
    FluxKontextConditioningField,
    ImageField,
    TensorField,
)
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
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import save_image

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_KONTEXT_DESCRIPTION = "FLUX Kontext conditioning (reference image)"


@invocation_output("flux_kontext_output")
class FluxKontextOutput(BaseInvocationOutput):
    """The conditioning output of a FLUX Kontext invocation."""

    kontext_cond: FluxKontextConditioningField = OutputField(description=_KONTEXT_DESCRIPTION,
                                                             title="Kontext Conditioning")


@invocation("flux_kontext", title="Kontext Conditioning - FLUX", tags=["conditioning", "kontext", "flux"],
            category="conditioning", version="1.0.0")
class FluxKontextInvocation(BaseInvocation):
    """Prepares a reference image for FLUX Kontext conditioning."""

    image: ImageField = InputField(description="The Kontext reference image.")

    def invoke(self, context: "InvocationContext") -> FluxKontextOutput:
        return FluxKontextOutput(kontext_cond=FluxKontextConditioningField(image=self.image))


@invocation("flux_kontext_image_prep", title="FLUX Kontext Image Prep",
            tags=["image", "concatenate", "flux", "kontext"], category="conditioning", version="1.0.0")
class FluxKontextConcatenateImagesInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Prepares an image or images for use with FLUX Kontext. The first/single image is resized to the nearest
    preferred Kontext resolution. All other images are concatenated horizontally, maintaining their aspect ratio."""

    images: list[ImageField] = InputField(description="The images to concatenate", min_length=1, max_length=10)
    use_preferred_resolution: bool = InputField(default=True,
                                                description="Use FLUX preferred resolutions for the first image")

    def first_size(self, width: int, height: int) -> tuple[int, int]:
        """The first image's size: the Kontext training resolution nearest its aspect ratio, on a 16 px grid as
        Black Forest Labs round it; or its own size rounded down to 16 px (at least 16)."""
        if not self.use_preferred_resolution:
            return max(16, 16 * (width // 16)), max(16, 16 * (height // 16))
        from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

        _, target_width, target_height = min((abs(width / height - w / h), w, h)
                                             for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
        return 16 * int(target_width / 16), 16 * int(target_height / 16)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        images = [context.images.get_pil(field.image_name, mode="RGBA") for field in self.images]
        first_width, height = self.first_size(*images[0].size)
        resized = [images[0].resize((first_width, height), Image.Resampling.LANCZOS)]
        for image in images[1:]:  # the same height, their own aspect ratio, on a 16 px grid
            width = max(16, 16 * (int(height * image.width / image.height) // 16))
            resized.append(image.resize((width, height), Image.Resampling.LANCZOS))
        canvas = Image.new("RGB", (sum(image.width for image in resized), height))
        left = 0
        for image in resized:
            canvas.paste(image, (left, 0))
            left += image.width
        return save_image(self, context, canvas)


@invocation_output("flux_fill_output")
class FluxFillOutput(BaseInvocationOutput):
    """The conditioning output of a FLUX Fill invocation."""

    fill_cond: FluxFillConditioningField = OutputField(description="FLUX Redux conditioning tensor",
                                                       title="Conditioning")


@invocation("flux_fill", title="FLUX Fill Conditioning", tags=["inpaint"], category="conditioning", version="1.0.0",
            classification=Classification.Beta)
class FluxFillInvocation(BaseInvocation):
    """Prepare the FLUX Fill conditioning data."""

    image: ImageField = InputField(description="The FLUX Fill reference image.")
    mask: TensorField = InputField(description="The bool inpainting mask. Excluded regions should be set to False, "
                                   "included regions should be set to True.")

    def invoke(self, context: "InvocationContext") -> FluxFillOutput:
        return FluxFillOutput(fill_cond=FluxFillConditioningField(image=self.image, mask=self.mask))

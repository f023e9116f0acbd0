"""The spandrel image-to-image nodes: ``spandrel_image_to_image`` and ``spandrel_image_to_image_autoscale``.

Type strings, versions, fields, defaults and categories follow InvokeAI 6.11 (``spandrel_image_to_image.py``).
The nodes take an installed ``spandrel_image_to_image`` model (any architecture spandrel recognises; see
:mod:`invokeai_provider.models.upscalers.spandrel`). torch is imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invokeai_provider.core.fields import ImageField, ModelIdentifierField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.core.taxonomy import ModelType
from invokeai_provider.operators.core.models import MODEL_SERVICE, check_model
from invokeai_provider.operators.core.primitives import ImageOutput
from invokeai_provider.operators.image.io import fail, load_rgb, save_image

if TYPE_CHECKING:
    import numpy as np

    from invokeai_provider.core.context import InvocationContext

_SPANDREL_MODEL = "Image-to-Image model"
MAX_AUTOSCALE_PASSES = 5  # InvokeAI's guard: a 2x model reaches 16x in 4 passes


@invocation("spandrel_image_to_image", title="Image-to-Image", tags=["upscale"], category="upscale",
            version="1.3.0", gpu=True)
class SpandrelImageToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Run any spandrel image-to-image model (https://github.com/chaiNNer-org/spandrel)."""

    image: ImageField = InputField(description="The input image")
    image_to_image_model: ModelIdentifierField = InputField(title="Image-to-Image Model",
                                                            description=_SPANDREL_MODEL,
                                                            ui_model_type=ModelType.SpandrelImageToImage)
    tile_size: int = InputField(default=512,
                                description="The tile size for tiled image-to-image. Set to 0 to disable tiling.")

    def _upscale(self, context: "InvocationContext", rgb: "np.ndarray", model: Any, label: str) -> "np.ndarray":
        from invokeai_provider.models.upscalers import spandrel as spandrel_model
        def on_tile(done: int, total: int) -> None:
            context.util.signal_progress(f"{label}tile {done}/{total}", percentage=done / total)

        try:
            return spandrel_model.upscale(model, rgb, self.tile_size, on_tile)
        except spandrel_model.SpandrelModelError as exc:
            raise fail(self, "image_to_image_model", str(exc)) from None

    def _model(self, context: "InvocationContext") -> Any:
        """The model service's context manager for the chosen model, after the checks InvokeAI leaves to
        an assert."""
        from invokeai_provider.models.upscalers import spandrel as spandrel_model
        field = "image_to_image_model"
        if self.tile_size < 0:
            raise fail(self, "tile_size", f"expected 0 (no tiling) or a tile size in pixels, got {self.tile_size}")
        if 0 < self.tile_size <= spandrel_model.MIN_OVERLAP:
            raise fail(self, "tile_size", f"expected 0 (no tiling) or more than the {spandrel_model.MIN_OVERLAP}-"
                                          f"pixel tile overlap, got {self.tile_size}")
        check_model(self, field, self.image_to_image_model, context, ModelType.SpandrelImageToImage)
        models = context.services.get(MODEL_SERVICE)
        if models is None:
            raise fail(self, field, "no model service in this run; run with a model root (--model-root)")
        reason = spandrel_model.unavailable_reason()
        if reason is not None:
            raise fail(self, field, f"spandrel cannot be imported ({reason}); {spandrel_model.INSTALL_HINT}")
        return models.load(self.image_to_image_model)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        # As InvokeAI: RGB in (most models have no alpha channel), RGB out.
        rgb = load_rgb(self, context)
        with self._model(context) as model:
            out = self._upscale(context, rgb, model, "Processing ")
        return save_image(self, context, Image.fromarray(out, "RGB"))


@invocation("spandrel_image_to_image_autoscale", title="Image-to-Image (Autoscale)", tags=["upscale"],
            category="upscale", version="1.0.0", gpu=True)
class SpandrelImageToImageAutoscaleInvocation(SpandrelImageToImageInvocation):
    """Run any spandrel image-to-image model (https://github.com/chaiNNer-org/spandrel) until the target scale is reached."""

    scale: float = InputField(default=4.0, gt=0.0, le=16.0,
                              description="The final scale of the output image. If the model does not upscale the "
                                          "image, this will be ignored.")
    fit_to_multiple_of_8: bool = InputField(default=False, description="If true, the output image will be resized "
                                                                       "to the nearest multiple of 8 in both dimensions.")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        rgb = load_rgb(self, context)
        height, width = rgb.shape[:2]
        target = (int(width * self.scale), int(height * self.scale))
        with self._model(context) as model:
            out = self._upscale(context, rgb, model, "Processing iteration 1, ")
            passes = 1
            if out.shape[0] > height and out.shape[1] > width:
                # An upscaler: run it again until the image reaches the target size.
                while (out.shape[1] < target[0] or out.shape[0] < target[1]) and passes < MAX_AUTOSCALE_PASSES:
                    passes += 1
                    out = self._upscale(context, out, model, f"Processing iteration {passes}, ")
                if out.shape[1] < target[0] or out.shape[0] < target[1]:
                    context.logger.warning("%s: stopped after %d upscaling passes short of %dx%d", self.id, passes,
                                           *target)
            else:
                # Not an upscaler (a restorer): the scale does not apply.
                target = (out.shape[1], out.shape[0])
                if self.scale > 1:
                    context.logger.warning("%s: the model does not enlarge the image; scale %s is ignored", self.id,
                                           self.scale)
        if self.fit_to_multiple_of_8:
            target = (target[0] // 8 * 8, target[1] // 8 * 8)
        if min(target) < 1:
            raise fail(self, "scale", f"a scale of {self.scale} makes the {width}x{height} image "
                                      f"{target[0]}x{target[1]}")
        image = Image.fromarray(out, "RGB")
        if image.size != target:
            image = image.resize(target, resample=Image.Resampling.LANCZOS)
        return save_image(self, context, image)

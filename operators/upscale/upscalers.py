"""Upscaling without diffusion: ``esrgan`` and the spandrel image-to-image nodes.

Type strings, versions, fields, defaults and categories follow InvokeAI 6.11 (``upscale.py``,
``spandrel_image_to_image.py``). ``esrgan``'s checkpoint named by ``model_name`` is read from
``<model root>/core/upscaling/realesrgan/<file>`` (the folder InvokeAI kept these files in before it fetched
them by URL; no download here) into the RRDBNet of :mod:`invokeai_provider.models.upscalers.rrdb`. The spandrel
nodes take an installed ``spandrel_image_to_image`` model (any architecture spandrel recognises; see
:mod:`invokeai_provider.models.upscalers.spandrel`). torch is imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from invokeai_provider.core.fields import ImageField, ModelIdentifierField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.models.model_manager.core_models import CORE_DIR
from invokeai_provider.core.taxonomy import ModelType
from invokeai_provider.operators.image.io import fail, load_image
from invokeai_provider.operators.sd.model_loaders import MODEL_SERVICE, check_model
from invokeai_provider.operators.core.primitives import ImageOutput

if TYPE_CHECKING:
    import numpy as np

    from invokeai_provider.core.context import InvocationContext

ESRGAN_MODELS = Literal[
    "RealESRGAN_x4plus.pth",
    "RealESRGAN_x4plus_anime_6B.pth",
    "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth",
    "RealESRGAN_x2plus.pth",
]
ESRGAN_DIR = f"{CORE_DIR}/upscaling/realesrgan"


@invocation("esrgan", title="Upscale (RealESRGAN)", tags=["esrgan", "upscale"], category="upscale",
            version="1.3.2", gpu=True)
class ESRGANInvocation(BaseInvocation, WithMetadata, WithBoard):
    """The image enlarged 4x (2x with the x2 model) by an ESRGAN network; RGBA out, fully opaque."""

    image: ImageField = InputField(description="The input image")
    model_name: ESRGAN_MODELS = InputField(default="RealESRGAN_x4plus.pth", description="The Real-ESRGAN model to use")
    tile_size: int = InputField(default=400, ge=0,
                                description="Tile size for tiled ESRGAN upscaling (0=tiling disabled)")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        import torch
        from PIL import Image

        from invokeai_provider.models.annotators.checkpoint import use_annotator
        from invokeai_provider.models.upscalers.rrdb import build_esrgan, unwrap_checkpoint, upscale

        # As InvokeAI: any alpha is dropped before upscaling (not upscaled), and the result is opaque RGBA.
        rgb = np.asarray(load_image(self, context, "image", "RGB"), dtype=np.float32) / 255.0
        name = self.model_name
        with use_annotator(self, context, "model_name", name, lambda: build_esrgan(name),
                           what=f"the ESRGAN checkpoint {name}", unwrap=unwrap_checkpoint,
                           folder=ESRGAN_DIR) as net:
            device = next(net.parameters()).device
            batch = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).to(device)
            out = upscale(net, batch, self.tile_size)
        pixels = (out[0].permute(1, 2, 0).float().cpu().numpy() * 255.0).round().astype(np.uint8)
        return ImageOutput.build(context.images.save(Image.fromarray(pixels, "RGB").convert("RGBA")))


# --- spandrel --------------------------------------------------------------------------------------------

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
        import numpy as np
        from PIL import Image

        # As InvokeAI: RGB in (most models have no alpha channel), RGB out.
        rgb = np.asarray(load_image(self, context, "image", "RGB"), dtype=np.uint8)
        with self._model(context) as model:
            out = self._upscale(context, rgb, model, "Processing ")
        return ImageOutput.build(context.images.save(Image.fromarray(out, "RGB")))


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
        import numpy as np
        from PIL import Image

        rgb = np.asarray(load_image(self, context, "image", "RGB"), dtype=np.uint8)
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
        return ImageOutput.build(context.images.save(image))

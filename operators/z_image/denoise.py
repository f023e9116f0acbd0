"""``z_image_denoise``: Z-Image text-to-image, image-to-image and inpainting. Type string, title, version 1.6.0, every
field and the output follow InvokeAI's z_image_denoise.py, so its Z-Image graphs validate unchanged; the loop is
`invokeai_provider.models.z_image.denoise_loop`.

Built: noise from the seed (InvokeAI's) or a ``noise`` input; the schedule shifted by the image's token count or by
``shift``, clipped by ``denoising_start``/``denoising_end`` as InvokeAI clips it (whole steps); image-to-image from
``latents`` (with or without ``add_noise``); inpainting with a ``denoise_mask`` (gradient masks included); CFG with
negative conditionings (several are joined, as InvokeAI does) when ``guidance_scale`` is not 1; the Euler, Heun and
LCM samplers; a Z-Image ControlNet (its image encoded with ``vae``); the transformer's LoRAs patched in for the node's
span; progress and cancel at every step; regional prompts (several positive conditionings, with masks from
z_image_text_encoder's ``mask``) as InvokeAI builds them (`invokeai_provider.models.z_image.regional`), also on
ControlNet steps (where InvokeAI's own ControlNet forward leaves them out).
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from invokeai_provider.core.fields import (
    DenoiseMaskField,
    LatentsField,
    TransformerField,
    VAEField,
    ZImageConditioningField,
)
from invokeai_provider.core.invocation import BaseInvocation, Classification, Input, InputField, invocation
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.models import check_model
from invokeai_provider.operators.core.primitives import LatentsOutput
from invokeai_provider.operators.sd.common import GenerationError, lora_patched, model_service
from invokeai_provider.operators.z_image.control import ZImageControlField
from invokeai_provider.operators.z_image.prompts import load_embeds

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

ZIMAGE_SCHEDULER_NAME_VALUES = Literal["euler", "heun", "lcm"]
ZIMAGE_SCHEDULER_LABELS = {"euler": "Euler", "heun": "Heun (2nd order)", "lcm": "LCM"}


@invocation("z_image_denoise", title="Denoise - Z-Image", tags=["image", "z-image"], category="latents",
            version="1.6.0", classification=Classification.Prototype, gpu=True)
class ZImageDenoiseInvocation(BaseInvocation):
    """Run the denoising process with a Z-Image model.

    Supports regional prompting by connecting multiple conditioning inputs with masks."""

    latents: Optional[LatentsField] = InputField(default=None, description="Latents tensor", input=Input.Connection)
    noise: Optional[LatentsField] = InputField(default=None, description="Noise tensor", input=Input.Connection)
    denoise_mask: Optional[DenoiseMaskField] = InputField(
        default=None, description="A mask of the region to apply the denoising process to. Values of 0.0 represent "
        "the regions to be fully denoised, and 1.0 represent the regions to be preserved.", input=Input.Connection)
    denoising_start: float = InputField(default=0.0, ge=0, le=1, description="When to start denoising, expressed a "
                                        "percentage of total steps")
    denoising_end: float = InputField(default=1.0, ge=0, le=1, description="When to stop denoising, expressed a "
                                      "percentage of total steps")
    add_noise: bool = InputField(default=True, description="Add noise based on denoising start.")
    transformer: TransformerField = InputField(description="Z-Image model (Transformer) to load",
                                               input=Input.Connection, title="Transformer")
    positive_conditioning: Union[ZImageConditioningField, list[ZImageConditioningField]] = InputField(
        description="Positive conditioning tensor", input=Input.Connection)
    negative_conditioning: Union[ZImageConditioningField, list[ZImageConditioningField], None] = InputField(
        default=None, description="Negative conditioning tensor", input=Input.Connection)
    guidance_scale: float = InputField(default=1.0, ge=1.0, description="Guidance scale for classifier-free "
                                       "guidance. 1.0 = no CFG (recommended for Z-Image-Turbo). Values > 1.0 amplify "
                                       "guidance.", title="Guidance Scale")
    width: int = InputField(default=1024, multiple_of=16, description="Width of the generated image.")
    height: int = InputField(default=1024, multiple_of=16, description="Height of the generated image.")
    steps: int = InputField(default=8, gt=0, description="Number of denoising steps. 8 recommended for "
                            "Z-Image-Turbo.")
    seed: int = InputField(default=0, description="Randomness seed for reproducibility.")
    control: Optional[ZImageControlField] = InputField(
        default=None, description="Z-Image control conditioning for spatial control (Canny, HED, Depth, Pose, MLSD).",
        input=Input.Connection)
    vae: Optional[VAEField] = InputField(default=None, description="VAE Required for control conditioning.",
                                         input=Input.Connection)
    shift: Optional[float] = InputField(
        default=None, ge=0.0, description="Override the timestep shift (mu) for the sigma schedule. Leave blank to "
        "auto-calculate based on image dimensions (recommended). Lower values (~0.5) produce less noise shifting, "
        "higher values (~1.15) produce more.", title="Shift")
    scheduler: ZIMAGE_SCHEDULER_NAME_VALUES = InputField(
        default="euler", description="Scheduler (sampler) for the denoising process. Euler is the default and "
        "recommended. Heun is 2nd-order (better quality, 2x slower). LCM works with Turbo only (not Base).",
        ui_choice_labels=ZIMAGE_SCHEDULER_LABELS)

    # --- inputs --------------------------------------------------------------------------------------------

    def _positive(self, context: "InvocationContext") -> tuple[Any, Any]:
        """The positive prompts' embeddings joined along the tokens, and their regional attention mask (None when no
        conditioning has a mask), as InvokeAI joins and masks them."""
        import torch

        from invokeai_provider.models.z_image import regional, sampling

        fields = self.positive_conditioning if isinstance(self.positive_conditioning, list) else \
            [self.positive_conditioning]
        if not fields:
            raise field_error(GenerationError, self, "positive_conditioning", "an empty list: connect at least one "
                              "conditioning")
        embeds, masks = [], []
        for field in fields:
            embeds.append(load_embeds(self, context, "positive_conditioning", field.conditioning_name))
            masks.append(None if field.mask is None else
                         regional.region_tokens(self._region(context, field.mask.tensor_name), self.height,
                                                self.width))
        mask = regional.attention_mask([e.shape[0] for e in embeds], masks,
                                       sampling.image_tokens(self.height, self.width))
        return torch.cat(embeds), mask

    def _region(self, context: "InvocationContext", name: str) -> Any:
        """A regional prompt's mask tensor, checked to be one ``(1, H, W)`` or ``(H, W)`` mask."""
        mask = context.tensors.load(name)
        if mask.ndim not in (2, 3) or (mask.ndim == 3 and mask.shape[0] != 1):
            raise field_error(GenerationError, self, "positive_conditioning", f"a region mask {name!r} of shape "
                              f"{tuple(mask.shape)}; expected (1, H, W) or (H, W)")
        return mask

    def _negative(self, context: "InvocationContext") -> Any:
        """The negative embeddings joined along the tokens (InvokeAI's handling of several; their masks ignored)."""
        import torch

        fields = self.negative_conditioning if isinstance(self.negative_conditioning, list) else \
            [self.negative_conditioning]
        if not fields:
            return None
        return torch.cat([load_embeds(self, context, "negative_conditioning", f.conditioning_name) for f in fields])

    def _latents_input(self, context: "InvocationContext", field: str) -> Any:
        from invokeai_provider.models.z_image.sampling import latent_shape

        tensor = context.tensors.load(getattr(self, field).latents_name)
        expected = latent_shape(self.height, self.width)
        if tuple(tensor.shape) != expected:
            raise field_error(GenerationError, self, field, f"shape {tuple(tensor.shape)} does not fit a "
                              f"{self.width}x{self.height} image (expected {expected})")
        return tensor.float()

    def _inpaint_mask(self, context: "InvocationContext") -> Any:
        """The denoise mask inverted (1 where the image is regenerated) and resized to the latents (bilinear, no
        antialiasing), as InvokeAI prepares it."""
        import torch.nn.functional as F

        mask = context.tensors.load(self.denoise_mask.mask_name).float()
        if mask.ndim not in (2, 3, 4) or (mask.ndim > 2 and mask.shape[-3] != 1):
            raise field_error(GenerationError, self, "denoise_mask", f"a mask of shape {tuple(mask.shape)}; expected "
                              "one channel (1, H, W) or (1, 1, H, W)")
        mask = (1.0 - mask).reshape(1, 1, *mask.shape[-2:])
        return F.interpolate(mask, size=(self.height // 8, self.width // 8), mode="bilinear", align_corners=False,
                             antialias=False)

    def _control(self, context: "InvocationContext", models: Any, stack: ExitStack) -> Any:
        """The ControlNet, loaded for the node's span, with the control image's latents (resized to the output with
        Lanczos, as InvokeAI does, and encoded by ``vae``)."""
        from PIL import Image

        from invokeai_provider.models.z_image.control import ZImageControl, control_latents
        from invokeai_provider.operators.sd.vae import image_to_tensor

        control = self.control
        check_model(self, "control", control.control_model, context, ModelType.ControlNet, (BaseModelType.ZImage,))
        if self.vae is None:
            raise field_error(GenerationError, self, "vae", "VAE is required when using Z-Image Control. Connect a VAE "
                              "to the 'vae' input.")
        image = context.images.get_pil(control.image_name, mode="RGB")
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.Resampling.LANCZOS)
        model = stack.enter_context(models.load(control.control_model))
        with models.load(self.vae.vae) as vae:
            latents = control_latents(vae, image_to_tensor(image), model.config.control_in_dim)
        return ZImageControl(model=model, latents=latents, scale=control.control_context_scale,
                             begin=control.begin_step_percent, end=control.end_step_percent)

    # --- the run -------------------------------------------------------------------------------------------

    def job(self, context: "InvocationContext") -> Any:
        """The node's checked denoising job (no model loaded)."""
        from invokeai_provider.models.z_image import sampling
        from invokeai_provider.models.z_image.denoise_loop import ZImageDenoiseJob

        check_model(self, "transformer", self.transformer.transformer, context, ModelType.Main,
                    (BaseModelType.ZImage,))
        tokens = sampling.image_tokens(self.height, self.width)
        shift = self.shift if self.shift is not None else sampling.resolution_shift(tokens)
        sigmas = sampling.clip(sampling.sigmas(shift, self.steps), self.denoising_start, self.denoising_end)
        init = self._latents_input(context, "latents") if self.latents is not None else None
        if init is None and self.denoising_start > 1e-5:
            raise field_error(GenerationError, self, "denoising_start", "should be 0 when initial latents are not "
                              "provided")
        if init is None and self.denoise_mask is not None:
            raise field_error(GenerationError, self, "denoise_mask", "inpainting needs the image's latents in latents")
        noise = None
        if init is None or self.add_noise or self.denoise_mask is not None:  # else never used: not read or checked
            noise = self._latents_input(context, "noise") if self.noise is not None else \
                sampling.noise(self.seed, self.height, self.width)
        cfg = not math.isclose(self.guidance_scale, 1.0) and self.negative_conditioning is not None
        positive, regional = self._positive(context)
        return ZImageDenoiseJob(
            sigmas=sigmas, positive=positive, regional=regional, noise=noise,
            negative=self._negative(context) if cfg else None, guidance_scale=self.guidance_scale,
            init_latents=init, add_noise=self.add_noise,
            inpaint_mask=self._inpaint_mask(context) if self.denoise_mask is not None else None,
            scheduler=self.scheduler, seed=self.seed)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.z_image import denoise_loop

        job = self.job(context)
        models = model_service(self, context, "transformer")

        def on_step(step: int, total: int) -> None:
            context.util.signal_progress(f"Denoising step {step}/{total}", step / total, step=step, total=total)

        if len(job.sigmas) <= 1:  # nothing to denoise: the start latents as they are
            latents = denoise_loop.start_latents(job)
        else:
            with ExitStack() as stack:
                if self.control is not None:
                    job.control = self._control(context, models, stack)
                transformer = stack.enter_context(models.load(self.transformer.transformer))
                stack.enter_context(lora_patched(self, context, "transformer", transformer, self.transformer.loras,
                                                 "transformer", BaseModelType.ZImage))
                latents = denoise_loop.run(transformer, job, on_step=on_step)
        latents = latents.detach().float().cpu()
        return LatentsOutput.build(latents_name=context.tensors.save(latents), latents=latents, seed=None)

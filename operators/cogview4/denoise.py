"""``cogview4_denoise``: CogView4 text-to-image, image-to-image and inpainting. Type string, title, version 1.1.0,
every field and the output follow InvokeAI's cogview4_denoise.py, so InvokeAI's CogView4 graphs validate unchanged;
the loop is `invokeai_provider.models.cogview4.denoise_loop`.

As InvokeAI's: noise from the seed (or a ``noise`` input of CogView4's shape), ``steps + 1`` timesteps from 1 to 0
clipped to ``denoising_start``/``denoising_end`` and shifted into sigmas by the image's token count, CFG on every
step (a negative conditioning is required), ``cfg_scale`` one value or one per step, image-to-image from ``latents``
noised to the first sigma, inpainting with a ``denoise_mask``. The node runs alone on the GPU (no batching with other
runs' nodes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Union

from invokeai_provider.core.fields import CogView4ConditioningField, DenoiseMaskField, LatentsField, TransformerField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    Classification,
    Input,
    InputField,
    WithBoard,
    WithMetadata,
    invocation,
)
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.cogview4.model_loader import COGVIEW4_MODEL_DESCRIPTION
from invokeai_provider.operators.cogview4.prompts import COGVIEW4, GLM_EMBEDS
from invokeai_provider.operators.core.models import check_model
from invokeai_provider.operators.core.primitives import LatentsOutput
from invokeai_provider.operators.sd.common import LATENTS_DESCRIPTION, GenerationError, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_MASK = ("A mask of the region to apply the denoising process to. Values of 0.0 represent the regions to be fully "
         "denoised, and 1.0 represent the regions to be preserved.")


@invocation("cogview4_denoise", title="Denoise - CogView4", tags=["image", "cogview4"], category="latents",
            version="1.1.0", classification=Classification.Prototype, gpu=True)
class CogView4DenoiseInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Run the denoising process with a CogView4 model."""

    latents: Optional[LatentsField] = InputField(default=None, description=LATENTS_DESCRIPTION,
                                                 input=Input.Connection)
    noise: Optional[LatentsField] = InputField(default=None, description="Noise tensor", input=Input.Connection)
    denoise_mask: Optional[DenoiseMaskField] = InputField(default=None, description=_MASK, input=Input.Connection)
    denoising_start: float = InputField(default=0.0, ge=0, le=1, description="When to start denoising, expressed a "
                                        "percentage of total steps")
    denoising_end: float = InputField(default=1.0, ge=0, le=1, description="When to stop denoising, expressed a "
                                      "percentage of total steps")
    transformer: TransformerField = InputField(description=COGVIEW4_MODEL_DESCRIPTION, input=Input.Connection,
                                               title="Transformer")
    positive_conditioning: CogView4ConditioningField = InputField(description="Positive conditioning tensor",
                                                                  input=Input.Connection)
    negative_conditioning: CogView4ConditioningField = InputField(description="Negative conditioning tensor",
                                                                  input=Input.Connection)
    cfg_scale: Union[float, list[float]] = InputField(default=3.5, description="Classifier-Free Guidance scale",
                                                      title="CFG Scale")
    width: int = InputField(default=1024, multiple_of=32, description="Width of the generated image.")
    height: int = InputField(default=1024, multiple_of=32, description="Height of the generated image.")
    steps: int = InputField(default=25, gt=0, description="Number of steps to run")
    seed: int = InputField(default=0, description="Randomness seed for reproducibility.")

    def _fail(self, field: str, problem: str) -> GenerationError:
        return field_error(GenerationError, self, field, problem)

    def _embeds(self, context: "InvocationContext", field: str) -> Any:
        name = getattr(self, field).conditioning_name
        tensors = context.conditioning.load_dict(name)
        if GLM_EMBEDS not in tensors:
            raise self._fail(field, f"conditioning {name!r} is not a CogView4 ({COGVIEW4}) conditioning (it has "
                             f"{', '.join(sorted(tensors))})")
        return tensors[GLM_EMBEDS]

    def _tensor(self, context: "InvocationContext", field: str, expected: tuple[int, ...]) -> Any:
        """The latents or noise input, which must fit ``width`` and ``height`` (InvokeAI checks the noise's)."""
        tensor = context.tensors.load(getattr(self, field).latents_name)
        if tuple(tensor.shape) != expected:
            raise self._fail(field, f"shape {tuple(tensor.shape)} does not fit a {self.width}x{self.height} image "
                             f"(expected {expected})")
        return tensor

    def _inpaint_mask(self, context: "InvocationContext", shape: tuple[int, ...]) -> Any:
        """The denoise mask inverted (1 where the image is regenerated) and resized to the latents, as InvokeAI
        prepares it (bilinear, no antialiasing)."""
        import torch.nn.functional as F

        mask = context.tensors.load(self.denoise_mask.mask_name).float()
        if mask.ndim not in (2, 3, 4) or (mask.ndim > 2 and mask.shape[-3] != 1):
            raise self._fail("denoise_mask", f"a mask of shape {tuple(mask.shape)}; expected one channel (1, H, W) "
                             "or (1, 1, H, W)")
        mask = (1.0 - mask).reshape(1, 1, *mask.shape[-2:])
        return F.interpolate(mask, size=shape[-2:], mode="bilinear", align_corners=False, antialias=False)

    def _cfg(self, steps: int) -> list[float]:
        if not isinstance(self.cfg_scale, list):
            return [float(self.cfg_scale)] * steps
        if len(self.cfg_scale) != steps:
            raise self._fail("cfg_scale", f"a list of {len(self.cfg_scale)} values for {steps} steps")
        return [float(scale) for scale in self.cfg_scale]

    def prepare(self, context: "InvocationContext") -> Any:
        """The node's job, checked and with its inputs read, before the transformer is loaded (its sigmas are set
        once the transformer's patch size is known)."""
        from invokeai_provider.models.cogview4 import denoise_loop, sampling
        from invokeai_provider.operators.sd.latents import noise_shape

        check_model(self, "transformer", self.transformer.transformer, context, ModelType.Main,
                    (BaseModelType.CogView4,))
        if self.denoising_start > self.denoising_end:
            raise self._fail("denoising_start", f"{self.denoising_start} is after denoising_end "
                             f"{self.denoising_end}")
        try:
            expected = noise_shape("CogView4", self.width, self.height)
        except ValueError as exc:
            raise self._fail("width", str(exc)) from None
        init = self._tensor(context, "latents", expected) if self.latents is not None else None
        if init is None and self.denoising_start > 1e-5:
            raise self._fail("denoising_start", "should be 0 when initial latents are not provided")
        if init is None and self.denoise_mask is not None:
            raise self._fail("denoise_mask", "inpainting needs the image's latents in latents")
        noise = (self._tensor(context, "noise", expected) if self.noise is not None
                 else sampling.noise(self.seed, self.height, self.width, expected[1]))
        timesteps = sampling.timesteps(self.steps, self.denoising_start, self.denoising_end)
        return denoise_loop.CogView4DenoiseJob(
            noise=noise, positive=self._embeds(context, "positive_conditioning"),
            negative=self._embeds(context, "negative_conditioning"), timesteps=timesteps, sigmas=[],
            cfg_scale=self._cfg(len(timesteps) - 1), height=self.height, width=self.width, init_latents=init,
            inpaint_mask=self._inpaint_mask(context, expected) if self.denoise_mask is not None else None)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.cogview4 import denoise_loop, sampling

        job = self.prepare(context)

        def on_step(step: int, total: int) -> None:
            context.util.signal_progress(f"Denoising step {step}/{total}", step / total, step=step, total=total)

        with model_service(self, context, "transformer").load(self.transformer.transformer) as transformer:
            # the shift depends on the token count, hence on the transformer's patch size (2 for CogView4-6B)
            seq_len = sampling.image_seq_len(self.height, self.width, transformer.config.patch_size)
            job.sigmas = sampling.sigmas_of(job.timesteps, sampling.shift_mu(seq_len))
            latents = denoise_loop.run(transformer, job, on_step=on_step)
        return LatentsOutput.build(latents_name=context.tensors.save(latents), latents=latents, seed=None)


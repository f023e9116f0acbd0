"""``sd3_denoise``: SD3 / SD3.5 text-to-image, image-to-image and inpainting. Type string, title, version 1.2.0,
fields and output follow InvokeAI's sd3_denoise.py, so InvokeAI's SD3 graphs validate unchanged; the loop is
`invokeai_provider.models.sd3.denoise_loop`.

As InvokeAI: noise from the seed (or a ``noise`` input of SD3's shape), the unshifted schedule ``linspace(1, 0,
steps + 1)`` clipped to ``denoising_start``/``denoising_end``, ``latents`` noised to the first timestep for
image-to-image, a ``denoise_mask`` keeping the unmasked region on the image's trajectory, and CFG at every step
(``cfg_scale`` a number or one value per step) with the negative conditioning, which is required.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Union

from invokeai_provider.core.fields import DenoiseMaskField, LatentsField, SD3ConditioningField, TransformerField
from invokeai_provider.core.invocation import BaseInvocation, Input, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.primitives import LatentsOutput
from invokeai_provider.operators.sd.common import GenerationError, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext


@invocation("sd3_denoise", title="Denoise - SD3", tags=["image", "sd3"], category="latents", version="1.2.0",
            gpu=True)
class SD3DenoiseInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Run denoising process with a SD3 model."""

    latents: Optional[LatentsField] = InputField(default=None, description="Latents tensor", input=Input.Connection)
    noise: Optional[LatentsField] = InputField(default=None, description="Noise tensor", input=Input.Connection)
    denoise_mask: Optional[DenoiseMaskField] = InputField(
        default=None, description="A mask of the region to apply the denoising process to. Values of 0.0 represent "
        "the regions to be fully denoised, and 1.0 represent the regions to be preserved.", input=Input.Connection)
    denoising_start: float = InputField(default=0.0, ge=0, le=1, description="When to start denoising, expressed a "
                                        "percentage of total steps")
    denoising_end: float = InputField(default=1.0, ge=0, le=1, description="When to stop denoising, expressed a "
                                      "percentage of total steps")
    transformer: TransformerField = InputField(description="SD3 model (MMDiTX) to load", input=Input.Connection,
                                               title="Transformer")
    positive_conditioning: SD3ConditioningField = InputField(description="Positive conditioning tensor",
                                                             input=Input.Connection)
    negative_conditioning: SD3ConditioningField = InputField(description="Negative conditioning tensor",
                                                             input=Input.Connection)
    cfg_scale: Union[float, list[float]] = InputField(default=3.5, description="Classifier-Free Guidance scale",
                                                      title="CFG Scale")
    width: int = InputField(default=1024, multiple_of=16, description="Width of the generated image.")
    height: int = InputField(default=1024, multiple_of=16, description="Height of the generated image.")
    steps: int = InputField(default=10, gt=0, description="Number of steps to run")
    seed: int = InputField(default=0, description="Randomness seed for reproducibility.")

    def _tensor(self, context: "InvocationContext", field: str, channels: int) -> Any:
        """The latents or noise input, which must fit ``width``, ``height`` and the transformer's channels."""
        from invokeai_provider.models.sd3.sampling import latent_shape

        tensor = context.tensors.load(getattr(self, field).latents_name).float()
        expected = latent_shape(self.height, self.width, channels)
        if tuple(tensor.shape) != expected:
            raise field_error(GenerationError, self, field, f"shape {tuple(tensor.shape)} does not fit a "
                              f"{self.width}x{self.height} SD3 image (expected {expected})")
        return tensor

    def _conditioning(self, context: "InvocationContext", field: str) -> Any:
        from invokeai_provider.models.sd3.text_encoding import KIND, SD3Conditioning

        name = getattr(self, field).conditioning_name
        kind = context.conditioning.load_metadata(name).get("kind")
        if kind != KIND:
            raise field_error(GenerationError, self, field, f"conditioning {name!r} is {kind or 'not'} SD3's "
                              "(expected the output of sd3_text_encoder)")
        return SD3Conditioning.from_dict(context.conditioning.load_dict(name))

    def cfg_schedule(self, steps: int) -> list[float]:
        """One CFG scale per step: ``cfg_scale``, or its list, which must have one value per step."""
        if not isinstance(self.cfg_scale, list):
            return [float(self.cfg_scale)] * steps
        if len(self.cfg_scale) != steps:
            raise field_error(GenerationError, self, "cfg_scale", f"a list of {len(self.cfg_scale)} values for "
                              f"{steps} steps")
        return [float(scale) for scale in self.cfg_scale]

    def check_inputs(self) -> None:
        """What can be refused before any model or tensor is read."""
        if self.transformer.loras:
            raise field_error(GenerationError, self, "transformer", "LoRAs given; SD3 has no LoRAs in InvokeAI 6.11")
        if self.latents is None and self.denoising_start > 1e-5:
            raise field_error(GenerationError, self, "denoising_start", "should be 0 when initial latents are not "
                              "provided")
        if self.latents is None and self.denoise_mask is not None:
            raise field_error(GenerationError, self, "denoise_mask", "inpainting needs the image's latents in "
                              "latents")
        if self.denoising_start > self.denoising_end:
            raise field_error(GenerationError, self, "denoising_start", f"{self.denoising_start} is after "
                              f"denoising_end {self.denoising_end}")

    def prepare(self, context: "InvocationContext", config: Any) -> Any:
        """The checked job (`invokeai_provider.models.sd3.denoise_loop.SD3DenoiseJob`) for a transformer of
        ``config`` (its diffusers config: channels and widths)."""
        import torch

        from invokeai_provider.models.sd3 import sampling
        from invokeai_provider.models.sd3.denoise_loop import SD3DenoiseJob
        from invokeai_provider.models.sd3.text_encoding import transformer_inputs

        self.check_inputs()
        channels = int(config.in_channels)
        init = self._tensor(context, "latents", channels) if self.latents is not None else None
        noise = self._tensor(context, "noise", channels) if self.noise is not None else \
            sampling.noise(self.seed, self.height, self.width, channels)
        timesteps = sampling.clip_schedule(sampling.schedule(self.steps), self.denoising_start, self.denoising_end)
        mask = None
        if self.denoise_mask is not None:
            try:
                mask = sampling.inpaint_mask(context.tensors.load(self.denoise_mask.mask_name), *noise.shape[-2:])
            except ValueError as exc:
                raise field_error(GenerationError, self, "denoise_mask", str(exc)) from None
        width = int(config.joint_attention_dim)
        negative = transformer_inputs(self._conditioning(context, "negative_conditioning"), width)
        positive = transformer_inputs(self._conditioning(context, "positive_conditioning"), width)
        for field, (embeds, pooled) in (("negative_conditioning", negative), ("positive_conditioning", positive)):
            if pooled.shape[-1] != config.pooled_projection_dim:
                raise field_error(GenerationError, self, field, f"pooled CLIP embeddings {pooled.shape[-1]} wide; "
                                  f"the transformer takes {config.pooled_projection_dim} (made by another model?)")
        if negative[0].shape != positive[0].shape:
            raise field_error(GenerationError, self, "negative_conditioning", "one conditioning has T5 tokens and "
                              "the other not, or they differ in length; encode both with the same encoders")
        return SD3DenoiseJob(noise=noise, timesteps=timesteps, prompt_embeds=torch.cat([negative[0], positive[0]]),
                             pooled_embeds=torch.cat([negative[1], positive[1]]),
                             cfg_scale=self.cfg_schedule(max(len(timesteps) - 1, 0)), init_latents=init,
                             inpaint_mask=mask)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.sd3 import denoise_loop

        self.check_inputs()
        models = model_service(self, context, "transformer")

        def on_step(step: int, total: int) -> None:
            context.util.signal_progress(f"Denoising step {step}/{total}", step / total, step=step, total=total)

        with models.load(self.transformer.transformer) as transformer:
            job = self.prepare(context, transformer.config)
            latents = denoise_loop.run(transformer, job, on_step=on_step)
        return LatentsOutput.build(latents_name=context.tensors.save(latents), latents=latents, seed=None)

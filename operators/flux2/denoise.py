"""``flux2_denoise``: FLUX.2 Klein text-to-image, image-to-image, inpainting, reference images and regional prompts.
Type string, title, version 1.6.0, every field and the output follow InvokeAI's flux2_denoise.py, so InvokeAI's
FLUX.2 graphs validate unchanged; the loop is `invokeai_provider.models.flux2.denoise_loop`.

Built as InvokeAI runs it: noise from the seed (or a ``noise`` input), text-to-image through Klein's shifted
scheduler (euler, heun, lcm), image-to-image and inpainting by Euler steps on the linear schedule clipped to
``denoising_start``/``denoising_end``, latents normalized by the VAE's batch-norm statistics while the transformer
works, true CFG with a negative conditioning and ``cfg_scale``, reference images from ``kontext_conditioning``
(encoded by ``vae``), regional prompts (a list of positive conditionings with masks), the transformer's LoRAs patched
in for the node's span, progress and cancel at every step. ``guidance`` is passed on and, as in InvokeAI, inert for
Klein (no guidance embedder). The node runs alone on the GPU runtime (no batching across nodes). Differences: LCM's
step noise is seeded by ``seed`` (InvokeAI draws it unseeded), and reference images are encoded whole rather than in
512-pixel tiles.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from invokeai_provider.core.fields import (
    DenoiseMaskField,
    FluxConditioningField,
    FluxKontextConditioningField,
    LatentsField,
    TransformerField,
    VAEField,
)
from invokeai_provider.core.invocation import BaseInvocation, Classification, Input, InputField, invocation
from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.primitives import LatentsOutput
from invokeai_provider.operators.flux2.vae import check_flux2_vae
from invokeai_provider.operators.sd.common import GenerationError, lora_patched, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

FLUX_SCHEDULER_NAME_VALUES = Literal["euler", "heun", "lcm"]


@invocation("flux2_denoise", title="FLUX2 Denoise", tags=["image", "flux", "flux2", "klein", "denoise"],
            category="latents", version="1.6.0", classification=Classification.Prototype, gpu=True)
class Flux2DenoiseInvocation(BaseInvocation):
    """Run denoising process with a FLUX.2 Klein transformer model."""

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
    transformer: TransformerField = InputField(description="Flux model (Transformer) to load", input=Input.Connection,
                                               title="Transformer")
    positive_text_conditioning: Union[FluxConditioningField, list[FluxConditioningField]] = InputField(
        description="Positive conditioning tensor", input=Input.Connection)
    negative_text_conditioning: Optional[FluxConditioningField] = InputField(
        default=None, description="Negative conditioning tensor. Can be None if cfg_scale is 1.0.",
        input=Input.Connection)
    guidance: float = InputField(
        default=4.0, ge=0, le=20, description="Guidance strength for distilled guidance-embedding models. Inert for "
        "all current FLUX.2 Klein variants (their guidance_embeds weights are absent/zero); kept for node-graph "
        "compatibility and future guidance-embedded models.")
    cfg_scale: float = InputField(default=1.0, description="Classifier-Free Guidance scale", title="CFG Scale")
    width: int = InputField(default=1024, multiple_of=16, description="Width of the generated image.")
    height: int = InputField(default=1024, multiple_of=16, description="Height of the generated image.")
    num_steps: int = InputField(default=4, description="Number of diffusion steps. Use 4 for distilled models, 28+ "
                                "for base models.")
    scheduler: FLUX_SCHEDULER_NAME_VALUES = InputField(
        default="euler", description="Scheduler (sampler) for the denoising process. 'euler' is fast and standard. "
        "'heun' is 2nd-order (better quality, 2x slower). 'lcm' is optimized for few steps.",
        ui_choice_labels={"euler": "Euler", "heun": "Heun (2nd order)", "lcm": "LCM"})
    seed: int = InputField(default=0, description="Randomness seed for reproducibility.")
    vae: VAEField = InputField(description="FLUX.2 VAE model (required for BN statistics).", input=Input.Connection)
    kontext_conditioning: Union[FluxKontextConditioningField, list[FluxKontextConditioningField], None] = InputField(
        default=None, description="FLUX Kontext conditioning (reference images for multi-reference image editing).",
        input=Input.Connection, title="Reference Images")

    def _fail(self, field: str, message: str) -> GenerationError:
        return field_error(GenerationError, self, field, message)

    def _latents_input(self, context: "InvocationContext", field: str, expected: tuple[int, ...]) -> Any:
        tensor = context.tensors.load(getattr(self, field).latents_name).float()
        if tuple(tensor.shape) != expected:
            raise self._fail(field, f"shape {tuple(tensor.shape)} does not fit a {self.width}x{self.height} FLUX.2 "
                             f"image (expected {expected})")
        return tensor

    def _embeds(self, context: "InvocationContext", field: str, value: FluxConditioningField) -> Any:
        tensors = context.conditioning.load_dict(value.conditioning_name)
        if "t5_embeds" not in tensors:
            raise self._fail(field, f"conditioning {value.conditioning_name!r} is not a FLUX conditioning (it has "
                             f"{', '.join(sorted(tensors))})")
        embeds = tensors["t5_embeds"]
        return embeds[None] if embeds.ndim == 2 else embeds

    def _inpaint_mask(self, context: "InvocationContext", shape: tuple[int, ...]) -> Any:
        """The denoise mask inverted (1 where regenerated), resized to the latents (bilinear, no antialiasing)."""
        import torch.nn.functional as F

        mask = context.tensors.load(self.denoise_mask.mask_name).float()
        if mask.ndim not in (2, 3, 4) or (mask.ndim > 2 and mask.shape[-3] != 1):
            raise self._fail("denoise_mask", f"a mask of shape {tuple(mask.shape)}; expected one channel (1, H, W) or "
                             "(1, 1, H, W)")
        mask = (1.0 - mask).reshape(1, 1, *mask.shape[-2:])
        return F.interpolate(mask, size=shape[-2:], mode="bilinear", align_corners=False, antialias=False)

    def _positive(self, context: "InvocationContext", packed_h: int, packed_w: int) -> tuple[Any, Any]:
        """The positive prompts' embeddings side by side, and the regional attention mask (None without masks)."""
        import torch

        from invokeai_provider.models.flux2 import regional

        fields = self.positive_text_conditioning
        fields = fields if isinstance(fields, list) else [fields]
        if not fields:
            raise self._fail("positive_text_conditioning", "at least one conditioning is needed")
        embeds, masks = [], []
        for field in fields:
            embeds.append(self._embeds(context, "positive_text_conditioning", field))
            mask = context.tensors.load(field.mask.tensor_name) if field.mask is not None else None
            masks.append(regional.region_mask(mask, packed_h, packed_w) if mask is not None else None)
        attention = regional.attention_mask([e.shape[1] for e in embeds], masks, packed_h * packed_w)
        return torch.cat(embeds, dim=1), attention

    def prepare(self, context: "InvocationContext", models: Any, vae: Any) -> Any:
        """The node's job, checked and with its inputs read (no transformer loaded); ``vae`` gives the batch-norm
        statistics and encodes the reference images."""
        from invokeai_provider.models.flux2 import denoise_loop, reference_images, sampling

        expected = sampling.latent_shape(self.height, self.width)
        init = self._latents_input(context, "latents", expected) if self.latents is not None else None
        if init is None and self.denoising_start > 1e-5:
            raise self._fail("denoising_start", "should be 0 when initial latents are not provided")
        if init is None and self.denoise_mask is not None:
            raise self._fail("denoise_mask", "inpainting needs the image's latents in latents")
        if self.num_steps < 1:
            raise self._fail("num_steps", f"{self.num_steps}: at least 1 step is needed")
        if self.denoising_start > self.denoising_end:
            raise self._fail("denoising_start", f"{self.denoising_start} is after denoising_end {self.denoising_end}")
        if init is not None and not self.add_noise and self.denoise_mask is None:
            noise = None  # never used: InvokeAI neither reads nor checks it
        elif self.noise is not None:
            noise = self._latents_input(context, "noise", expected)
        else:
            noise = sampling.noise(self.seed, self.height, self.width)
        timesteps = sampling.clip_schedule(sampling.linear_schedule(self.num_steps), self.denoising_start,
                                           self.denoising_end)
        positive, attention = self._positive(context, expected[2] // 2, expected[3] // 2)
        negative = None
        if self.negative_text_conditioning is not None:
            negative = self._embeds(context, "negative_text_conditioning", self.negative_text_conditioning)
        elif abs(self.cfg_scale - 1.0) > 1e-9 and len(timesteps) > 1:
            raise self._fail("negative_text_conditioning", "needed when cfg_scale is not 1.0")
        bn = sampling.bn_stats(vae)
        references = reference_ids = None
        if self.kontext_conditioning:
            fields = self.kontext_conditioning if isinstance(self.kontext_conditioning, list) \
                else [self.kontext_conditioning]
            images = [context.images.get_pil(field.image.image_name, mode="RGB") for field in fields]
            references, reference_ids = reference_images.reference_tokens(vae, images, bn)
            if attention is not None:
                context.logger.warning("FLUX.2 regional prompting is not supported together with reference images; "
                                       "the regional masks are ignored for this generation (as InvokeAI does)")
        return denoise_loop.Flux2DenoiseJob(
            height=self.height, width=self.width, timesteps=timesteps, positive=positive, noise=noise,
            init_latents=init, add_noise=self.add_noise, negative=negative, cfg_scale=self.cfg_scale,
            guidance=self.guidance, scheduler=self.scheduler,
            use_scheduler=self.denoise_mask is None and self.denoising_start <= 1e-5,
            inpaint_mask=self._inpaint_mask(context, expected) if self.denoise_mask is not None else None,
            bn=bn, reference_tokens=references, reference_ids=reference_ids, attention_mask=attention,
            seed=self.seed)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.flux2 import denoise_loop

        models = model_service(self, context, "transformer")
        config = models.get_config(self.transformer.transformer)
        if config.base is not BaseModelType.Flux2 or config.type is not ModelType.Main:
            raise self._fail("transformer", f"expected a FLUX.2 main model's transformer, got {config.name!r} "
                             f"({config.base.value} {config.type.value})")
        with models.load(self.vae.vae) as vae:
            check_flux2_vae(self, "vae", vae)
            job = self.prepare(context, models, vae)

        def on_step(step: int, total: int) -> None:
            context.util.signal_progress(f"Denoising step {step}/{total}", step / total, step=step, total=total)

        with ExitStack() as stack:
            transformer = stack.enter_context(models.load(self.transformer.transformer))
            width = transformer.config.joint_attention_dim
            for field, tensor in (("positive_text_conditioning", job.positive),
                                  ("negative_text_conditioning", job.negative)):
                if tensor is not None and tensor.shape[-1] != width:
                    raise self._fail(field, f"embeddings {tensor.shape[-1]} wide, but this transformer takes "
                                     f"{width} (is the conditioning from this model's Qwen3 encoder, "
                                     "flux2_klein_text_encoder?)")
            stack.enter_context(lora_patched(self, context, "transformer", transformer, self.transformer.loras,
                                             "transformer", BaseModelType.Flux2))
            latents = denoise_loop.run(transformer, job, on_step=on_step)
        return LatentsOutput.build(latents_name=context.tensors.save(latents), latents=latents, seed=None)

"""``flux_denoise``: FLUX.1 text-to-image, image-to-image and inpainting. Type string, title, version 4.6.0, every
field and the output follow InvokeAI's flux_denoise.py, so InvokeAI's FLUX graphs validate unchanged; the loop is
`invokeai_provider.models.flux.denoise_loop`.

Built: noise from the seed (InvokeAI's) or a ``noise`` input, the dev/schnell schedules clipped to
``denoising_start``/``denoising_end``, image-to-image from ``latents`` (with or without ``add_noise``), inpainting
with a ``denoise_mask`` (gradient masks included), dev's ``guidance``, true CFG with a negative conditioning and
``cfg_scale`` per step between ``cfg_scale_start_step`` and ``cfg_scale_end_step``, FLUX Fill models with
``fill_conditioning``, Kontext reference images (both encoded with ``controlnet_vae``), InstantX and XLabs
ControlNets (on the positive prediction), Redux tokens after the positive T5 tokens, the transformer's LoRAs
(patched in for the node's span), progress and cancel at every step. In the GPU runtime, the nodes of one run that
share a shape, schedule and transformer go through it together (`prepare` makes the item that waits for others).
The ``heun`` and ``lcm`` samplers step with diffusers' schedulers over their own schedules, as InvokeAI's do (LCM's
step noise seeded by ``seed``). Not built yet, and refused by name when given: regional prompts (conditioning lists
and masks), masked Redux and DyPE. What steers the loop besides the prompts (Fill, Kontext, ControlNets,
IP-Adapters in the double blocks, a Control LoRA widening the transformer's input for the node's span) is prepared
in `invokeai_provider.operators.flux.denoise_steering`.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Literal, Optional, Union

from invokeai_provider.core.fields import (
    ControlLoRAField,
    DenoiseMaskField,
    FluxConditioningField,
    FluxControlNetField,
    FluxFillConditioningField,
    FluxKontextConditioningField,
    FluxReduxConditioningField,
    IPAdapterField,
    LatentsField,
    TransformerField,
    VAEField,
)
from invokeai_provider.core.invocation import BaseInvocation, Input, InputField, invocation
from invokeai_provider.core.taxonomy import BaseModelType, FluxVariantType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.primitives import LatentsOutput
from invokeai_provider.operators.flux import denoise_steering as steering
from invokeai_provider.operators.sd.common import GenerationError, lora_patched, model_service

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

FLUX_SCHEDULER_NAME_VALUES = Literal["euler", "heun", "lcm"]
DyPEPreset = Literal["off", "manual", "auto", "area", "4k"]


@invocation("flux_denoise", title="FLUX Denoise", tags=["image", "flux"], category="latents", version="4.6.0", gpu=True)
class FluxDenoiseInvocation(BaseInvocation):
    """Run denoising process with a FLUX transformer model."""

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
    control_lora: Optional[ControlLoRAField] = InputField(default=None, description="Control LoRA model to load",
                                                          input=Input.Connection, title="Control LoRA")
    positive_text_conditioning: Union[FluxConditioningField, list[FluxConditioningField]] = InputField(
        description="Positive conditioning tensor", input=Input.Connection)
    negative_text_conditioning: Union[FluxConditioningField, list[FluxConditioningField], None] = InputField(
        default=None, description="Negative conditioning tensor. Can be None if cfg_scale is 1.0.",
        input=Input.Connection)
    redux_conditioning: Union[FluxReduxConditioningField, list[FluxReduxConditioningField], None] = InputField(
        default=None, description="FLUX Redux conditioning tensor.", input=Input.Connection)
    fill_conditioning: Optional[FluxFillConditioningField] = InputField(
        default=None, description="FLUX Fill conditioning.", input=Input.Connection)
    cfg_scale: Union[float, list[float]] = InputField(default=1.0, description="Classifier-Free Guidance scale",
                                                      title="CFG Scale")
    cfg_scale_start_step: int = InputField(
        default=0, title="CFG Scale Start Step", description="Index of the first step to apply cfg_scale. Negative "
        "indices count backwards from the the last step (e.g. a value of -1 refers to the final step).")
    cfg_scale_end_step: int = InputField(
        default=-1, title="CFG Scale End Step", description="Index of the last step to apply cfg_scale. Negative "
        "indices count backwards from the last step (e.g. a value of -1 refers to the final step).")
    width: int = InputField(default=1024, multiple_of=16, description="Width of the generated image.")
    height: int = InputField(default=1024, multiple_of=16, description="Height of the generated image.")
    num_steps: int = InputField(default=4, description="Number of diffusion steps. Recommended values are schnell: 4, "
                                "dev: 50.")
    scheduler: FLUX_SCHEDULER_NAME_VALUES = InputField(
        default="euler", description="Scheduler (sampler) for the denoising process. 'euler' is fast and standard. "
        "'heun' is 2nd-order (better quality, 2x slower). 'lcm' is optimized for few steps.")
    guidance: float = InputField(default=4.0, description="The guidance strength. Higher values adhere more strictly "
                                 "to the prompt, and will produce less diverse images. FLUX dev only, ignored for "
                                 "schnell.")
    seed: int = InputField(default=0, description="Randomness seed for reproducibility.")
    control: Union[FluxControlNetField, list[FluxControlNetField], None] = InputField(
        default=None, input=Input.Connection, description="ControlNet models.")
    controlnet_vae: Optional[VAEField] = InputField(default=None, description="VAE", input=Input.Connection)
    ip_adapter: Union[IPAdapterField, list[IPAdapterField], None] = InputField(
        description="IP-Adapter to apply", title="IP-Adapter", default=None, input=Input.Connection)
    kontext_conditioning: Union[FluxKontextConditioningField, list[FluxKontextConditioningField], None] = InputField(
        default=None, description="FLUX Kontext conditioning (reference image).", input=Input.Connection)
    dype_preset: DyPEPreset = InputField(
        default="off", description="DyPE preset for high-resolution generation. 'auto' enables automatically for "
        "resolutions > 1536px. 'area' enables automatically based on image area. '4k' uses optimized settings for 4K "
        "output.", ui_order=100)
    dype_scale: Optional[float] = InputField(default=None, ge=0.0, le=8.0, description="DyPE magnitude (λs). Higher "
                                             "values = stronger extrapolation. Only used when dype_preset is not "
                                             "'off'.", ui_order=101)
    dype_exponent: Optional[float] = InputField(default=None, ge=0.0, le=1000.0, description="DyPE decay speed (λt). "
                                                "Controls transition from low to high frequency detail. Only used "
                                                "when dype_preset is not 'off'.", ui_order=102)

    def _refuse_what_is_not_built(self) -> None:
        if self.dype_preset != "off":
            raise field_error(GenerationError, self, "dype_preset", "DyPE is not supported by this provider's FLUX yet")

    def _conditioning(self, context: "InvocationContext", field: str) -> Any:
        from invokeai_provider.models.flux.text_encoding import FluxConditioning

        value = getattr(self, field)
        if isinstance(value, list):
            if len(value) != 1:
                raise field_error(GenerationError, self, field, "several (regional) conditionings are not supported "
                                  "by this provider's FLUX yet")
            value = value[0]
        if value.mask is not None:
            raise field_error(GenerationError, self, field, "masked (regional) conditioning is not supported yet")
        tensors = context.conditioning.load_dict(value.conditioning_name)
        return FluxConditioning(t5_embeds=tensors["t5_embeds"], clip_embeds=tensors["clip_embeds"])

    def _positive_with_redux(self, context: "InvocationContext") -> Any:
        """The positive conditioning, with the Redux conditionings' tokens after its T5 tokens (InvokeAI's order;
        the negative gets none). Masked (regional) Redux conditioning is refused, as masked prompts are."""
        from invokeai_provider.models.flux.redux import ReduxError, with_redux

        positive = self._conditioning(context, "positive_text_conditioning")
        fields = self.redux_conditioning if isinstance(self.redux_conditioning, list) else \
            [self.redux_conditioning] if self.redux_conditioning is not None else []
        if any(field.mask is not None for field in fields):
            raise field_error(GenerationError, self, "redux_conditioning", "masked (regional) Redux conditioning is "
                              "not supported by this provider's FLUX yet")
        try:
            return with_redux(positive, [context.tensors.load(f.conditioning.tensor_name) for f in fields])
        except ReduxError as exc:
            raise field_error(GenerationError, self, "redux_conditioning", str(exc)) from None

    def cfg_schedule(self, steps: int) -> list[float]:
        """InvokeAI's per-step CFG: ``cfg_scale`` (or its list) between the start and end step, 1 elsewhere."""
        scales = [float(self.cfg_scale)] * steps if not isinstance(self.cfg_scale, list) else list(self.cfg_scale)
        if len(scales) != steps:
            raise field_error(GenerationError, self, "cfg_scale", f"a list of {len(scales)} values for {steps} steps")
        start, end = (i + steps if i < 0 else i for i in (self.cfg_scale_start_step, self.cfg_scale_end_step))
        if not 0 <= start < steps:
            raise field_error(GenerationError, self, "cfg_scale_start_step", f"out of range for {steps} steps")
        if not 0 <= end < steps:
            raise field_error(GenerationError, self, "cfg_scale_end_step", f"out of range for {steps} steps")
        if start > end:
            raise field_error(GenerationError, self, "cfg_scale_start_step", "must be before cfg_scale_end_step")
        return [scales[i] if start <= i <= end else 1.0 for i in range(steps)]

    def _latents_input(self, context: "InvocationContext", field: str, expected: tuple[int, ...]) -> Any:
        """The latents or noise input, which must fit ``width`` and ``height`` (InvokeAI checks the same)."""
        tensor = context.tensors.load(getattr(self, field).latents_name)
        if tuple(tensor.shape) != expected:
            raise field_error(GenerationError, self, field, f"shape {tuple(tensor.shape)} does not fit a "
                              f"{self.width}x{self.height} image (expected {expected})")
        return tensor

    def _inpaint_mask(self, context: "InvocationContext", shape: tuple[int, ...]) -> Any:
        """The denoise mask inverted (1 where the image is regenerated) and resized to the latents, as InvokeAI
        prepares it (bilinear, no antialiasing)."""
        import torch.nn.functional as F

        mask = context.tensors.load(self.denoise_mask.mask_name).float()
        if mask.ndim not in (2, 3, 4) or (mask.ndim > 2 and mask.shape[-3] != 1):
            raise field_error(GenerationError, self, "denoise_mask", f"a mask of shape {tuple(mask.shape)}; "
                              "expected one channel (1, H, W) or (1, 1, H, W)")
        mask = (1.0 - mask).reshape(1, 1, *mask.shape[-2:])
        return F.interpolate(mask, size=shape[-2:], mode="bilinear", align_corners=False, antialias=False)

    def prepare(self, context: "InvocationContext") -> Any:
        """The node's denoising job, checked and with its inputs read, but no transformer loaded (a
        `invokeai_provider.models.flux.denoise_loop.FluxDenoiseItem`): it may wait to share passes."""
        from invokeai_provider.models.flux import denoise_loop, sampling

        self._refuse_what_is_not_built()
        models = model_service(self, context, "transformer")
        config = models.get_config(self.transformer.transformer)
        expected = sampling.latent_shape(self.height, self.width)
        init = self._latents_input(context, "latents", expected) if self.latents is not None else None
        if init is None and self.denoising_start > 1e-5:
            raise field_error(GenerationError, self, "denoising_start", "should be 0 when initial latents are not "
                              "provided")
        if init is None and self.denoise_mask is not None:
            raise field_error(GenerationError, self, "denoise_mask", "inpainting needs the image's latents in "
                              "latents")
        if init is not None and not self.add_noise and self.denoise_mask is None:
            noise = init  # never used: InvokeAI neither reads nor checks it
        elif self.noise is not None:
            noise = self._latents_input(context, "noise", expected)
        else:
            noise = sampling.noise(self.seed, self.height, self.width)
        schnell = config.variant is FluxVariantType.Schnell
        timesteps = sampling.clip_schedule(
            sampling.schedule(self.num_steps, (self.height // 16) * (self.width // 16), shift=not schnell),
            self.denoising_start, self.denoising_end)
        cfg = self.cfg_schedule(len(timesteps) - 1) if len(timesteps) > 1 else []
        negative = None
        if any(scale != 1.0 for scale in cfg):
            if self.negative_text_conditioning is None:
                raise field_error(GenerationError, self, "negative_text_conditioning", "needed when cfg_scale is "
                                  "not 1.0")
            negative = self._conditioning(context, "negative_text_conditioning")
        channel_condition = None
        if config.variant is FluxVariantType.DevFill:
            channel_condition = steering.fill_condition(self, context, models)
        elif self.fill_conditioning is not None:
            raise field_error(GenerationError, self, "fill_conditioning", "given, but the model is not a FLUX Fill "
                              "model")
        if self.control_lora is not None:
            channel_condition = steering.control_lora_condition(self, context, models, config)
        references, reference_ids = (steering.kontext_references(self, context, models) if self.kontext_conditioning
                                     else (None, None))
        job = denoise_loop.FluxDenoiseJob(
            noise=noise, positive=self._positive_with_redux(context), timesteps=timesteps,
            height=self.height, width=self.width, guidance=self.guidance, negative=negative, cfg_scale=cfg or [1.0],
            init_latents=init, add_noise=self.add_noise,
            inpaint_mask=self._inpaint_mask(context, expected) if self.denoise_mask is not None else None,
            channel_condition=channel_condition, reference_tokens=references, reference_ids=reference_ids,
            scheduler=self.scheduler, seed=self.seed)

        def on_step(step: int, total: int) -> None:
            context.util.signal_progress(f"Denoising step {step}/{total}", step / total, step=step, total=total)

        @contextmanager
        def open_transformer() -> Iterator[Any]:
            with ExitStack() as stack:
                job.controls = steering.controls(self, context, models, stack, len(timesteps) - 1)
                job.ip_adapters = steering.ip_adapters(self, context, models, stack, len(timesteps) - 1)
                transformer = stack.enter_context(models.load(self.transformer.transformer))
                stack.enter_context(lora_patched(self, context, "transformer", transformer, self.transformer.loras,
                                                 "transformer", BaseModelType.Flux))
                if self.control_lora is not None:  # last, as InvokeAI applies it: the transformer takes 128 channels
                    stack.enter_context(steering.control_lora_applied(self, context, models, transformer))
                yield transformer

        return denoise_loop.FluxDenoiseItem(
            job=job, context=context, open_transformer=open_transformer, on_step=on_step,
            alone=bool(self.control or self.control_lora or self.ip_adapter),
            transformer_spec=self.transformer.model_dump(mode="json"))

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.flux.denoise_loop import run_items

        item = self.prepare(context)
        device = context.services.get("device")  # the GPU runtime's: items of a run share transformer passes
        if device is not None:
            latents = device.denoise(item, runner=run_items)
        else:
            [latents] = run_items([item])
            if isinstance(latents, BaseException):
                raise latents
        latents = latents.cpu()
        return LatentsOutput.build(latents_name=context.tensors.save(latents), latents=latents, seed=None)

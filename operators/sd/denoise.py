"""The SD1.x/SD2.x/SDXL denoise node: text-to-image from noise, image-to-image from latents, inpainting with
a denoise mask.

Type string, fields, version and output follow InvokeAI's denoise_latents.py. The node prepares a
:class:`~invokeai_provider.models.stable_diffusion.denoise_loop.DenoiseItem` (conditioning, scheduler,
timesteps, mask) and the sampling loop of :mod:`invokeai_provider.models.stable_diffusion.denoise_loop` runs
it, alone or batched with other nodes' items; the UNet is entered with its LoRAs, seamless axes and FreeU.
torch and diffusers are imported inside ``invoke()``.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

from invokeai_provider.core.fields import (
    ConditioningField,
    ControlField,
    DenoiseMaskField,
    IPAdapterField,
    LatentsField,
    T2IAdapterField,
    UNetField,
)
from invokeai_provider.core.invocation import BaseInvocation, Input, InputField, invocation
from invokeai_provider.core.taxonomy import ModelType
from invokeai_provider.operators.core.primitives import LatentsOutput
from invokeai_provider.operators.sd.common import (
    LATENTS_DESCRIPTION,
    GenerationError,
    lora_patched,
    model_service,
)
from invokeai_provider.operators.sd.model_fields import (
    SCHEDULER_DESCRIPTION,
    SCHEDULER_NAME_VALUES,
    UNET_DESCRIPTION,
)

if TYPE_CHECKING:
    import torch

    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.models.stable_diffusion.denoise_loop import DenoiseItem


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _joined_conditioning(node: BaseInvocation, context: "InvocationContext",
                         value: Union[ConditioningField, list[ConditioningField]], latent_shape: Any) -> Any:
    """One CFG half's conditionings, joined as InvokeAI joins regional prompts (one unmasked conditioning is itself)."""
    from invokeai_provider.models.stable_diffusion.cross_attention import join_conditionings

    fields = _as_list(value)
    conditionings = [context.conditioning.load_dict(f.conditioning_name) for f in fields]
    masks = [context.tensors.load(f.mask.tensor_name) if f.mask is not None else None for f in fields]
    return join_conditionings(conditionings, masks, latent_shape[-2], latent_shape[-1])


def init_timesteps(scheduler: Any, steps: int, denoising_start: float,
                   denoising_end: float) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The timesteps to run and the first one, for a denoising_start..denoising_end window (InvokeAI's rule)."""
    scheduler.set_timesteps(steps, device="cpu")
    timesteps = scheduler.timesteps
    order = scheduler.order
    first_order = timesteps[::order]
    train = scheduler.config["num_train_timesteps"]
    start_value = int(round(train * (1 - denoising_start)))
    start = len([t for t in first_order if t >= start_value])
    end_value = int(round(train * (1 - denoising_end)))
    end = len([t for t in first_order[start:] if t >= end_value])
    start, end = start * order, end * order
    return timesteps[start:start + end], timesteps[start:start + 1]


@invocation("denoise_latents", title="Denoise - SD1.5, SDXL",
            tags=["latents", "denoise", "txt2img", "t2i", "t2l", "img2img", "i2i", "l2l"], category="latents",
            version="1.6.0", gpu=True)
class DenoiseLatentsInvocation(BaseInvocation):
    """Denoises latents with a UNet: text-to-image from noise, image-to-image from latents, inpainting with a mask."""

    positive_conditioning: Union[ConditioningField, list[ConditioningField]] = InputField(
        description="Positive conditioning tensor", input=Input.Connection, ui_order=0)
    negative_conditioning: Union[ConditioningField, list[ConditioningField]] = InputField(
        description="Negative conditioning tensor", input=Input.Connection, ui_order=1)
    noise: Optional[LatentsField] = InputField(default=None, description="Noise tensor", input=Input.Connection,
                                               ui_order=3)
    steps: int = InputField(default=10, gt=0, description="Number of steps to run")
    cfg_scale: Union[float, list[float]] = InputField(default=7.5, description="Classifier-Free Guidance scale",
                                                      title="CFG Scale")
    denoising_start: float = InputField(default=0.0, ge=0, le=1,
                                        description="When to start denoising, expressed a percentage of total steps")
    denoising_end: float = InputField(default=1.0, ge=0, le=1,
                                      description="When to stop denoising, expressed a percentage of total steps")
    scheduler: SCHEDULER_NAME_VALUES = InputField(default="euler", description=SCHEDULER_DESCRIPTION,
                                                  ui_type="SchedulerField")
    unet: UNetField = InputField(description=UNET_DESCRIPTION, input=Input.Connection, title="UNet",
                                 ui_order=2)
    control: Optional[Union[ControlField, list[ControlField]]] = InputField(default=None, input=Input.Connection,
                                                                            ui_order=5)
    ip_adapter: Optional[Union[IPAdapterField, list[IPAdapterField]]] = InputField(
        default=None, description="IP-Adapter to apply", title="IP-Adapter", input=Input.Connection, ui_order=6)
    t2i_adapter: Optional[Union[T2IAdapterField, list[T2IAdapterField]]] = InputField(
        default=None, description="T2I-Adapter(s) to apply", title="T2I-Adapter", input=Input.Connection, ui_order=7)
    cfg_rescale_multiplier: float = InputField(title="CFG Rescale Multiplier", default=0, ge=0, lt=1,
                                               description="Rescale multiplier for CFG guidance, used for models trained with zero-terminal SNR")
    hidiffusion: bool = InputField(default=False, description="Enable HiDiffusion")
    hidiffusion_raunet: bool = InputField(default=True, description="Apply HiDiffusion RAU-Net")
    hidiffusion_window_attn: bool = InputField(default=True, description="Apply HiDiffusion window attention")
    hidiffusion_t1_ratio: float = InputField(default=0.4, ge=0, le=1, description="HiDiffusion T1 ratio")
    hidiffusion_t2_ratio: float = InputField(default=0.0, ge=0, le=1, description="HiDiffusion T2 ratio")
    latents: Optional[LatentsField] = InputField(default=None, description=LATENTS_DESCRIPTION,
                                                 input=Input.Connection, ui_order=4)
    denoise_mask: Optional[DenoiseMaskField] = InputField(default=None, description="A mask of the region to apply the denoising process to. Values of 0.0 represent total denoising, 1.0 is no denoising.",
                                                          input=Input.Connection, ui_order=8)

    def _refuse_unsupported(self) -> None:
        if self.hidiffusion:
            raise GenerationError(f"node {self.id} (denoise_latents): field hidiffusion: not supported yet",
                                  node_id=self.id, field="hidiffusion")
        if self.noise is None and self.latents is None:
            raise GenerationError(f"node {self.id} (denoise_latents): fields noise and latents are both empty; "
                                  "connect noise (text-to-image) or latents (image-to-image)", node_id=self.id,
                                  field="noise")

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.stable_diffusion.denoise_loop import denoise_alone

        item = self.prepare(context)
        if item.runs_no_step:
            result = item.orig_latents
        else:
            device = context.services.get("device")  # the GPU runtime's, to share UNet passes
            result = device.denoise(item) if device is not None else denoise_alone(item)
        name = context.tensors.save(result)
        return LatentsOutput.build(name, result, seed=None)

    def prepare(self, context: "InvocationContext") -> "DenoiseItem":
        """Everything the sampling loop needs except the UNet itself, which the loop enters (``open_unet``):
        a prepared item can wait for others to share its UNet passes without holding the model."""
        import torch

        from invokeai_provider.models.stable_diffusion.cross_attention import CrossAttentionState
        from invokeai_provider.models.stable_diffusion.denoise_loop import DenoiseItem
        from invokeai_provider.models.stable_diffusion.schedulers import make_scheduler

        self._refuse_unsupported()
        models = model_service(self, context, "unet")
        noise = context.tensors.load(self.noise.latents_name) if self.noise else None
        # InvokeAI's seed: the noise's, else the latents', else 0
        seed = next((f.seed for f in (self.noise, self.latents) if f is not None and f.seed is not None), 0)
        latents = context.tensors.load(self.latents.latents_name) if self.latents else torch.zeros_like(noise)
        if noise is not None and noise.shape != latents.shape:
            raise GenerationError(f"node {self.id} (denoise_latents): field noise: shape {tuple(noise.shape)} does "
                                  f"not match latents {tuple(latents.shape)}", node_id=self.id, field="noise")
        positive = _joined_conditioning(self, context, self.positive_conditioning, latents.shape)
        negative = _joined_conditioning(self, context, self.negative_conditioning, latents.shape)
        with models.load(self.unet.scheduler) as scheduler_config:
            scheduler = make_scheduler(self.scheduler, scheduler_config, seed=seed)
        timesteps, init_timestep = init_timesteps(scheduler, self.steps, self.denoising_start, self.denoising_end)
        cfg = _as_list(self.cfg_scale)
        if len(cfg) not in (1, len(timesteps)):
            raise GenerationError(f"node {self.id} (denoise_latents): field cfg_scale: a list needs one value per step "
                                  f"({len(timesteps)}), got {len(cfg)}", node_id=self.id, field="cfg_scale")
        mask = masked_latents = None
        if self.denoise_mask is not None:
            mask = context.tensors.load(self.denoise_mask.mask_name)
            mask = torch.nn.functional.interpolate(mask.float(), size=latents.shape[-2:], mode="bilinear",
                                                   align_corners=False)
            if self.denoise_mask.masked_latents_name:
                masked_latents = context.tensors.load(self.denoise_mask.masked_latents_name)
        controls = self._control_images(context, latents.shape, len(timesteps))
        adapters = self._adapters(context, latents.shape, len(timesteps))
        attention = CrossAttentionState(adapters=self._ip_adapters(context, latents.shape, len(timesteps)))
        if positive.regions is not None or negative.regions is not None:
            attention.regions = (negative.regions, positive.regions)
        item = DenoiseItem(
            node_id=self.id, context=context, open_unet=lambda: self._unet(context, item, controls),
            unet_spec=self.unet.model_dump(mode="json", exclude={"scheduler"}), scheduler=scheduler,
            timesteps=timesteps, init_timestep=init_timestep, orig_latents=latents, noise=noise, seed=seed,
            positive=positive.tensors, negative=negative.tensors, cfg=[float(c) for c in cfg],
            cfg_rescale_multiplier=self.cfg_rescale_multiplier, mask=mask, masked_latents=masked_latents,
            gradient=bool(self.denoise_mask and self.denoise_mask.gradient), adapters=adapters, attention=attention,
            has_controls=bool(controls or adapters or attention.active))
        return item

    def _adapters(self, context: "InvocationContext", latent_shape: Any, steps: int) -> list[Any]:
        """Each T2I-Adapter's features of its image, computed once before the loop (the adapter is released)."""
        from invokeai_provider.models.stable_diffusion.t2i_adapter import SDAdapter, adapter_features
        from invokeai_provider.operators.core.models import check_model

        fields = _as_list(self.t2i_adapter) if self.t2i_adapter else []
        models = model_service(self, context, "unet")
        base = models.get_config(self.unet.unet).base if fields else None
        adapters = []
        for field in fields:
            check_model(self, "t2i_adapter", field.t2i_adapter_model, context, ModelType.T2IAdapter, (base,))
            if isinstance(field.weight, list) and len(field.weight) != steps:
                raise GenerationError(f"node {self.id} (denoise_latents): field t2i_adapter: a list of "
                                      f"{len(field.weight)} weights for {steps} steps", node_id=self.id,
                                      field="t2i_adapter")
            image = context.images.get_pil(field.image.image_name)
            with models.load(field.t2i_adapter_model) as model:
                try:
                    features = adapter_features(model, image, base.value, tuple(latent_shape[-2:]), field.resize_mode)
                except ValueError as exc:
                    raise GenerationError(f"node {self.id} (denoise_latents): field t2i_adapter: {exc}",
                                          node_id=self.id, field="t2i_adapter") from None
            adapters.append(SDAdapter(features=features, weight=field.weight,
                                      begin_step_percent=field.begin_step_percent,
                                      end_step_percent=field.end_step_percent))
        return adapters

    def _ip_adapters(self, context: "InvocationContext", latent_shape: Any, steps: int) -> list[Any]:
        """Each IP-Adapter's image tokens, computed once before the loop (adapter and encoder are released); the
        adapter loads again with the UNet for its attention weights."""
        from invokeai_provider.models.stable_diffusion.cross_attention import IPAdapterUse, latent_mask
        from invokeai_provider.models.stable_diffusion.ip_adapter import IPAdapterError, image_prompt
        from invokeai_provider.operators.core.models import check_model

        fields = _as_list(self.ip_adapter) if self.ip_adapter else []
        models = model_service(self, context, "unet")
        base = models.get_config(self.unet.unet).base if fields else None
        uses = []
        for field in fields:
            check_model(self, "ip_adapter", field.ip_adapter_model, context, ModelType.IPAdapter, (base,))
            check_model(self, "ip_adapter", field.image_encoder_model, context, ModelType.CLIPVision)
            if isinstance(field.weight, list) and len(field.weight) != steps:
                raise GenerationError(f"node {self.id} (denoise_latents): field ip_adapter: a list of "
                                      f"{len(field.weight)} weights for {steps} steps", node_id=self.id,
                                      field="ip_adapter")
            images = [context.images.get_pil(image.image_name, mode="RGB") for image in _as_list(field.image)]
            mask = context.tensors.load(field.mask.tensor_name) if field.mask is not None else None
            with models.load(field.ip_adapter_model) as adapter, models.load(field.image_encoder_model) as encoder:
                try:
                    prompt = image_prompt(adapter, encoder, images)
                except IPAdapterError as exc:
                    raise GenerationError(f"node {self.id} (denoise_latents): field ip_adapter: {exc}",
                                          node_id=self.id, field="ip_adapter") from None
            uses.append(IPAdapterUse(prompt=prompt, weight=field.weight, begin_step_percent=field.begin_step_percent,
                                     end_step_percent=field.end_step_percent, target_blocks=list(field.target_blocks),
                                     method=field.method, mask=latent_mask(mask, *latent_shape[-2:])))
        return uses

    def _control_images(self, context: "InvocationContext", latent_shape: Any, steps: int
                        ) -> list[tuple[ControlField, Any]]:
        """Each ControlNet field with its control image prepared at the generation's size (InvokeAI's resize
        modes); its model loads with the UNet."""
        from invokeai_provider.models.image_util.control_image import prepare_control_image
        from invokeai_provider.operators.core.models import check_model

        fields = _as_list(self.control) if self.control else []
        base = model_service(self, context, "unet").get_config(self.unet.unet).base if fields else None
        prepared = []
        for field in fields:
            check_model(self, "control", field.control_model, context, ModelType.ControlNet, (base,))
            if isinstance(field.control_weight, list) and len(field.control_weight) != steps:
                raise GenerationError(f"node {self.id} (denoise_latents): field control: a list of "
                                      f"{len(field.control_weight)} control weights for {steps} steps",
                                      node_id=self.id, field="control")
            image = context.images.get_pil(field.image.image_name)
            prepared.append((field, prepare_control_image(image, latent_shape[-1] * 8, latent_shape[-2] * 8,
                                                          field.resize_mode)))
        return prepared

    @contextmanager
    def _unet(self, context: "InvocationContext", item: "DenoiseItem",
              controls: list[tuple[ControlField, Any]]) -> Iterator[Any]:
        """The UNet as this node runs it: loaded, with its LoRAs, seamless axes and FreeU, without grad; its
        ControlNets loaded into the item."""
        import torch

        from invokeai_provider.models.stable_diffusion.controlnet import SDControl
        from invokeai_provider.models.stable_diffusion.cross_attention import CrossAttentionError, cross_attention_patched
        from invokeai_provider.models.stable_diffusion.extensions import freeu, seamless

        models = model_service(self, context, "unet")
        base = models.get_config(self.unet.unet).base
        with ExitStack() as stack:
            item.controls = [SDControl(model=stack.enter_context(models.load(field.control_model)), image=image,
                                       weight=field.control_weight, begin_step_percent=field.begin_step_percent,
                                       end_step_percent=field.end_step_percent, mode=field.control_mode)
                             for field, image in controls]
            for use, field in zip(item.attention.adapters, _as_list(self.ip_adapter) if self.ip_adapter else []):
                use.model = stack.enter_context(models.load(field.ip_adapter_model))
            unet = stack.enter_context(models.load(self.unet.unet))
            try:
                stack.enter_context(cross_attention_patched(unet, item.attention))
            except CrossAttentionError as exc:
                raise GenerationError(f"node {self.id} (denoise_latents): field ip_adapter: {exc}", node_id=self.id,
                                      field="ip_adapter") from None
            with lora_patched(self, context, "unet", unet, self.unet.loras, "unet", base), \
                    seamless(unet, self.unet.seamless_axes), freeu(unet, self.unet.freeu_config), torch.no_grad():
                yield unet

"""Stable Diffusion 1.x/2.x/SDXL generation nodes: prompts (compel), denoising, VAE encode and decode.

Type strings, fields, versions and outputs follow InvokeAI's compel.py, denoise_latents.py,
latents_to_image.py, image_to_latents.py and create_denoise_mask.py. Models come from the run's model
service (``context.services["models"]``); torch, diffusers, transformers and compel are imported
inside ``invoke()`` so DAG parsing stays light.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Literal, Optional, Union

from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.core.fields import (
    CLIPField,
    ConditioningField,
    ControlField,
    DenoiseMaskField,
    ImageField,
    IPAdapterField,
    LatentsField,
    ModelIdentifierField,
    T2IAdapterField,
    TensorField,
    UNetField,
    VAEField,
)
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    WithBoard,
    WithMetadata,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import (
    BaseModelType,
    ModelVariantType,
    SubModelType,
)
from invokeai_provider.operators.sd.model_fields import (
    CLIP_DESCRIPTION,
    SCHEDULER_DESCRIPTION,
    SCHEDULER_NAME_VALUES,
    UNET_DESCRIPTION,
    VAE_DESCRIPTION,
)
from invokeai_provider.operators.core.primitives import (
    ConditioningOutput,
    DenoiseMaskOutput,
    ImageOutput,
    LatentsOutput,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.models.stable_diffusion.denoise_loop import DenoiseItem

COMPENSATION_OPTIONS = Literal["None", "SDXL"]
# (scale, bias) applied to SDXL images before encoding: InvokeAI's experimentally found colour-drift fix.
COLOR_COMPENSATION = {"None": (1.0, 0.0), "SDXL": (1.015, -0.002)}
BASIC, SDXL = "basic", "sdxl"
_PROMPT = "Prompt to be parsed by Compel to create a conditioning tensor"
_LATENTS = "Latents tensor"
_TILED = "Processing using overlapping tiles (reduce memory consumption)"
_FP32 = "Whether or not to use full float32 precision"
_TILE_SIZE = ("The tile size for VAE tiling in pixels (image space). If set to 0, the default tile size for the model "
              "will be used. Larger tile sizes generally produce better results at the cost of higher memory usage.")


class GenerationError(InvokeAIProviderError):
    """A generation node cannot run with what it was given; the message names the node and field."""


def _models(node: BaseInvocation, context: "InvocationContext", field: str) -> Any:
    models = context.services.get("models")
    if models is None:
        raise GenerationError(f"node {node.id} ({node.get_type()}): field {field}: no model service in this run; "
                              "run with a model root (invokeai-airflow graph run --model-root ...)",
                              node_id=node.id, field=field)
    return models


def _lora_weights(node: BaseInvocation, context: "InvocationContext", field: str,
                  loras: list[Any]) -> list[tuple[Any, float]]:
    """(tensors, weight) of each LoRA on a UNet or CLIP field, loaded through the model cache."""
    models = _models(node, context, field)
    weights = []
    for lora in loras:
        with models.load(lora.lora) as tensors:
            weights.append((tensors, lora.weight))
    return weights


@contextmanager
def _patched(node: BaseInvocation, context: "InvocationContext", field: str, model: Any, loras: list[Any],
             target: str, base: BaseModelType) -> Iterator[None]:
    """The model with the field's LoRAs applied for the block; the cached weights are restored afterwards."""
    if not loras:
        yield
        return
    from invokeai_provider.models.patches.lora import LoraKeyError, apply_loras

    try:
        with apply_loras(model, _lora_weights(node, context, field, loras), target=target, base=base.value):
            yield
    except LoraKeyError as exc:
        raise GenerationError(f"node {node.id} ({node.get_type()}): field {field}: {exc}", node_id=node.id,
                              field=field) from None


@contextmanager
def _with_embeddings(node: BaseInvocation, context: "InvocationContext", field: str, prompt: str, tokenizer: Any,
                     text_encoder: Any, base: BaseModelType, target: Optional[str]) -> Iterator[tuple[Any, Any]]:
    """The tokenizer (and compel's manager) knowing the prompt's ``<embedding>`` triggers, for the block."""
    from invokeai_provider.models.patches.embeddings import (
        apply_embeddings,
        embedding_vectors,
        trigger_names_in,
    )

    models = _models(node, context, field)
    vectors = {}
    for name in trigger_names_in(prompt):
        config = models.find_embedding(name, base)
        if config is None:
            continue  # as in InvokeAI: an unknown <name> stays plain text
        with models.load(ModelIdentifierField.model_validate(config.identifier())) as state_dict:
            vectors[name] = embedding_vectors(state_dict, target)
    if not vectors:
        yield tokenizer, None
        return
    with apply_embeddings(tokenizer, text_encoder, vectors) as (patched_tokenizer, manager):
        yield patched_tokenizer, manager


@contextmanager
def _seamless(model: Any, axes: list[str]) -> Iterator[None]:
    """Every Conv2d pads circularly along the seamless axes for the block, so the output tiles."""
    import torch

    if not axes:
        yield
        return
    x_mode = "circular" if "x" in axes else "constant"
    y_mode = "circular" if "y" in axes else "constant"

    def forward(layer: torch.nn.Conv2d, tensor: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        left, right, top, bottom = layer._reversed_padding_repeated_twice
        tensor = torch.nn.functional.pad(tensor, (left, right, 0, 0), mode=x_mode)
        tensor = torch.nn.functional.pad(tensor, (0, 0, top, bottom), mode=y_mode)
        return torch.nn.functional.conv2d(tensor, weight, bias, layer.stride, 0, layer.dilation, layer.groups)

    patched = [layer for layer in model.modules() if isinstance(layer, torch.nn.Conv2d)]
    for layer in patched:
        layer._conv_forward = forward.__get__(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer._conv_forward  # back to the class's method


@contextmanager
def _freeu(unet: Any, config: Any) -> Iterator[None]:
    """FreeU's backbone/skip scaling (diffusers' implementation) for the block."""
    if config is None:
        yield
        return
    unet.enable_freeu(s1=config.s1, s2=config.s2, b1=config.b1, b2=config.b2)
    try:
        yield
    finally:
        unet.disable_freeu()


@contextmanager
def _clip_skip(text_encoder: Any, skipped_layers: int) -> Iterator[None]:
    """Drops the last ``skipped_layers`` encoder layers for the duration of the block."""
    if skipped_layers <= 0:
        yield
        return
    layers = text_encoder.text_model.encoder.layers
    removed = [layers.pop(-1) for _ in range(skipped_layers)]
    try:
        yield
    finally:
        for layer in reversed(removed):
            layers.append(layer)


def _encode(node: BaseInvocation, context: "InvocationContext", clip: CLIPField, prompt: str, *, pooled: bool,
            field: str, penultimate: bool) -> tuple["torch.Tensor", Optional["torch.Tensor"]]:
    """Compel embeddings (and the pooled vector) of one prompt with one CLIP text encoder, its LoRAs applied."""
    import torch
    from compel import Compel, ReturnedEmbeddingsType, SplitLongTextMode

    models = _models(node, context, field)
    base = models.get_config(clip.text_encoder).base
    second = clip.text_encoder.submodel_type is SubModelType.TextEncoder2
    target = "text_encoder_2" if second else "text_encoder"
    embedding_part = ("clip_g" if second else "clip_l") if base is BaseModelType.StableDiffusionXL else None
    with models.load(clip.tokenizer) as tokenizer, models.load(clip.text_encoder) as text_encoder, \
            _patched(node, context, field, text_encoder, clip.loras, target, base), \
            _clip_skip(text_encoder, clip.skipped_layers), \
            _with_embeddings(node, context, field, prompt, tokenizer, text_encoder, base, embedding_part) \
            as (patched_tokenizer, ti_manager), torch.no_grad():
        embeddings = (ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED if penultimate
                      else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
        compel = Compel(tokenizer=patched_tokenizer, text_encoder=text_encoder, textual_inversion_manager=ti_manager,
                        truncate_long_prompts=False, returned_embeddings_type=embeddings, requires_pooled=pooled,
                        device=models.device, dtype_for_device_getter=lambda _device: text_encoder.dtype,
                        split_long_text_mode=SplitLongTextMode.SENTENCES)
        conjunction = Compel.parse_prompt_string(prompt)
        embeds, _options = compel.build_conditioning_tensor_for_conjunction(conjunction)
        pooled_embeds = compel.conditioning_provider.get_pooled_embeddings([prompt]) if pooled else None
    return embeds.detach().float().cpu(), None if pooled_embeds is None else pooled_embeds.detach().float().cpu()


def _zeros_like_encoder(node: BaseInvocation, context: "InvocationContext", clip: CLIPField, pooled: bool,
                        field: str) -> tuple["torch.Tensor", Optional["torch.Tensor"]]:
    """InvokeAI's SDXL empty-prompt embedding: zeros of the encoder's width (and pooled width)."""
    import torch

    with _models(node, context, field).load(clip.text_encoder) as text_encoder:
        config = text_encoder.config
        embeds = torch.zeros((1, config.max_position_embeddings, config.hidden_size))
        pooled_embeds = torch.zeros((1, getattr(config, "projection_dim", config.hidden_size))) if pooled else None
    return embeds, pooled_embeds


def _save_conditioning(context: "InvocationContext", kind: str, **tensors: "torch.Tensor") -> str:
    return context.conditioning.save_dict({k: v for k, v in tensors.items() if v is not None}, metadata={"kind": kind})


@invocation("compel", title="Prompt - SD1.5", tags=["prompt", "compel"], category="prompt", version="1.2.1", gpu=True)
class CompelInvocation(BaseInvocation):
    """Turns a prompt (with compel's weighting syntax) into SD1.x/SD2.x conditioning."""

    prompt: str = InputField(default="", description=_PROMPT,
                             ui_component="textarea")
    clip: CLIPField = InputField(title="CLIP", description=CLIP_DESCRIPTION)
    mask: Optional[TensorField] = InputField(default=None,
                                             description="A mask defining the region that this conditioning prompt applies to.")

    def invoke(self, context: "InvocationContext") -> ConditioningOutput:
        embeds, _ = _encode(self, context, self.clip, self.prompt, pooled=False, field="clip", penultimate=False)
        name = _save_conditioning(context, BASIC, embeds=embeds)
        return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name, mask=self.mask))


def _time_ids(values: tuple[float, ...]) -> "torch.Tensor":
    import torch

    return torch.tensor([list(values)], dtype=torch.float32)


@invocation("sdxl_compel_prompt", title="Prompt - SDXL", tags=["sdxl", "compel", "prompt"], category="prompt",
            version="1.2.1", gpu=True)
class SDXLCompelPromptInvocation(BaseInvocation):
    """Turns a prompt (and optional style prompt) into SDXL conditioning with both text encoders."""

    prompt: str = InputField(default="", description=_PROMPT,
                             ui_component="textarea")
    style: str = InputField(default="", description=_PROMPT,
                            ui_component="textarea")
    original_width: int = InputField(default=1024, description="")
    original_height: int = InputField(default=1024, description="")
    crop_top: int = InputField(default=0, description="")
    crop_left: int = InputField(default=0, description="")
    target_width: int = InputField(default=1024, description="")
    target_height: int = InputField(default=1024, description="")
    clip: CLIPField = InputField(description=CLIP_DESCRIPTION,
                                 input=Input.Connection, title="CLIP 1")
    clip2: CLIPField = InputField(description=CLIP_DESCRIPTION,
                                  input=Input.Connection, title="CLIP 2")
    mask: Optional[TensorField] = InputField(default=None,
                                             description="A mask defining the region that this conditioning prompt applies to.")

    def _clip(self, context: "InvocationContext", clip: CLIPField, prompt: str, pooled: bool,
              field: str) -> tuple["torch.Tensor", Optional["torch.Tensor"]]:
        if prompt == "":
            return _zeros_like_encoder(self, context, clip, pooled, field)
        return _encode(self, context, clip, prompt, pooled=pooled, field=field, penultimate=True)

    def invoke(self, context: "InvocationContext") -> ConditioningOutput:
        import torch

        c1, _ = self._clip(context, self.clip, self.prompt, False, "clip")
        style = self.prompt if self.style.strip() == "" else self.style
        c2, pooled = self._clip(context, self.clip2, style, True, "clip2")
        if c1.shape[1] != c2.shape[1]:  # long prompts give different lengths: pad the shorter with zeros
            length = max(c1.shape[1], c2.shape[1])
            c1, c2 = (torch.nn.functional.pad(c, (0, 0, 0, length - c.shape[1])) for c in (c1, c2))
        time_ids = _time_ids((self.original_height, self.original_width, self.crop_top, self.crop_left,
                              self.target_height, self.target_width))
        name = _save_conditioning(context, SDXL, embeds=torch.cat([c1, c2], dim=-1), pooled_embeds=pooled,
                                  add_time_ids=time_ids)
        return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name, mask=self.mask))


@invocation("sdxl_refiner_compel_prompt", title="Prompt - SDXL Refiner", tags=["sdxl", "compel", "prompt"],
            category="prompt", version="1.1.2", gpu=True)
class SDXLRefinerCompelPromptInvocation(BaseInvocation):
    """Turns a style prompt into SDXL-refiner conditioning (second text encoder, aesthetic score)."""

    style: str = InputField(default="", description=_PROMPT,
                            ui_component="textarea")
    original_width: int = InputField(default=1024, description="")
    original_height: int = InputField(default=1024, description="")
    crop_top: int = InputField(default=0, description="")
    crop_left: int = InputField(default=0, description="")
    aesthetic_score: float = InputField(default=6.0, description="The aesthetic score to apply to the conditioning tensor")
    clip2: CLIPField = InputField(description=CLIP_DESCRIPTION,
                                  input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> ConditioningOutput:
        c2, pooled = _encode(self, context, self.clip2, self.style, pooled=True, field="clip2", penultimate=True)
        time_ids = _time_ids((self.original_height, self.original_width, self.crop_top, self.crop_left,
                              self.aesthetic_score))
        name = _save_conditioning(context, SDXL, embeds=c2, pooled_embeds=pooled, add_time_ids=time_ids)
        return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name))


# --- denoising ----------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _load_conditioning(node: BaseInvocation, context: "InvocationContext", field: str,
                       value: Union[ConditioningField, list[ConditioningField]]) -> dict[str, "torch.Tensor"]:
    fields = _as_list(value)
    if len(fields) != 1 or fields[0].mask is not None:
        raise GenerationError(f"node {node.id} (denoise_latents): field {field}: regional prompts (several or "
                              "masked conditionings) are not supported yet; give one unmasked conditioning",
                              node_id=node.id, field=field)
    return context.conditioning.load_dict(fields[0].conditioning_name)


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
    latents: Optional[LatentsField] = InputField(default=None, description=_LATENTS, input=Input.Connection,
                                                 ui_order=4)
    denoise_mask: Optional[DenoiseMaskField] = InputField(default=None, description="A mask of the region to apply the denoising process to. Values of 0.0 represent total denoising, 1.0 is no denoising.",
                                                          input=Input.Connection, ui_order=8)

    def _refuse_unsupported(self) -> None:
        for field in ("control", "ip_adapter", "t2i_adapter"):
            if getattr(self, field):
                raise GenerationError(f"node {self.id} (denoise_latents): field {field}: not supported yet",
                                      node_id=self.id, field=field)
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
            batcher = context.services.get("denoise_batcher")  # the GPU runtime's, to share UNet passes
            result = batcher.denoise(item) if batcher is not None else denoise_alone(item)
        name = context.tensors.save(result)
        return LatentsOutput.build(name, result, seed=None)

    def prepare(self, context: "InvocationContext") -> "DenoiseItem":
        """Everything the sampling loop needs except the UNet itself, which the loop enters (``open_unet``):
        a prepared item can wait for others to share its UNet passes without holding the model."""
        import torch
        from invokeai_provider.models.stable_diffusion.denoise_loop import DenoiseItem
        from invokeai_provider.models.stable_diffusion.schedulers import make_scheduler

        self._refuse_unsupported()
        models = _models(self, context, "unet")
        noise = context.tensors.load(self.noise.latents_name) if self.noise else None
        seed = self.noise.seed if self.noise and self.noise.seed is not None else 0
        latents = context.tensors.load(self.latents.latents_name) if self.latents else torch.zeros_like(noise)
        if noise is not None and noise.shape != latents.shape:
            raise GenerationError(f"node {self.id} (denoise_latents): field noise: shape {tuple(noise.shape)} does "
                                  f"not match latents {tuple(latents.shape)}", node_id=self.id, field="noise")
        positive = _load_conditioning(self, context, "positive_conditioning", self.positive_conditioning)
        negative = _load_conditioning(self, context, "negative_conditioning", self.negative_conditioning)
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
        return DenoiseItem(
            node_id=self.id, context=context, open_unet=lambda: self._unet(context),
            unet_spec=self.unet.model_dump(mode="json", exclude={"scheduler"}), scheduler=scheduler,
            timesteps=timesteps, init_timestep=init_timestep, orig_latents=latents, noise=noise, seed=seed,
            positive=positive, negative=negative, cfg=[float(c) for c in cfg],
            cfg_rescale_multiplier=self.cfg_rescale_multiplier, mask=mask, masked_latents=masked_latents,
            gradient=bool(self.denoise_mask and self.denoise_mask.gradient))

    @contextmanager
    def _unet(self, context: "InvocationContext") -> Iterator[Any]:
        """The UNet as this node runs it: loaded, with its LoRAs, seamless axes and FreeU, without grad."""
        import torch

        models = _models(self, context, "unet")
        base = models.get_config(self.unet.unet).base
        with models.load(self.unet.unet) as unet, \
                _patched(self, context, "unet", unet, self.unet.loras, "unet", base), \
                _seamless(unet, self.unet.seamless_axes), _freeu(unet, self.unet.freeu_config), torch.no_grad():
            yield unet


# --- VAE ----------------------------------------------------------------------------------------------


@contextmanager
def _vae(node: BaseInvocation, context: "InvocationContext", vae: VAEField, fp32: bool, tiled: bool,
         tile_size: int) -> Iterator[Any]:
    import torch

    with _models(node, context, "vae").load(vae.vae) as model, _seamless(model, vae.seamless_axes):
        original = model.dtype
        upcast = (fp32 or model.device.type == "cpu") and original != torch.float32
        if upcast:
            model.to(dtype=torch.float32)
        if tiled:
            model.enable_tiling()
            if tile_size > 0:
                model.tile_sample_min_size = tile_size
                model.tile_latent_min_size = tile_size // 8
        try:
            yield model
        finally:
            model.disable_tiling()
            if upcast:
                model.to(dtype=original)


@invocation("l2i", title="Latents to Image - SD1.5, SDXL", tags=["latents", "image", "vae", "l2i"],
            category="latents", version="1.3.2", gpu=True)
class LatentsToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Decodes latents into an image with the VAE and saves it with its metadata."""

    latents: LatentsField = InputField(description=_LATENTS, input=Input.Connection)
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)
    tiled: bool = InputField(default=False, description=_TILED)
    tile_size: int = InputField(default=0, multiple_of=8,
                                description=_TILE_SIZE)
    fp32: bool = InputField(default=False, description=_FP32)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        import torch
        from PIL import Image

        latents = context.tensors.load(self.latents.latents_name)
        context.util.signal_progress("Running VAE decoder")
        with _vae(self, context, self.vae, self.fp32, self.tiled, self.tile_size) as vae, torch.no_grad():
            latents = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
            decoded = vae.decode(latents, return_dict=False)[0]
            decoded = (decoded / 2 + 0.5).clamp(0, 1)
        pixels = (decoded[0].permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
        record = context.images.save(Image.fromarray(pixels))
        return ImageOutput.build(record)


@invocation("save_image", title="Save Image", tags=["primitives", "image"], category="image", version="1.2.2",
            use_cache=False)
class SaveImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Saves a copy of an image (with this node's metadata and board), unlike the image primitive."""

    image: ImageField = InputField(description="The image to process")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        return ImageOutput.build(context.images.save(context.images.get_pil(self.image.image_name)))


def image_to_tensor(image: Any, normalize: bool = True) -> "torch.Tensor":
    """A PIL image cropped to a multiple of 8 as a [1, C, H, W] float tensor (in [-1, 1] when normalised)."""
    import numpy as np
    import torch

    width, height = image.width - image.width % 8, image.height - image.height % 8
    if (width, height) != image.size:
        image = image.resize((width, height), resample=3)
    array = np.asarray(image).astype(np.float32) / 255.0
    tensor = torch.from_numpy(array)
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    tensor = tensor.unsqueeze(0)
    return tensor * 2.0 - 1.0 if normalize else tensor


def vae_encode(vae: Any, image: "torch.Tensor") -> "torch.Tensor":
    """Scaled latents of an image; the sample is seeded, so the same image always gives the same latents."""
    import torch

    with torch.no_grad():
        distribution = vae.encode(image.to(device=vae.device, dtype=vae.dtype)).latent_dist
        generator = torch.Generator(device="cpu").manual_seed(0)
        noise = torch.randn(distribution.mean.shape, generator=generator, dtype=torch.float32)
        sample = distribution.mean + distribution.std * noise.to(distribution.mean.device, distribution.mean.dtype)
    return (vae.config.scaling_factor * sample).float().cpu()


@invocation("i2l", title="Image to Latents - SD1.5, SDXL", tags=["latents", "image", "vae", "i2l"],
            category="latents", version="1.2.0", gpu=True)
class ImageToLatentsInvocation(BaseInvocation):
    """Encodes an image into latents with the VAE."""

    image: ImageField = InputField(description="The image to encode")
    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection)
    tiled: bool = InputField(default=False, description=_TILED)
    tile_size: int = InputField(default=0, multiple_of=8,
                                description=_TILE_SIZE)
    fp32: bool = InputField(default=False, description=_FP32)
    color_compensation: COMPENSATION_OPTIONS = InputField(default="None",
                                                          description="Apply VAE scaling compensation when encoding images (reduces color drift).")

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        image = context.images.get_pil(self.image.image_name, mode="RGB")
        tensor = image_to_tensor(image)
        models = _models(self, context, "vae")
        if self.color_compensation != "None" and \
                models.get_config(self.vae.vae).base is BaseModelType.StableDiffusionXL:
            scale, bias = COLOR_COMPENSATION[self.color_compensation]
            tensor = tensor * scale + bias
        with _vae(self, context, self.vae, self.fp32, self.tiled, self.tile_size) as vae:
            latents = vae_encode(vae, tensor)
        name = context.tensors.save(latents)
        return LatentsOutput.build(name, latents)


@invocation("create_denoise_mask", title="Create Denoise Mask", tags=["mask", "denoise"], category="mask",
            version="1.0.2", gpu=True)
class CreateDenoiseMaskInvocation(BaseInvocation):
    """Turns a mask image (white: keep, black: repaint, as InvokeAI reads it) into a denoise mask."""

    vae: VAEField = InputField(description=VAE_DESCRIPTION, input=Input.Connection, ui_order=0)
    image: Optional[ImageField] = InputField(default=None, description="Image which will be masked", ui_order=1)
    mask: ImageField = InputField(description="The mask to use when pasting", ui_order=2)
    tiled: bool = InputField(default=False, description=_TILED,
                             ui_order=3)
    fp32: bool = InputField(default=False, description=_FP32, ui_order=4)

    def invoke(self, context: "InvocationContext") -> DenoiseMaskOutput:
        import torch

        mask = image_to_tensor(context.images.get_pil(self.mask.image_name, mode="L"), normalize=False)
        masked_latents_name = None
        if self.image is not None:
            image = image_to_tensor(context.images.get_pil(self.image.image_name, mode="RGB"))
            image_mask = torch.nn.functional.interpolate(mask, size=image.shape[-2:], mode="bilinear",
                                                         align_corners=False)
            masked = image * torch.where(image_mask < 0.5, 0.0, 1.0)
            with _vae(self, context, self.vae, self.fp32, self.tiled, 0) as vae:
                masked_latents_name = context.tensors.save(vae_encode(vae, masked))
        return DenoiseMaskOutput.build(mask_name=context.tensors.save(mask), masked_latents_name=masked_latents_name,
                                       gradient=False)


# --- sizes and gradient masks -------------------------------------------------------------------------

IDEAL_DIMENSION = {BaseModelType.StableDiffusion1: 512, BaseModelType.StableDiffusion2: 768,
                   BaseModelType.StableDiffusionXL: 1024, BaseModelType.Flux: 1024, BaseModelType.Flux2: 1024,
                   BaseModelType.StableDiffusion3: 1024}


@invocation_output("ideal_size_output")
class IdealSizeOutput(BaseInvocationOutput):
    width: int = OutputField(description="The ideal width of the image (in pixels)")
    height: int = OutputField(description="The ideal height of the image (in pixels)")


@invocation("ideal_size", title="Ideal Size - SD1.5, SDXL", tags=["latents", "math", "ideal_size"],
            category="latents", version="1.0.6")
class IdealSizeInvocation(BaseInvocation):
    """The size the model was trained at, with the requested aspect ratio: generate there, then upscale."""

    width: int = InputField(default=1024, description="Final image width")
    height: int = InputField(default=576, description="Final image height")
    unet: UNetField = InputField(description=UNET_DESCRIPTION)
    multiplier: float = InputField(default=1.0, description="Amount to multiply the model's dimensions by when "
                                   "calculating the ideal size (may result in initial generation artifacts if too large)")

    def invoke(self, context: "InvocationContext") -> IdealSizeOutput:
        base = _models(self, context, "unet").get_config(self.unet.unet).base
        if base not in IDEAL_DIMENSION:
            raise GenerationError(f"node {self.id} (ideal_size): field unet: no ideal size for base {base.value}",
                                  node_id=self.id, field="unet")
        dimension = IDEAL_DIMENSION[base] * self.multiplier
        minimum, area, aspect = math.floor(dimension * 0.5), dimension * dimension, self.width / self.height
        if aspect > 1.0:
            height = max(minimum, math.sqrt(area / aspect))
            width = height * aspect
        else:
            width = max(minimum, math.sqrt(area * aspect))
            height = width / aspect
        width, height = math.floor(width), math.floor(height)
        return IdealSizeOutput(width=width - width % 8, height=height - height % 8)


@invocation_output("gradient_mask_output")
class GradientMaskOutput(BaseInvocationOutput):
    """A denoise mask whose edge fades, and the area it finally covers."""

    denoise_mask: DenoiseMaskField = OutputField(description="Mask for denoise model run. Values of 0.0 represent "
                                                 "the regions to be fully denoised, and 1.0 represent the regions to be preserved.")
    expanded_mask_area: ImageField = OutputField(description="Image representing the total gradient area of the mask. "
                                                 "For paste-back purposes.")


def _edge_kernel(radius: int, mode: str) -> "np.ndarray":
    """Weights that fall off from the centre to ``radius``: linear (Box Blur) or Gaussian (sigma = radius/2.5)."""
    import numpy as np

    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    distance = np.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2)
    if mode == "Box Blur":
        kernel = 1.0 - distance / radius
    else:
        sigma = radius / 2.5
        gauss = np.exp(-(offsets ** 2) / (2 * sigma * sigma))
        kernel = np.outer(gauss, gauss)
        kernel = kernel / kernel.max()
    kernel[distance > radius] = 0
    return kernel.astype(np.float32)


def _weighted_max_filter(image: "np.ndarray", kernel: "np.ndarray") -> "np.ndarray":
    """max over the kernel window of pixel × weight (a soft dilation)."""
    import numpy as np

    pad_h, pad_w = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(image, ((pad_h, pad_h), (pad_w, pad_w)))
    result = np.zeros_like(image)
    for i, j in zip(*np.nonzero(kernel > 0)):
        np.maximum(result, padded[i:i + image.shape[0], j:j + image.shape[1]] * kernel[i, j], out=result)
    return result


@invocation("create_gradient_mask", title="Create Gradient Mask", tags=["mask", "denoise"], category="mask",
            version="1.3.0", gpu=True)
class CreateGradientMaskInvocation(BaseInvocation):
    """A denoise mask whose edge is expanded into a gradient, so inpainting blends into its surroundings."""

    mask: ImageField = InputField(description="Image which will be masked", ui_order=1)
    edge_radius: int = InputField(default=16, ge=0, description="How far to expand the edges of the mask", ui_order=2)
    coherence_mode: Literal["Gaussian Blur", "Box Blur", "Staged"] = InputField(default="Gaussian Blur", ui_order=3)
    minimum_denoise: float = InputField(default=0.0, ge=0, le=1,
                                        description="Minimum denoise level for the coherence region", ui_order=4)
    image: Optional[ImageField] = InputField(default=None, description="OPTIONAL: Only connect for specialized "
                                             "Inpainting models, masked_latents will be generated from the image with the VAE",
                                             title="[OPTIONAL] Image", ui_order=6)
    unet: Optional[UNetField] = InputField(default=None, description="OPTIONAL: If the Unet is a specialized "
                                           "Inpainting model, masked_latents will be generated from the image with the VAE",
                                           input=Input.Connection, title="[OPTIONAL] UNet", ui_order=5)
    vae: Optional[VAEField] = InputField(default=None, description="OPTIONAL: Only connect for specialized "
                                         "Inpainting models, masked_latents will be generated from the image with the VAE",
                                         input=Input.Connection, title="[OPTIONAL] VAE", ui_order=7)
    tiled: bool = InputField(default=False, description=_TILED,
                             ui_order=8)
    fp32: bool = InputField(default=False, description=_FP32, ui_order=9)

    def invoke(self, context: "InvocationContext") -> GradientMaskOutput:
        import numpy as np
        import torch
        from PIL import Image

        mask_image = context.images.get_pil(self.mask.image_name, mode="L")
        small = mask_image.resize((mask_image.width // 8, mask_image.height // 8), resample=Image.Resampling.BILINEAR)
        original = np.asarray(small, dtype=np.float32)
        radius = self.edge_radius // 8
        if radius > 0:
            dilated = 255 - _weighted_max_filter(255 - original, _edge_kernel(radius, self.coherence_mode))
            threshold = (1 - self.minimum_denoise) * 255
            if self.coherence_mode == "Staged":
                dilated = np.where((dilated < original) & (original > threshold), threshold, original)
            dilated = np.where((dilated > threshold) & (dilated < 255), threshold, dilated)
        else:
            dilated = original.copy()
        dilated = np.clip(dilated, 0, 255).astype(np.uint8)
        full_size = (small.width * 8, small.height * 8)
        expanded = Image.fromarray(np.where(dilated < 255, 0, 255).astype(np.uint8), mode="L")
        expanded_record = context.images.save(expanded.resize(full_size, resample=Image.Resampling.NEAREST),
                                              image_category="mask")
        gradient = Image.fromarray(dilated).resize(full_size, resample=Image.Resampling.NEAREST)
        mask_tensor = image_to_tensor(gradient, normalize=False)
        masked_latents_name = None
        if self.unet is not None and self.vae is not None and self.image is not None:
            models = _models(self, context, "unet")
            if models.get_config(self.unet.unet).variant is ModelVariantType.Inpaint:
                image = image_to_tensor(context.images.get_pil(self.image.image_name, mode="RGB"))
                image_mask = torch.nn.functional.interpolate(mask_tensor, size=image.shape[-2:], mode="bilinear",
                                                             align_corners=False)
                with _vae(self, context, self.vae, self.fp32, self.tiled, 0) as vae:
                    masked_latents_name = context.tensors.save(
                        vae_encode(vae, image * torch.where(image_mask < 0.5, 0.0, 1.0)))
        return GradientMaskOutput(
            denoise_mask=DenoiseMaskField(mask_name=context.tensors.save(mask_tensor),
                                          masked_latents_name=masked_latents_name, gradient=True),
            expanded_mask_area=ImageField(image_name=expanded_record["image_name"]))

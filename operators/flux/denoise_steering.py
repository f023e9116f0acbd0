"""What steers ``flux_denoise`` besides its prompts, read from the node's fields and prepared before the loop:
FLUX Fill's and a Control LoRA's extra channels, Kontext's reference tokens, ControlNets and IP-Adapters (loaded for
the node's span), each with InvokeAI's checks and errors naming the node's field."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from invokeai_provider.core.taxonomy import BaseModelType, FluxVariantType, ModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.models import check_model
from invokeai_provider.operators.sd.common import GenerationError

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.operators.flux.denoise import FluxDenoiseInvocation


def fill_condition(node: "FluxDenoiseInvocation", context: "InvocationContext", models: Any) -> Any:
    """FLUX Fill's image and mask as the transformer's extra channels."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from invokeai_provider.models.flux.image_conditioning import fill_condition
    from invokeai_provider.operators.sd.vae import image_to_tensor

    if node.fill_conditioning is None:
        raise field_error(GenerationError, node, "fill_conditioning", "a FLUX Fill model needs fill conditioning "
                          "(connect a FLUX Fill Conditioning node)")
    if node.controlnet_vae is None:
        raise field_error(GenerationError, node, "controlnet_vae", "a FLUX Fill model needs the VAE here, to "
                          "encode the fill image")
    mask = context.tensors.load(node.fill_conditioning.mask.tensor_name)
    if mask.dtype != torch.bool or mask.ndim != 3 or mask.shape[0] != 1:
        raise field_error(GenerationError, node, "fill_conditioning", f"its mask is {mask.dtype} of shape "
                          f"{tuple(mask.shape)}; expected a bool (1, H, W) tensor")
    mask = F.interpolate(mask[None].float(), size=(node.height, node.width), mode="nearest")[0]
    image = context.images.get_pil(node.fill_conditioning.image.image_name, mode="RGB")
    image = image_to_tensor(image.resize((node.width, node.height), Image.Resampling.BICUBIC))
    context.util.signal_progress("Running VAE")
    with models.load(node.controlnet_vae.vae) as vae:
        return fill_condition(vae, image, mask)

def ip_adapters(node: "FluxDenoiseInvocation", context: "InvocationContext", models: Any, stack: ExitStack,
                steps: int) -> list[Any]:
    """The XLabs IP-Adapters, loaded for the node's span, with their image prompts' CLIP embeddings (the
    encoder is released before the transformer loads, as InvokeAI does)."""
    from invokeai_provider.models.flux.ip_adapter import FluxIPAdapterError, prepare, single_image

    fields = node.ip_adapter if isinstance(node.ip_adapter, list) else [node.ip_adapter] if node.ip_adapter \
        else []
    adapters = []
    for field in fields:
        check_model(node, "ip_adapter", field.ip_adapter_model, context, ModelType.IPAdapter,
                    (BaseModelType.Flux,))
        if isinstance(field.weight, list) and len(field.weight) != steps:
            raise field_error(GenerationError, node, "ip_adapter", f"a list of {len(field.weight)} weights for "
                              f"{steps} steps")
        try:
            image = context.images.get_pil(single_image(field.image).image_name, mode="RGB")
            adapter = stack.enter_context(models.load(field.ip_adapter_model))
            with models.load(field.image_encoder_model) as encoder:
                adapters.append(prepare(adapter, encoder, image, field.weight, field.begin_step_percent,
                                        field.end_step_percent))
        except FluxIPAdapterError as exc:
            raise field_error(GenerationError, node, "ip_adapter", str(exc)) from None
    return adapters

def control_lora_condition(node: "FluxDenoiseInvocation", context: "InvocationContext", models: Any,
                           config: Any) -> Any:
    """The Control LoRA's control image, encoded, as the transformer's extra channels (InvokeAI's checks)."""
    from invokeai_provider.models.flux.control_lora import ControlLoRAError, control_lora_condition

    check_model(node, "control_lora", node.control_lora.lora, context, ModelType.ControlLoRa, (BaseModelType.Flux,))
    if config.variant is FluxVariantType.Schnell:
        raise field_error(GenerationError, node, "control_lora", "Control LoRAs cannot be used with FLUX Schnell")
    if config.variant is FluxVariantType.DevFill:
        raise field_error(GenerationError, node, "control_lora", "Control LoRAs are not compatible with FLUX Fill "
                          "models")
    if node.kontext_conditioning:  # its 128-channel tokens and Kontext's 64-channel ones cannot be joined
        raise field_error(GenerationError, node, "control_lora", "a Control LoRA cannot be combined with Kontext "
                          "conditioning")
    if node.controlnet_vae is None:
        raise field_error(GenerationError, node, "controlnet_vae", "a FLUX Control LoRA needs the VAE here, to "
                          "encode its control image")
    image = context.images.get_pil(node.control_lora.img.image_name, mode="RGB")
    context.util.signal_progress("Running VAE")
    try:
        with models.load(node.controlnet_vae.vae) as vae:
            return control_lora_condition(vae, image, node.width, node.height)
    except ControlLoRAError as exc:
        raise field_error(GenerationError, node, "control_lora", str(exc)) from None

@contextmanager
def control_lora_applied(node: "FluxDenoiseInvocation", context: "InvocationContext", models: Any,
                         transformer: Any) -> Iterator[Any]:
    from invokeai_provider.models.flux.control_lora import ControlLoRAError, control_lora_applied

    with models.load(node.control_lora.lora) as state:
        try:
            with control_lora_applied(transformer, state, node.control_lora.weight):
                yield transformer
        except ControlLoRAError as exc:
            raise field_error(GenerationError, node, "control_lora", str(exc)) from None

def kontext_references(node: "FluxDenoiseInvocation", context: "InvocationContext", models: Any) -> tuple[Any, Any]:
    """The Kontext reference images' tokens and position ids."""
    from invokeai_provider.models.flux.image_conditioning import kontext_references
    from invokeai_provider.operators.sd.vae import image_to_tensor

    if node.controlnet_vae is None:
        raise field_error(GenerationError, node, "controlnet_vae", "Kontext conditioning needs the VAE here, to "
                          "encode the reference images")
    fields = node.kontext_conditioning if isinstance(node.kontext_conditioning, list) else \
        [node.kontext_conditioning]
    images = [image_to_tensor(context.images.get_pil(field.image.image_name, mode="RGB"), multiple_of=1)
              for field in fields]
    context.util.signal_progress("Running VAE")
    with models.load(node.controlnet_vae.vae) as vae:
        return kontext_references(vae, images)

def controls(node: "FluxDenoiseInvocation", context: "InvocationContext", models: Any, stack: ExitStack,
             steps: int) -> list[Any]:
    """The ControlNets, loaded for the node's span, with their conditioning: the control image encoded by
    ``controlnet_vae`` for InstantX ones, the image itself in [-1, 1] for XLabs ones (their own encoder reads
    it), so only InstantX ControlNets need the VAE, as in InvokeAI."""
    from invokeai_provider.models.flux.controlnet import FluxControl, is_xlabs
    from invokeai_provider.models.flux.sampling import pack
    from invokeai_provider.models.flux.vae import encode_seeded
    from invokeai_provider.models.image_util.control_image import prepare_control_image

    fields = node.control if isinstance(node.control, list) else [node.control] if node.control else []
    controls = []
    for field in fields:
        check_model(node, "control", field.control_model, context, ModelType.ControlNet, (BaseModelType.Flux,))
        if isinstance(field.control_weight, list) and len(field.control_weight) != steps:
            raise field_error(GenerationError, node, "control", f"a list of {len(field.control_weight)} "
                              f"control weights for {steps} steps")
        image = prepare_control_image(context.images.get_pil(field.image.image_name), node.width, node.height,
                                      field.resize_mode) * 2 - 1
        model = stack.enter_context(models.load(field.control_model))  # its kind decides whether the VAE runs
        if is_xlabs(model):
            condition = image
        elif node.controlnet_vae is None:
            raise field_error(GenerationError, node, "controlnet_vae", "a FLUX ControlNet needs the VAE here, to "
                              "encode its control image (InstantX ControlNets do; XLabs ones encode it "
                              "themselves)")
        else:
            with models.load(node.controlnet_vae.vae) as vae:
                condition = pack(encode_seeded(vae, image))
        mode = field.instantx_control_mode
        controls.append(FluxControl(
            model=model, condition=condition, weight=field.control_weight,
            begin_step_percent=field.begin_step_percent, end_step_percent=field.end_step_percent,
            mode=mode if mode is not None and mode >= 0 else None))
    return controls

"""Value types that travel on edges, with InvokeAI's names and JSON shapes (reference §3.1).

Blobs never travel: images, tensors and conditioning are named here and stored in the artifact store.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, Field, RootModel

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType


class ImageField(BaseModel):
    """An image, by name, in the artifact store."""

    image_name: str = Field(description="The name of the image")


class VideoField(BaseModel):
    video_name: str = Field(description="The name of the video")


class BoardField(BaseModel):
    board_id: str = Field(description="The id of the board")


class TensorField(BaseModel):
    tensor_name: str = Field(description="The name of a tensor.")


class LatentsField(BaseModel):
    latents_name: str = Field(description="The name of the latents")
    seed: Optional[int] = Field(default=None, description="Seed used to generate this latents")


class DenoiseMaskField(BaseModel):
    mask_name: str = Field(description="The name of the mask image")
    masked_latents_name: Optional[str] = Field(default=None, description="The name of the masked image latents")
    gradient: bool = Field(default=False, description="Used for gradient inpainting")


class ConditioningField(BaseModel):
    """SD1/SD2/SDXL conditioning, by name."""

    conditioning_name: str = Field(description="The name of conditioning tensor")
    mask: Optional[TensorField] = Field(default=None, description="The mask associated with this conditioning tensor.")


class FluxConditioningField(BaseModel):
    """FLUX.1 conditioning (T5 and CLIP embeddings), by name."""

    conditioning_name: str = Field(description="The name of conditioning tensor")
    mask: Optional[TensorField] = Field(default=None, description="The mask associated with this conditioning tensor. "
                                        "Excluded regions should be set to False, included regions should be set to True.")


class FluxReduxConditioningField(BaseModel):
    """A FLUX Redux conditioning tensor primitive value"""

    conditioning: TensorField = Field(description="The Redux image conditioning tensor.")
    mask: Optional[TensorField] = Field(default=None, description="The mask associated with this conditioning tensor. "
                                        "Excluded regions should be set to False, included regions should be set to True.")


class FluxFillConditioningField(BaseModel):
    """A FLUX Fill conditioning field."""

    image: ImageField = Field(description="The FLUX Fill reference image.")
    mask: TensorField = Field(description="The FLUX Fill inpaint mask.")


class FluxKontextConditioningField(BaseModel):
    """A conditioning field for FLUX Kontext (reference image)."""

    image: ImageField = Field(description="The Kontext reference image.")


class SD3ConditioningField(BaseModel):
    """SD3 conditioning (CLIP-L, CLIP-G and T5 embeddings), by name."""

    conditioning_name: str = Field(description="The name of conditioning tensor")


class ColorField(BaseModel):
    r: int = Field(ge=0, le=255, description="The red component")
    g: int = Field(ge=0, le=255, description="The green component")
    b: int = Field(ge=0, le=255, description="The blue component")
    a: int = Field(ge=0, le=255, description="The alpha component")

    def tuple(self) -> tuple[int, int, int, int]:
        return (self.r, self.g, self.b, self.a)


class BoundingBoxField(BaseModel):
    x_min: int = Field(ge=0, description="The minimum x-coordinate of the bounding box (inclusive).")
    x_max: int = Field(ge=0, description="The maximum x-coordinate of the bounding box (exclusive).")
    y_min: int = Field(ge=0, description="The minimum y-coordinate of the bounding box (inclusive).")
    y_max: int = Field(ge=0, description="The maximum y-coordinate of the bounding box (exclusive).")
    score: Optional[float] = Field(default=None, ge=0.0, le=1.0, description="The score of the bounding box.")


class MetadataField(RootModel[dict[str, Any]]):
    """Free-form image metadata (the `invokeai_metadata` PNG chunk)."""

    root: dict[str, Any] = Field(description="The metadata")


class StylePresetField(BaseModel):
    style_preset_id: str = Field(description="The id of the style preset")


class ModelIdentifierField(BaseModel):
    key: str = Field(description="The model's unique key")
    hash: str = Field(description="The model's BLAKE3 hash")
    name: str = Field(description="The model's name")
    base: BaseModelType = Field(description="The model's base model type")
    type: ModelType = Field(description="The model's type")
    submodel_type: Optional[SubModelType] = Field(default=None, description="The submodel to load, if this is a main model")


class LoRAField(BaseModel):
    lora: ModelIdentifierField = Field(description="Info to load lora model")
    weight: float = Field(description="Weight to apply to lora model")


class FreeUConfig(BaseModel):
    s1: float = Field(ge=-1, le=3, description="Scaling factor for stage 1 to attenuate the contributions of the skip features.")
    s2: float = Field(ge=-1, le=3, description="Scaling factor for stage 2 to attenuate the contributions of the skip features.")
    b1: float = Field(ge=-1, le=3, description="Scaling factor for stage 1 to amplify the contributions of backbone features.")
    b2: float = Field(ge=-1, le=3, description="Scaling factor for stage 2 to amplify the contributions of backbone features.")


class UNetField(BaseModel):
    unet: ModelIdentifierField = Field(description="Info to load unet submodel")
    scheduler: ModelIdentifierField = Field(description="Info to load scheduler submodel")
    loras: list[LoRAField] = Field(default_factory=list, description="LoRAs to apply on model loading")
    seamless_axes: list[str] = Field(default_factory=list, description='Axes("x" and "y") to which apply seamless')
    freeu_config: Optional[FreeUConfig] = Field(default=None, description="FreeU configuration")


class CLIPField(BaseModel):
    tokenizer: ModelIdentifierField = Field(description="Info to load tokenizer submodel")
    text_encoder: ModelIdentifierField = Field(description="Info to load text_encoder submodel")
    skipped_layers: int = Field(default=0, description="Number of skipped layers in text_encoder")
    loras: list[LoRAField] = Field(default_factory=list, description="LoRAs to apply on model loading")


class VAEField(BaseModel):
    vae: ModelIdentifierField = Field(description="Info to load vae submodel")
    seamless_axes: list[str] = Field(default_factory=list, description='Axes("x" and "y") to which apply seamless')


class ControlLoRAField(LoRAField):
    img: ImageField = Field(description="Image to use in structural conditioning")


class T5EncoderField(BaseModel):
    tokenizer: ModelIdentifierField = Field(description="Info to load tokenizer submodel")
    text_encoder: ModelIdentifierField = Field(description="Info to load text_encoder submodel")
    loras: list[LoRAField] = Field(default_factory=list, description="LoRAs to apply on model loading")


class TransformerField(BaseModel):
    transformer: ModelIdentifierField = Field(description="Info to load Transformer submodel")
    loras: list[LoRAField] = Field(default_factory=list, description="LoRAs to apply on model loading")


class GlmEncoderField(BaseModel):
    """CogView4's GLM tokenizer and text encoder (no LoRAs, as InvokeAI's)."""

    tokenizer: ModelIdentifierField = Field(description="Info to load tokenizer submodel")
    text_encoder: ModelIdentifierField = Field(description="Info to load text_encoder submodel")


class CogView4ConditioningField(BaseModel):
    """CogView4 conditioning (GLM embeddings), by name."""

    conditioning_name: str = Field(description="The name of conditioning tensor")


class Qwen3EncoderField(BaseModel):
    """A Qwen3 tokenizer and text encoder (Z-Image, FLUX.2 Klein), with the LoRAs patched into the encoder."""

    tokenizer: ModelIdentifierField = Field(description="Info to load tokenizer submodel")
    text_encoder: ModelIdentifierField = Field(description="Info to load text_encoder submodel")
    loras: list[LoRAField] = Field(default_factory=list, description="LoRAs to apply on model loading")


class MistralEncoderField(BaseModel):
    """FLUX.2 [dev]'s Mistral text encoder and its tokenizer (the ``tokenizer`` submodel of a diffusers folder is its
    Pixtral processor; the tokenizer inside is what is read), with the LoRAs patched into the encoder."""

    tokenizer: ModelIdentifierField = Field(description="Info to load tokenizer / processor submodel")
    text_encoder: ModelIdentifierField = Field(description="Info to load text_encoder submodel")
    loras: list[LoRAField] = Field(default_factory=list, description="LoRAs to apply on model loading")


class ZImageConditioningField(BaseModel):
    """Z-Image conditioning (the Qwen3 prompt embeddings), by name."""

    conditioning_name: str = Field(description="The name of conditioning tensor")
    mask: Optional[TensorField] = Field(default=None, description="The mask associated with this conditioning tensor "
                                        "for regional prompting. Excluded regions should be set to False, included "
                                        "regions should be set to True.")


# Latents are 1/8 of the image size on each side (InvokeAI's LATENT_SCALE_FACTOR).
LATENT_SCALE_FACTOR = 8

CONTROLNET_MODE_VALUES = Literal["balanced", "more_prompt", "more_control", "unbalanced"]
CONTROLNET_RESIZE_VALUES = Literal["just_resize", "crop_resize", "fill_resize", "just_resize_simple"]


class _ControlNetInput(BaseModel):
    """What a ControlNet input of every family has: the image, the model, its weight and step range."""

    image: ImageField = Field(description="The control image")
    control_model: ModelIdentifierField = Field(description="The ControlNet model to use")
    control_weight: Union[float, list[float]] = Field(default=1, description="The weight given to the ControlNet")
    begin_step_percent: float = Field(default=0, ge=0, le=1, description="When the ControlNet is first applied (% of total steps)")
    end_step_percent: float = Field(default=1, ge=0, le=1, description="When the ControlNet is last applied (% of total steps)")


class FluxControlNetField(_ControlNetInput):
    resize_mode: CONTROLNET_RESIZE_VALUES = Field(default="just_resize", description="The resize mode to use")
    instantx_control_mode: Optional[int] = Field(default=-1, description="The control mode for InstantX ControlNet "
                                                 "union models. Ignored for other ControlNet models.")


class ControlField(_ControlNetInput):
    control_mode: CONTROLNET_MODE_VALUES = Field(default="balanced", description="The control mode to use")
    resize_mode: CONTROLNET_RESIZE_VALUES = Field(default="just_resize", description="The resize mode to use")


class IPAdapterField(BaseModel):
    image: Union[ImageField, list[ImageField]] = Field(description="The IP-Adapter image prompt(s).")
    ip_adapter_model: ModelIdentifierField = Field(description="The IP-Adapter model to use.")
    image_encoder_model: ModelIdentifierField = Field(description="The name of the CLIP image encoder model.")
    weight: Union[float, list[float]] = Field(default=1, description="The weight given to the IP-Adapter.")
    target_blocks: list[str] = Field(default_factory=list, description="The IP Adapter blocks to apply")
    method: str = Field(default="full", description="Weight apply method")
    begin_step_percent: float = Field(default=0, ge=0, le=1, description="When the IP-Adapter is first applied (% of total steps)")
    end_step_percent: float = Field(default=1, ge=0, le=1, description="When the IP-Adapter is last applied (% of total steps)")
    mask: Optional[TensorField] = Field(default=None, description="The bool mask associated with this IP-Adapter.")


class T2IAdapterField(BaseModel):
    image: ImageField = Field(description="The T2I-Adapter image prompt.")
    t2i_adapter_model: ModelIdentifierField = Field(description="The T2I-Adapter model to use.")
    weight: Union[float, list[float]] = Field(default=1, description="The weight given to the T2I-Adapter")
    begin_step_percent: float = Field(default=0, ge=0, le=1, description="When the T2I-Adapter is first applied (% of total steps)")
    end_step_percent: float = Field(default=1, ge=0, le=1, description="When the T2I-Adapter is last applied (% of total steps)")
    resize_mode: CONTROLNET_RESIZE_VALUES = Field(default="just_resize", description="The resize mode to apply to the T2I-Adapter image.")

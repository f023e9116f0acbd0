"""Metadata nodes: build image metadata (items, merge, core metadata), read it back from an image, and the
"linked" getters that turn metadata values back into node values (numbers, strings, schedulers, models,
LoRAs, ControlNets, IP-Adapters, T2I-Adapters).

Type strings, versions, fields and outputs follow InvokeAI's `invocations/metadata.py` and
`invocations/metadata_linked.py`.

Model lookups: where InvokeAI asks its model manager (``context.models``), these nodes ask the optional run
service ``context.services["models"]``. It needs ``exists(key) -> bool``; when it also has InvokeAI's
``get_config(key)`` and ``search_by_attrs(name=..., type=...)`` they are used too. Without the service the
model identifiers are taken from the metadata itself, which holds them in full when InvokeAI or this
package wrote it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, TypeVar, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import to_jsonable_python

from invokeai_provider import __version__
from invokeai_provider.core.fields import (
    CONTROLNET_MODE_VALUES,
    CONTROLNET_RESIZE_VALUES,
    CLIPField,
    ControlField,
    ImageField,
    IPAdapterField,
    LoRAField,
    MetadataField,
    ModelIdentifierField,
    T2IAdapterField,
    UNetField,
    VAEField,
)
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Classification,
    Input,
    InputField,
    OutputField,
    WithMetadata,
    invocation,
    invocation_output,
)
from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.operators.core.controlnet import check_control_weights, check_step_range
from invokeai_provider.operators.core.models import MODEL_SERVICE, clip_of, submodel, unet_of
from invokeai_provider.operators.core.primitives import (
    BooleanCollectionOutput,
    BooleanOutput,
    FloatCollectionOutput,
    FloatOutput,
    IntegerCollectionOutput,
    IntegerOutput,
    LatentsOutput,
    StringCollectionOutput,
    StringOutput,
)
from invokeai_provider.operators.sd.model_fields import (
    CLIP_DESCRIPTION,
    MAIN_MODEL_DESCRIPTION,
    SCHEDULER_NAME_VALUES,
    UNET_DESCRIPTION,
    VAE_DESCRIPTION,
    LoRALoaderOutput,
    SchedulerOutput,
    SDXLLoRALoaderOutput,
    VAEOutput,
)

if TYPE_CHECKING:
    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "metadata"
# The version recorded as `app_version` in metadata this package writes.
APP_VERSION = __version__

# Descriptions shared with InvokeAI's FieldDescriptions.
_LABEL = "Label for this metadata item"
_VALUE = "The value for this metadata item (may be any type)"


# --- value types -------------------------------------------------------------------------------------


class MetadataItemField(BaseModel):
    label: str = Field(description=_LABEL)
    value: Any = Field(description=_VALUE)


class LoRAMetadataField(BaseModel):
    """A LoRA as recorded in metadata."""

    model: ModelIdentifierField = Field(description="LoRA model to load")
    weight: float = Field(description="The weight at which the LoRA is applied to each model")


class IPAdapterMetadataField(BaseModel):
    """An IP-Adapter as recorded in metadata (without its CLIP Vision encoder model)."""

    image: ImageField = Field(description="The IP-Adapter image prompt.")
    ip_adapter_model: ModelIdentifierField = Field(description="The IP-Adapter model.")
    clip_vision_model: Literal["ViT-L", "ViT-H", "ViT-G"] = Field(description="The CLIP Vision model")
    method: Literal["full", "style", "composition", "style_strong", "style_precise"] = Field(
        description="Method to apply IP Weights with")
    weight: Union[float, list[float]] = Field(description="The weight given to the IP-Adapter")
    begin_step_percent: float = Field(description="When the IP-Adapter is first applied (% of total steps)")
    end_step_percent: float = Field(description="When the IP-Adapter is last applied (% of total steps)")


class T2IAdapterMetadataField(BaseModel):
    image: ImageField = Field(description="The control image.")
    processed_image: Optional[ImageField] = Field(default=None, description="The control image, after processing.")
    t2i_adapter_model: ModelIdentifierField = Field(description="The T2I-Adapter model to use.")
    weight: Union[float, list[float]] = Field(default=1, description="The weight given to the T2I-Adapter")
    begin_step_percent: float = Field(default=0, ge=0, le=1,
                                      description="When the T2I-Adapter is first applied (% of total steps)")
    end_step_percent: float = Field(default=1, ge=0, le=1,
                                    description="When the T2I-Adapter is last applied (% of total steps)")
    resize_mode: CONTROLNET_RESIZE_VALUES = Field(default="just_resize", description="The resize mode to use")


class ControlNetMetadataField(BaseModel):
    image: ImageField = Field(description="The control image")
    processed_image: Optional[ImageField] = Field(default=None, description="The control image, after processing.")
    control_model: ModelIdentifierField = Field(description="The ControlNet model to use")
    control_weight: Union[float, list[float]] = Field(default=1, description="The weight given to the ControlNet")
    begin_step_percent: float = Field(default=0, ge=0, le=1,
                                      description="When the ControlNet is first applied (% of total steps)")
    end_step_percent: float = Field(default=1, ge=0, le=1,
                                    description="When the ControlNet is last applied (% of total steps)")
    control_mode: CONTROLNET_MODE_VALUES = Field(default="balanced", description="The control mode to use")
    resize_mode: CONTROLNET_RESIZE_VALUES = Field(default="just_resize", description="The resize mode to use")


# --- outputs -----------------------------------------------------------------------------------------


@invocation_output("metadata_item_output")
class MetadataItemOutput(BaseInvocationOutput):
    """One labelled metadata item."""

    item: MetadataItemField = OutputField(description="Metadata Item")


@invocation_output("metadata_output")
class MetadataOutput(BaseInvocationOutput):
    """A metadata dictionary."""

    metadata: MetadataField = OutputField(description="Metadata Dict")


@invocation_output("latents_meta_output")
class LatentsMetaOutput(LatentsOutput, MetadataOutput):
    """Latents + metadata"""


def metadata_field(data: dict[str, Any]) -> MetadataField:
    """A metadata field holding plain JSON values (pydantic objects dumped), as it will be stored."""
    return MetadataField.model_validate(to_jsonable_python(data))


# --- building metadata -------------------------------------------------------------------------------


@invocation("metadata_item", title="Metadata Item", tags=["metadata"], category=_CATEGORY, version="1.0.1")
class MetadataItemInvocation(BaseInvocation):
    """Makes one metadata item from a label and a value (usually connected)."""

    label: str = InputField(description=_LABEL)
    value: Any = InputField(description=_VALUE, ui_type="AnyField")

    def invoke(self, context: "InvocationContext") -> MetadataItemOutput:
        return MetadataItemOutput(item=MetadataItemField(label=self.label, value=self.value))


@invocation("metadata", title="Metadata", tags=["metadata"], category=_CATEGORY, version="1.0.1")
class MetadataInvocation(BaseInvocation):
    """Turns one metadata item, or a collection of them, into a metadata dictionary (plus app_version)."""

    items: Union[list[MetadataItemField], MetadataItemField] = InputField(
        description="A single metadata item or collection of metadata items")

    def invoke(self, context: "InvocationContext") -> MetadataOutput:
        items = [self.items] if isinstance(self.items, MetadataItemField) else self.items
        data: dict[str, Any] = {item.label: item.value for item in items}
        data["app_version"] = APP_VERSION
        return MetadataOutput(metadata=metadata_field(data))


@invocation("merge_metadata", title="Metadata Merge", tags=["metadata"], category=_CATEGORY, version="1.0.1")
class MergeMetadataInvocation(BaseInvocation):
    """Merges metadata dictionaries into one; later ones win on repeated keys."""

    collection: list[MetadataField] = InputField(description="Collection of Metadata")

    def invoke(self, context: "InvocationContext") -> MetadataOutput:
        data: dict[str, Any] = {}
        for item in self.collection:
            data.update(item.root)
        return MetadataOutput(metadata=metadata_field(data))


GENERATION_MODES = Literal[
    "txt2img", "img2img", "inpaint", "outpaint",
    "sdxl_txt2img", "sdxl_img2img", "sdxl_inpaint", "sdxl_outpaint",
    "flux_txt2img", "flux_img2img", "flux_inpaint", "flux_outpaint",
    "flux2_txt2img", "flux2_img2img", "flux2_inpaint", "flux2_outpaint",
    "sd3_txt2img", "sd3_img2img", "sd3_inpaint", "sd3_outpaint",
    "cogview4_txt2img", "cogview4_img2img", "cogview4_inpaint", "cogview4_outpaint",
    "z_image_txt2img", "z_image_img2img", "z_image_inpaint", "z_image_outpaint",
    "ernie_image_txt2img",
    "ideogram4_txt2img",
    "qwen_image_txt2img", "qwen_image_img2img", "qwen_image_inpaint", "qwen_image_outpaint",
    "anima_txt2img", "anima_img2img", "anima_inpaint", "anima_outpaint",
    "krea2_txt2img", "krea2_img2img", "krea2_inpaint", "krea2_outpaint",
    "wan_txt2img", "wan_img2img", "wan_inpaint", "wan_outpaint", "wan_i2v",
]


@invocation("core_metadata", title="Core Metadata", tags=["metadata"], category=_CATEGORY, version="2.2.0",
            classification=Classification.Internal)
class CoreMetadataInvocation(BaseInvocation):
    """Gathers the generation parameters of an image into its metadata dictionary. Extra fields are
    accepted and kept."""

    model_config = ConfigDict(extra="allow")

    generation_mode: Optional[GENERATION_MODES] = InputField(default=None,
                                                             description="The generation mode that output this image")
    positive_prompt: Optional[str] = InputField(default=None, description="The positive prompt parameter")
    negative_prompt: Optional[str] = InputField(default=None, description="The negative prompt parameter")
    width: Optional[int] = InputField(default=None, description="The width parameter")
    height: Optional[int] = InputField(default=None, description="The height parameter")
    seed: Optional[int] = InputField(default=None, description="The seed used for noise generation")
    rand_device: Optional[str] = InputField(default=None, description="The device used for random number generation")
    cfg_scale: Optional[float] = InputField(default=None, description="The classifier-free guidance scale parameter")
    cfg_rescale_multiplier: Optional[float] = InputField(
        default=None, description="Rescale multiplier for CFG guidance, used for models trained with zero-terminal SNR")
    steps: Optional[int] = InputField(default=None, description="The number of steps used for inference")
    scheduler: Optional[str] = InputField(default=None, description="The scheduler used for inference")
    seamless_x: Optional[bool] = InputField(default=None, description="Whether seamless tiling was used on the X axis")
    seamless_y: Optional[bool] = InputField(default=None, description="Whether seamless tiling was used on the Y axis")
    clip_skip: Optional[int] = InputField(default=None, description="The number of skipped CLIP layers")
    model: Optional[ModelIdentifierField] = InputField(default=None, description="The main model used for inference")
    controlnets: Optional[list[ControlNetMetadataField]] = InputField(default=None,
                                                                       description="The ControlNets used for inference")
    ipAdapters: Optional[list[IPAdapterMetadataField]] = InputField(default=None,  # noqa: N815 - InvokeAI's name
                                                                    description="The IP Adapters used for inference")
    t2iAdapters: Optional[list[T2IAdapterMetadataField]] = InputField(default=None,  # noqa: N815
                                                                      description="The IP Adapters used for inference")
    loras: Optional[list[LoRAMetadataField]] = InputField(default=None, description="The LoRAs used for inference")
    strength: Optional[float] = InputField(default=None, description="The strength used for latents-to-latents")
    init_image: Optional[str] = InputField(default=None, description="The name of the initial image")
    vae: Optional[ModelIdentifierField] = InputField(
        default=None, description="The VAE used for decoding, if the main model's default was not used")
    qwen3_encoder: Optional[ModelIdentifierField] = InputField(
        default=None, description="The Qwen3 text encoder model used for Z-Image inference")
    mistral_encoder: Optional[ModelIdentifierField] = InputField(
        default=None, description="The Mistral text encoder model used for FLUX.2 [dev] inference")
    ideogram4_caption: Optional[str] = InputField(
        default=None, description="The structured JSON caption encoded for Ideogram 4 inference")
    # High resolution fix
    hrf_enabled: Optional[bool] = InputField(default=None, description="Whether or not high resolution fix was enabled.")
    hrf_method: Optional[str] = InputField(default=None, description="The high resolution fix upscale method.")
    hrf_strength: Optional[float] = InputField(
        default=None, description="The high resolution fix img2img strength used in the upscale pass.")
    # SDXL
    positive_style_prompt: Optional[str] = InputField(default=None, description="The positive style prompt parameter")
    negative_style_prompt: Optional[str] = InputField(default=None, description="The negative style prompt parameter")
    # SDXL refiner
    refiner_model: Optional[ModelIdentifierField] = InputField(default=None, description="The SDXL Refiner model used")
    refiner_cfg_scale: Optional[float] = InputField(
        default=None, description="The classifier-free guidance scale parameter used for the refiner")
    refiner_steps: Optional[int] = InputField(default=None, description="The number of steps used for the refiner")
    refiner_scheduler: Optional[str] = InputField(default=None, description="The scheduler used for the refiner")
    refiner_positive_aesthetic_score: Optional[float] = InputField(
        default=None, description="The aesthetic score used for the refiner")
    refiner_negative_aesthetic_score: Optional[float] = InputField(
        default=None, description="The aesthetic score used for the refiner")
    refiner_start: Optional[float] = InputField(default=None, description="The start value used for refiner denoising")

    def invoke(self, context: "InvocationContext") -> MetadataOutput:
        data = self.model_dump(mode="json", exclude_none=True, exclude={"id", "type", "is_intermediate", "use_cache"})
        data["app_version"] = APP_VERSION
        return MetadataOutput(metadata=metadata_field(data))


@invocation("metadata_field_extractor", title="Metadata Field Extractor", tags=["metadata"], category=_CATEGORY,
            version="1.0.0", classification=Classification.Deprecated)
class MetadataFieldExtractorInvocation(BaseInvocation):
    """Reads one string value from an image's metadata by key. Fails when the image has no metadata, the key
    is absent, or the value is not a string."""

    image: ImageField = InputField(description="The image to extract metadata from")
    key: str = InputField(description="The key in the image's metadata to extract the value from")

    def invoke(self, context: "InvocationContext") -> StringOutput:
        name = self.image.image_name
        metadata = context.images.get_metadata(name)
        if not metadata:
            raise ValueError(f"No metadata found on image {name}")
        if self.key not in metadata.root:
            raise ValueError(f"No key '{self.key}' found in the metadata for {name}")
        value = metadata.root[self.key]
        if not isinstance(value, str):
            raise ValueError(f"Metadata at key '{self.key}' must be a string")
        return StringOutput(value=value)


# --- linked metadata: labels --------------------------------------------------------------------------

CUSTOM_LABEL = "* CUSTOM LABEL *"

CORE_LABELS = Literal[
    "* CUSTOM LABEL *", "positive_prompt", "positive_style_prompt", "negative_prompt", "negative_style_prompt",
    "width", "height", "seed", "cfg_scale", "cfg_rescale_multiplier", "steps", "scheduler", "clip_skip", "model",
    "vae", "seamless_x", "seamless_y", "guidance", "cfg_scale_start_step", "cfg_scale_end_step",
]
CORE_LABELS_STRING = Literal[
    "* CUSTOM LABEL *", "positive_prompt", "positive_style_prompt", "negative_prompt", "negative_style_prompt",
]
CORE_LABELS_INTEGER = Literal[
    "* CUSTOM LABEL *", "width", "height", "seed", "steps", "clip_skip", "cfg_scale_start_step", "cfg_scale_end_step",
]
CORE_LABELS_FLOAT = Literal["* CUSTOM LABEL *", "cfg_scale", "cfg_rescale_multiplier", "guidance"]
CORE_LABELS_BOOL = Literal["* CUSTOM LABEL *", "seamless_x", "seamless_y"]
CORE_LABELS_SCHEDULER = Literal["* CUSTOM LABEL *", "scheduler"]
CORE_LABELS_MODEL = Literal["* CUSTOM LABEL *", "model"]
CORE_LABELS_VAE = Literal["* CUSTOM LABEL *", "vae"]


class _CustomLabelCheck(BaseModel):
    """Requires `custom_label` when `label` is the custom-label choice (checked when the node is built).

    InvokeAI checks this in a model validator; a field validator on `custom_label` (which also runs on the
    default, see `CustomLabel`) checks the same thing and names the field in the error.
    """

    @field_validator("custom_label", check_fields=False)
    @classmethod
    def _require_custom_label(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        if info.data.get("label") == CUSTOM_LABEL and (value is None or not value.strip()):
            raise ValueError("You must enter a Custom Label")
        return value


# The default (None) is validated too, so that a missing custom label is caught.
CustomLabel = Annotated[Optional[str], Field(validate_default=True)]


def _custom_label_field() -> Any:
    return InputField(default=None, description=_LABEL, input=Input.Direct)


def _key_of(node: Any) -> str:
    return str(node.custom_label if node.label == CUSTOM_LABEL else node.label)


def _data_of(node: Any) -> dict[str, Any]:
    return {} if node.metadata is None else node.metadata.root


def _as_vae_field(value: Any) -> Optional[VAEField]:
    """A VAEField, whether it arrives as the object or as its JSON (after crossing a task boundary)."""
    if isinstance(value, VAEField):
        return value
    if isinstance(value, Mapping) and "vae" in value and set(value) <= {"vae", "seamless_axes"}:
        try:
            return VAEField.model_validate(value)
        except ValidationError:
            return None
    return None


@invocation("metadata_item_linked", title="Metadata Item Linked", tags=["metadata"], category=_CATEGORY,
            version="1.0.1", classification=Classification.Beta)
class MetadataItemLinkedInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Sets one label of the incoming metadata (or of a new dictionary) to the value; a VAE value is stored as
    its model identifier."""

    label: CORE_LABELS = InputField(default=CUSTOM_LABEL, description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    value: Any = InputField(description=_VALUE, ui_type="AnyField")

    def invoke(self, context: "InvocationContext") -> MetadataOutput:
        vae = _as_vae_field(self.value)
        value = vae.vae if vae is not None else self.value
        data = dict(_data_of(self))
        data[_key_of(self)] = value
        data["app_version"] = APP_VERSION
        return MetadataOutput(metadata=metadata_field(data))


@invocation("metadata_from_image", title="Metadata From Image", tags=["metadata"], category=_CATEGORY,
            version="1.0.1", classification=Classification.Beta)
class MetadataFromImageInvocation(BaseInvocation):
    """Reads the metadata embedded in an image (an empty dictionary when it has none)."""

    image: ImageField = InputField(description="The image to process")

    def invoke(self, context: "InvocationContext") -> MetadataOutput:
        found = context.images.get_metadata(self.image.image_name)
        return MetadataOutput(metadata=metadata_field({} if found is None else dict(found.root)))


# --- linked metadata: plain values --------------------------------------------------------------------


@invocation("metadata_to_string", title="Metadata To String", tags=["metadata"], category=_CATEGORY,
            version="1.0.0", classification=Classification.Beta)
class MetadataToStringInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a label's value from metadata as a string, or the default when the label is absent."""

    label: CORE_LABELS_STRING = InputField(default=CUSTOM_LABEL, description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: str = InputField(description="The default string to use if not found in the metadata")

    def invoke(self, context: "InvocationContext") -> StringOutput:
        return StringOutput(value=str(_data_of(self).get(_key_of(self), self.default_value)))


@invocation("metadata_to_integer", title="Metadata To Integer", tags=["metadata"], category=_CATEGORY,
            version="1.0.0", classification=Classification.Beta)
class MetadataToIntegerInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a label's value from metadata as an integer, or the default when the label is absent."""

    label: CORE_LABELS_INTEGER = InputField(default=CUSTOM_LABEL, description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: int = InputField(description="The default integer to use if not found in the metadata")

    def invoke(self, context: "InvocationContext") -> IntegerOutput:
        return IntegerOutput(value=int(_data_of(self).get(_key_of(self), self.default_value)))


@invocation("metadata_to_float", title="Metadata To Float", tags=["metadata"], category=_CATEGORY,
            version="1.1.0", classification=Classification.Beta)
class MetadataToFloatInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a label's value from metadata as a float, or the default when the label is absent."""

    label: CORE_LABELS_FLOAT = InputField(default=CUSTOM_LABEL, description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: float = InputField(description="The default float to use if not found in the metadata")

    def invoke(self, context: "InvocationContext") -> FloatOutput:
        return FloatOutput(value=float(_data_of(self).get(_key_of(self), self.default_value)))


@invocation("metadata_to_bool", title="Metadata To Bool", tags=["metadata"], category=_CATEGORY,
            version="1.0.0", classification=Classification.Beta)
class MetadataToBoolInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a label's value from metadata as a boolean (Python truthiness), or the default when absent."""

    label: CORE_LABELS_BOOL = InputField(default=CUSTOM_LABEL, description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: bool = InputField(description="The default bool to use if not found in the metadata")

    def invoke(self, context: "InvocationContext") -> BooleanOutput:
        return BooleanOutput(value=bool(_data_of(self).get(_key_of(self), self.default_value)))


@invocation("metadata_to_scheduler", title="Metadata To Scheduler", tags=["metadata"], category=_CATEGORY,
            version="1.0.1", classification=Classification.Beta)
class MetadataToSchedulerInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a scheduler name from metadata, or the default when the label is absent."""

    label: CORE_LABELS_SCHEDULER = InputField(default="scheduler", description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: SCHEDULER_NAME_VALUES = InputField(default="euler",
                                                      description="The default scheduler to use if not found in the metadata",
                                                      ui_type="SchedulerField")

    def invoke(self, context: "InvocationContext") -> SchedulerOutput:
        return SchedulerOutput(scheduler=_data_of(self).get(_key_of(self), self.default_value))


@invocation("metadata_to_string_collection", title="Metadata To String Collection", tags=["metadata"],
            category=_CATEGORY, version="1.0.0", classification=Classification.Beta)
class MetadataToStringCollectionInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a list of strings from metadata, or the default when the label is absent."""

    label: CORE_LABELS_STRING = InputField(default=CUSTOM_LABEL, description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: list[str] = InputField(description="The default string collection to use if not found in the metadata")

    def invoke(self, context: "InvocationContext") -> StringCollectionOutput:
        return StringCollectionOutput(collection=_data_of(self).get(_key_of(self), self.default_value))


@invocation("metadata_to_integer_collection", title="Metadata To Integer Collection", tags=["metadata"],
            category=_CATEGORY, version="1.0.0", classification=Classification.Beta)
class MetadataToIntegerCollectionInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a list of integers from metadata, or the default when the label is absent."""

    label: CORE_LABELS_INTEGER = InputField(default=CUSTOM_LABEL, description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: list[int] = InputField(description="The default integer to use if not found in the metadata")

    def invoke(self, context: "InvocationContext") -> IntegerCollectionOutput:
        return IntegerCollectionOutput(collection=_data_of(self).get(_key_of(self), self.default_value))


@invocation("metadata_to_float_collection", title="Metadata To Float Collection", tags=["metadata"],
            category=_CATEGORY, version="1.0.0", classification=Classification.Beta)
class MetadataToFloatCollectionInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a list of floats from metadata, or the default when the label is absent."""

    label: CORE_LABELS_FLOAT = InputField(default=CUSTOM_LABEL, description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: list[float] = InputField(description="The default float to use if not found in the metadata")

    def invoke(self, context: "InvocationContext") -> FloatCollectionOutput:
        return FloatCollectionOutput(collection=_data_of(self).get(_key_of(self), self.default_value))


@invocation("metadata_to_bool_collection", title="Metadata To Bool Collection", tags=["metadata"],
            category=_CATEGORY, version="1.0.0", classification=Classification.Beta)
class MetadataToBoolCollectionInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a list of booleans from metadata, or the default when the label is absent."""

    label: CORE_LABELS_BOOL = InputField(default=CUSTOM_LABEL, description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: list[bool] = InputField(description="The default bool to use if not found in the metadata")

    def invoke(self, context: "InvocationContext") -> BooleanCollectionOutput:
        return BooleanCollectionOutput(collection=_data_of(self).get(_key_of(self), self.default_value))


# --- linked metadata: models --------------------------------------------------------------------------


def _model_service(context: "InvocationContext") -> Any:
    return context.services.get(MODEL_SERVICE)


def _attr(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _identifier_from_record(record: Any, where: str) -> ModelIdentifierField:
    """A model identifier (no submodel) from a model config or a metadata entry, object or mapping."""
    values = {name: _attr(record, name) for name in ("key", "hash", "name", "base", "type")}
    try:
        return ModelIdentifierField.model_validate(values)
    except ValidationError:
        missing = [name for name, value in values.items() if value is None]
        raise ValueError(
            f"{where} is not a complete model identifier (missing {', '.join(missing) or 'valid values'}) and no "
            f"model store is configured to look it up"
        ) from None


def _get_model(context: "InvocationContext", key: str, record: Any, where: str) -> ModelIdentifierField:
    """InvokeAI's get_model: the installed model with this key. With a model service, an unknown key is an
    error and the service's own config is preferred; without one, the identifier comes from ``record``."""
    store = _model_service(context)
    if store is not None:
        if not store.exists(key):
            raise ValueError(f"Unknown model: {key}")
        get_config = getattr(store, "get_config", None)
        if callable(get_config):
            return _identifier_from_record(get_config(key), f"model config {key!r}")
    return _identifier_from_record(record, where)


def _extract_model(data: Any, label: Optional[str], model_type: ModelType,
                   context: "InvocationContext") -> Optional[ModelIdentifierField]:
    """InvokeAI's extract_model_key + get_model for ``data[label]``: by key when that model is installed
    (always assumed without a model service), else by name through the service's search_by_attrs when it
    has one. None when nothing matches."""
    entry = data.get(label) if isinstance(data, Mapping) and label is not None else None
    if not isinstance(entry, Mapping):
        return None
    store = _model_service(context)
    key = entry.get("key")
    if isinstance(key, str) and (store is None or store.exists(key)):
        return _get_model(context, key, entry, f"metadata entry {label!r}")
    search = getattr(store, "search_by_attrs", None) if store is not None else None
    if callable(search):
        for name_field in ("name", "model_name"):
            if name_field in entry:
                found = search(name=entry[name_field], type=model_type)
                if found:
                    return _identifier_from_record(found[0], f"model config for {entry[name_field]!r}")
    return None


def _model_from_label(node: Any, default: ModelIdentifierField, model_type: ModelType,
                      context: "InvocationContext") -> ModelIdentifierField:
    found = _extract_model(_data_of(node), _key_of(node), model_type, context)
    if found is not None:
        return found
    return _get_model(context, default.key, default, "default_value")


def _model_label(model: ModelIdentifierField) -> str:
    base = model.base.value if isinstance(model.base, BaseModelType) else str(model.base)
    return f"{base}: {model.name}"


@invocation_output("metadata_to_model_output")
class MetadataToModelOutput(BaseInvocationOutput):
    """A main model and its UNet, VAE and CLIP submodels."""

    model: ModelIdentifierField = OutputField(description=MAIN_MODEL_DESCRIPTION, title="Model")
    name: str = OutputField(description="Model Name", title="Name")
    unet: UNetField = OutputField(description=UNET_DESCRIPTION, title="UNet")
    vae: VAEField = OutputField(description=VAE_DESCRIPTION, title="VAE")
    clip: CLIPField = OutputField(description=CLIP_DESCRIPTION, title="CLIP")


@invocation_output("metadata_to_sdxl_model_output")
class MetadataToSDXLModelOutput(BaseInvocationOutput):
    """An SDXL main model and its UNet, two CLIP and VAE submodels."""

    model: ModelIdentifierField = OutputField(description=MAIN_MODEL_DESCRIPTION, title="Model")
    name: str = OutputField(description="Model Name", title="Name")
    unet: UNetField = OutputField(description=UNET_DESCRIPTION, title="UNet")
    clip: CLIPField = OutputField(description=CLIP_DESCRIPTION, title="CLIP 1")
    clip2: CLIPField = OutputField(description=CLIP_DESCRIPTION, title="CLIP 2")
    vae: VAEField = OutputField(description=VAE_DESCRIPTION, title="VAE")


@invocation("metadata_to_model", title="Metadata To Model", tags=["metadata"], category=_CATEGORY,
            version="1.3.0", classification=Classification.Beta)
class MetadataToModelInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a main model from metadata (or uses the default) and splits it into UNet, CLIP and VAE."""

    label: CORE_LABELS_MODEL = InputField(default="model", description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: ModelIdentifierField = InputField(description="The default model to use if not found in the metadata",
                                                     ui_model_type=ModelType.Main)

    def invoke(self, context: "InvocationContext") -> MetadataToModelOutput:
        model = _model_from_label(self, self.default_value, ModelType.Main, context)
        return MetadataToModelOutput(
            model=model,
            name=_model_label(model),
            unet=unet_of(model),
            clip=clip_of(model),
            vae=VAEField(vae=submodel(model, SubModelType.VAE)),
        )


@invocation("metadata_to_sdxl_model", title="Metadata To SDXL Model", tags=["metadata"], category=_CATEGORY,
            version="1.3.0", classification=Classification.Beta)
class MetadataToSDXLModelInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads an SDXL main model from metadata (or uses the default) and splits it into UNet, two CLIPs and
    VAE."""

    label: CORE_LABELS_MODEL = InputField(default="model", description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: ModelIdentifierField = InputField(
        description="The default SDXL Model to use if not found in the metadata",
        ui_model_type=ModelType.Main, ui_model_base=BaseModelType.StableDiffusionXL)

    def invoke(self, context: "InvocationContext") -> MetadataToSDXLModelOutput:
        model = _model_from_label(self, self.default_value, ModelType.Main, context)
        return MetadataToSDXLModelOutput(
            model=model,
            name=_model_label(model),
            unet=unet_of(model),
            clip=clip_of(model),
            clip2=clip_of(model, SubModelType.Tokenizer2, SubModelType.TextEncoder2),
            vae=VAEField(vae=submodel(model, SubModelType.VAE)),
        )


@invocation("metadata_to_vae", title="Metadata To VAE", tags=["metadata"], category=_CATEGORY, version="1.2.1",
            classification=Classification.Beta)
class MetadataToVAEInvocation(BaseInvocation, WithMetadata, _CustomLabelCheck):
    """Reads a VAE model from metadata, or uses the default VAE."""

    label: CORE_LABELS_VAE = InputField(default="vae", description=_LABEL, input=Input.Direct)
    custom_label: CustomLabel = _custom_label_field()
    default_value: VAEField = InputField(description="The default VAE to use if not found in the metadata")

    def invoke(self, context: "InvocationContext") -> VAEOutput:
        model = _model_from_label(self, self.default_value.vae, ModelType.VAE, context)
        return VAEOutput(vae=VAEField(vae=submodel(model, SubModelType.VAE)))


# --- linked metadata: LoRAs ---------------------------------------------------------------------------


def _metadata_list(node: Any, key: str = "loras") -> list[Any]:
    loras = _data_of(node).get(key, [])
    return loras if isinstance(loras, list) else []


def _lora_weight(entry: Any) -> float:
    if not isinstance(entry, Mapping) or "weight" not in entry:
        raise ValueError(f"LoRA metadata entry has no weight: {entry!r}")
    return float(entry["weight"])


def _add_lora(context: "InvocationContext", loras: list[LoRAField], model: ModelIdentifierField, weight: float,
              target: str) -> None:
    if any(existing.lora.key == model.key for existing in loras):
        context.logger.info('LoRA "%s" already applied to %s', model.key, target)
    else:
        loras.append(LoRAField(lora=model, weight=weight))


@invocation("metadata_to_loras", title="Metadata To LoRAs", tags=["metadata"], category=_CATEGORY, version="1.1.1",
            classification=Classification.Beta)
class MetadataToLorasInvocation(BaseInvocation, WithMetadata):
    """Applies the LoRAs recorded in metadata (label "loras") to the UNet and CLIP; LoRAs whose model cannot
    be found are skipped, LoRAs already applied are kept as they are."""

    unet: Optional[UNetField] = InputField(default=None, description=UNET_DESCRIPTION, input=Input.Connection,
                                           title="UNet")
    clip: Optional[CLIPField] = InputField(default=None, description=CLIP_DESCRIPTION, input=Input.Connection,
                                           title="CLIP")

    def invoke(self, context: "InvocationContext") -> LoRALoaderOutput:
        output = LoRALoaderOutput(unet=copy.deepcopy(self.unet), clip=copy.deepcopy(self.clip))
        for entry in _metadata_list(self):
            model = _extract_model(entry, "model", ModelType.LoRA, context)
            if model is None:
                continue
            weight = _lora_weight(entry)
            if output.unet is not None:
                _add_lora(context, output.unet.loras, model, weight, "unet")
            if output.clip is not None:
                _add_lora(context, output.clip.loras, model, weight, "clip")
        return output


@invocation("metadata_to_sdlx_loras", title="Metadata To SDXL LoRAs", tags=["metadata"], category=_CATEGORY,
            version="1.1.1", classification=Classification.Beta)
class MetadataToSDXLLorasInvocation(BaseInvocation, WithMetadata):
    """Applies the LoRAs recorded in metadata (label "loras") to the SDXL UNet and both CLIPs."""

    unet: Optional[UNetField] = InputField(default=None, description=UNET_DESCRIPTION, input=Input.Connection,
                                           title="UNet")
    clip: Optional[CLIPField] = InputField(default=None, description=CLIP_DESCRIPTION, input=Input.Connection,
                                           title="CLIP 1")
    clip2: Optional[CLIPField] = InputField(default=None, description=CLIP_DESCRIPTION, input=Input.Connection,
                                            title="CLIP 2")

    def invoke(self, context: "InvocationContext") -> SDXLLoRALoaderOutput:
        output = SDXLLoRALoaderOutput(unet=copy.deepcopy(self.unet), clip=copy.deepcopy(self.clip),
                                      clip2=copy.deepcopy(self.clip2))
        for entry in _metadata_list(self):
            model = _extract_model(entry, "model", ModelType.LoRA, context)
            if model is None:
                continue
            weight = _lora_weight(entry)
            if output.unet is not None:
                _add_lora(context, output.unet.loras, model, weight, "unet")
            if output.clip is not None:
                _add_lora(context, output.clip.loras, model, weight, "clip")
            if output.clip2 is not None:
                _add_lora(context, output.clip2.loras, model, weight, "clip")
        return output


@invocation_output("metadata_to_lora_collection_output")
class MetadataToLorasCollectionOutput(BaseInvocationOutput):
    """A collection of LoRAs with their weights."""

    lora: list[LoRAField] = OutputField(description="Collection of LoRA model and weights", title="LoRAs")


@invocation("metadata_to_lora_collection", title="Metadata To LoRA Collection", tags=["metadata"],
            category=_CATEGORY, version="1.1.0", classification=Classification.Beta)
class MetadataToLorasCollectionInvocation(BaseInvocation, WithMetadata):
    """Collects the input LoRAs and then the LoRAs recorded in metadata under the label (default "loras")
    into one list; a metadata LoRA already among the inputs is left out."""

    custom_label: str = InputField(default="loras", description=_LABEL, input=Input.Direct)
    loras: Optional[Union[LoRAField, list[LoRAField]]] = InputField(
        default=[], description="LoRA models and weights. May be a single LoRA or collection.", title="LoRAs")

    def invoke(self, context: "InvocationContext") -> MetadataToLorasCollectionOutput:
        key = self.custom_label.strip() or "loras"
        if self.loras is None:
            given: list[LoRAField] = []
        else:
            given = self.loras if isinstance(self.loras, list) else [self.loras]
        output = MetadataToLorasCollectionOutput(lora=[])
        added: list[str] = []
        for lora in given:
            if lora.lora.key in added:
                continue
            output.lora.append(lora)
            added.append(lora.lora.key)
        for entry in _metadata_list(self, key):
            # Entries are LoRAMetadataField ({model, weight}) or LoRAField ({lora, weight}) dumps.
            model = _extract_model(entry, "model", ModelType.LoRA, context)
            if model is None:
                model = _extract_model(entry, "lora", ModelType.LoRA, context)
            if model is None or model.key in added:
                continue
            output.lora.append(LoRAField(lora=model, weight=_lora_weight(entry)))
        return output


# --- linked metadata: ControlNets and adapters --------------------------------------------------------

T = TypeVar("T")


def append_list(item_class: type[T], new_item: T, items: Union[T, list[T], None] = None) -> list[T]:
    """``items`` (one item, a list, or None) as a new list with ``new_item`` appended; every element must be
    an ``item_class``."""
    if not isinstance(new_item, item_class):
        raise ValueError(f"Invalid new_item type in: {new_item},  expected {item_class}")
    if items is None:
        return [new_item]
    if isinstance(items, item_class):
        return [items, new_item]
    if isinstance(items, list) and all(isinstance(i, item_class) for i in items):
        return [*items, new_item]
    raise ValueError(f"Invalid items type in: {items},  expected {item_class}")


def _required(entry: Any, key: str, what: str) -> Any:
    if not isinstance(entry, Mapping) or key not in entry:
        raise ValueError(f"{what} metadata entry has no {key!r}: {entry!r}")
    return entry[key]


def _required_model(entry: Any, label: str, model_type: ModelType, context: "InvocationContext",
                    what: str) -> ModelIdentifierField:
    """Adapters and ControlNets are not skipped when their model is missing: InvokeAI fails on them."""
    model = _extract_model(entry, label, model_type, context)
    if model is None:
        found = entry.get(label) if isinstance(entry, Mapping) else None
        key = found.get("key", "") if isinstance(found, Mapping) else ""
        raise ValueError(f"Unknown model: {key} ({what} metadata entry, field {label!r})")
    return model


@invocation_output("md_control_list_output")
class MDControlListOutput(BaseInvocationOutput):
    control_list: Optional[Union[ControlField, list[ControlField]]] = OutputField(
        description="ControlNet(s) to apply", title="ControlNet-List")


@invocation("metadata_to_controlnets", title="Metadata To ControlNets", tags=["metadata"], category=_CATEGORY,
            version="1.2.0", classification=Classification.Beta)
class MetadataToControlnetsInvocation(BaseInvocation, WithMetadata):
    """Appends the ControlNets recorded in metadata (label "controlnets") to the incoming ControlNet list."""

    control_list: Optional[Union[ControlField, list[ControlField]]] = InputField(
        default=None, title="ControlNet-List", input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> MDControlListOutput:
        controls: Union[ControlField, list[ControlField]] = self.control_list if self.control_list is not None else []
        for entry in _metadata_list(self, "controlnets"):
            model = _required_model(entry, "control_model", ModelType.ControlNet, context, "ControlNet")
            weight = entry.get("control_weight", 1.0)
            check_control_weights(weight)
            control = ControlField(
                image=_required(entry, "image", "ControlNet"),
                control_model=model,
                control_weight=weight,
                begin_step_percent=entry.get("begin_step_percent", 0),
                end_step_percent=entry.get("end_step_percent", 1),
                control_mode=entry.get("control_mode", "balanced"),
                resize_mode=entry.get("resize_mode", "just_resize"),
            )
            check_step_range(control.begin_step_percent, control.end_step_percent)
            controls = append_list(ControlField, control, controls)
        return MDControlListOutput(control_list=controls)


@invocation_output("md_ip_adapter_list_output")
class MDIPAdapterListOutput(BaseInvocationOutput):
    ip_adapter_list: Optional[Union[IPAdapterField, list[IPAdapterField]]] = OutputField(
        description="IP-Adapter to apply", title="IP-Adapter-List")


def _image_encoder(entry: Mapping[str, Any], context: "InvocationContext") -> ModelIdentifierField:
    """The CLIP Vision encoder of a recorded IP-Adapter. InvokeAI looks it up from the IP-Adapter's model
    config; here it is read from the entry (an IPAdapterField dump has it)."""
    encoder = entry.get("image_encoder_model")
    if isinstance(encoder, Mapping) and isinstance(encoder.get("key"), str):
        store = _model_service(context)
        if store is not None and not store.exists(encoder["key"]):
            raise ValueError(f"Unknown model: {encoder['key']}")
        return _identifier_from_record(encoder, "IP-Adapter metadata entry's image_encoder_model")
    raise ValueError(
        "IP-Adapter metadata entry has no image_encoder_model, and finding the CLIP Vision encoder of an "
        "IP-Adapter model needs the model manager, which is not available to this node"
    )


@invocation("metadata_to_ip_adapters", title="Metadata To IP-Adapters", tags=["metadata"], category=_CATEGORY,
            version="1.2.0", classification=Classification.Beta)
class MetadataToIPAdaptersInvocation(BaseInvocation, WithMetadata):
    """Appends the IP-Adapters recorded in metadata (label "ipAdapters") to the incoming IP-Adapter list."""

    ip_adapter_list: Optional[Union[IPAdapterField, list[IPAdapterField]]] = InputField(
        default=None, description="IP-Adapter to apply", title="IP-Adapter-List", input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> MDIPAdapterListOutput:
        adapters: Union[IPAdapterField, list[IPAdapterField]] = (
            self.ip_adapter_list if self.ip_adapter_list is not None else [])
        for entry in _metadata_list(self, "ipAdapters"):
            model = _required_model(entry, "ip_adapter_model", ModelType.IPAdapter, context, "IP-Adapter")
            weight = entry.get("weight", 1)
            check_control_weights(weight)
            # As in InvokeAI, the recorded method is not passed on: the IP-Adapter node's default ("full")
            # applies, whose target blocks are ["block"].
            adapter = IPAdapterField(
                image=_required(entry, "image", "IP-Adapter"),
                ip_adapter_model=model,
                image_encoder_model=_image_encoder(entry, context),
                weight=weight,
                target_blocks=["block"],
                method="full",
                begin_step_percent=entry.get("begin_step_percent", 0),
                end_step_percent=entry.get("end_step_percent", 1),
                mask=None,
            )
            check_step_range(adapter.begin_step_percent, adapter.end_step_percent)
            adapters = append_list(IPAdapterField, adapter, adapters)
        return MDIPAdapterListOutput(ip_adapter_list=adapters)


@invocation_output("md_ip_adapters_output")
class MDT2IAdapterListOutput(BaseInvocationOutput):
    t2i_adapter_list: Optional[Union[T2IAdapterField, list[T2IAdapterField]]] = OutputField(
        description="T2I-Adapter(s) to apply", title="T2I Adapter-List")


@invocation("metadata_to_t2i_adapters", title="Metadata To T2I-Adapters", tags=["metadata"], category=_CATEGORY,
            version="1.2.0", classification=Classification.Beta)
class MetadataToT2IAdaptersInvocation(BaseInvocation, WithMetadata):
    """Appends the T2I-Adapters recorded in metadata (label "t2iAdapters") to the incoming T2I-Adapter list."""

    t2i_adapter_list: Optional[Union[T2IAdapterField, list[T2IAdapterField]]] = InputField(
        default=None, description="IP-Adapter to apply", title="T2I-Adapter", input=Input.Connection)

    def invoke(self, context: "InvocationContext") -> MDT2IAdapterListOutput:
        adapters: Union[T2IAdapterField, list[T2IAdapterField]] = (
            self.t2i_adapter_list if self.t2i_adapter_list is not None else [])
        for entry in _metadata_list(self, "t2iAdapters"):
            model = _required_model(entry, "t2i_adapter_model", ModelType.T2IAdapter, context, "T2I-Adapter")
            weight = entry.get("weight", 1)
            if not isinstance(weight, list) and weight < 0:
                raise ValueError("T2I-Adapter weight must be greater than or equal to 0")
            check_control_weights(weight)
            adapter = T2IAdapterField(
                image=_required(entry, "image", "T2I-Adapter"),
                t2i_adapter_model=model,
                weight=weight,
                begin_step_percent=entry.get("begin_step_percent", 0),
                end_step_percent=entry.get("end_step_percent", 1),
                resize_mode=entry.get("resize_mode", "just_resize"),
            )
            check_step_range(adapter.begin_step_percent, adapter.end_step_percent)
            adapters = append_list(T2IAdapterField, adapter, adapters)
        return MDT2IAdapterListOutput(t2i_adapter_list=adapters)

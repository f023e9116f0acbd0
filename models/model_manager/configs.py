"""A model's record: what it is (InvokeAI's type/format/base/variant) and where it lives.

One JSON file per model in the registry; the fields mirror InvokeAI's model config (reference §4.2),
flattened into one class because the taxonomy values carry the distinctions.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from invokeai_provider.core.taxonomy import (
    BaseModelType,
    ClipVariantType,
    Flux2VariantType,
    FluxVariantType,
    ModelType,
    ModelVariantType,
    MistralVariantType,
    Qwen3VariantType,
    SchedulerPredictionType,
    SubModelType,
    ZImageVariantType,
)


class ModelFormat(str, Enum):
    Diffusers = "diffusers"
    Checkpoint = "checkpoint"
    LyCORIS = "lycoris"
    EmbeddingFile = "embedding_file"
    EmbeddingFolder = "embedding_folder"
    T5Encoder = "t5_encoder"  # InvokeAI's own layout: text_encoder_2/ and tokenizer_2/ in one folder
    BnbQuantizedLlmInt8b = "bnb_quantized_int8b"
    GGUFQuantized = "gguf_quantized"
    Qwen3Encoder = "qwen3_encoder"  # InvokeAI's standalone Qwen3 encoder folder: text_encoder/ (+ tokenizer/)
    MistralEncoder = "mistral_encoder"  # InvokeAI's standalone Mistral encoder folder: text_encoder/ (+ tokenizer/)
    InvokeAI = "invokeai"  # InvokeAI's own IP-Adapter folder: ip_adapter.bin and image_encoder.txt
    Unknown = "unknown"


class ModelSourceType(str, Enum):
    Path = "path"
    Url = "url"
    HFRepoID = "hf_repo_id"


class ModelConfig(BaseModel):
    """InvokeAI-compatible model record (key, hash, taxonomy, location, source)."""

    model_config = ConfigDict(protected_namespaces=(), use_enum_values=False)

    key: str = Field(description="Unique key of the model in this registry")
    hash: str = Field(description="BLAKE3 hash of the model files (`blake3:<hex>`)")
    path: str = Field(description="Where the model is: relative to the model root when installed, else absolute")
    file_size: int = Field(description="Bytes on disk")
    name: str
    description: Optional[str] = None
    source: str = Field(description="What it was installed from (path, URL or repo id)")
    source_type: ModelSourceType = ModelSourceType.Path
    type: ModelType
    format: ModelFormat
    base: BaseModelType
    variant: Optional[Union[ModelVariantType, FluxVariantType, ClipVariantType, ZImageVariantType,
                            Qwen3VariantType, Flux2VariantType, MistralVariantType]] = None
    prediction_type: Optional[SchedulerPredictionType] = None
    repo_variant: Optional[str] = None
    config_path: Optional[str] = Field(
        default=None, description="For single-file checkpoints: a diffusers folder of the same architecture to build it")
    trigger_phrases: Optional[list[str]] = None
    image_encoder_model_id: Optional[str] = Field(
        default=None, description="For IP-Adapters in InvokeAI's folder format: the CLIP vision model it names")
    installed_in_place: bool = Field(default=False, description="Registered where it lies rather than copied")

    @model_validator(mode="after")
    def _flux2_variant(self) -> "ModelConfig":
        """FLUX.2's ``dev`` is spelled as FLUX.1's: a FLUX.2 record's variant is read as a FLUX.2 variant."""
        if self.base is BaseModelType.Flux2 and self.variant is not None \
                and not isinstance(self.variant, Flux2VariantType):
            self.variant = Flux2VariantType(self.variant.value)
        return self

    def identifier(self, submodel_type: Optional[SubModelType] = None) -> dict[str, Any]:
        """The ModelIdentifierField JSON that nodes carry on edges."""
        return {"key": self.key, "hash": self.hash, "name": self.name, "base": self.base.value,
                "type": self.type.value, "submodel_type": submodel_type.value if submodel_type else None}

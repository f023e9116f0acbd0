"""Quantized model formats that are identified but not run here (bitsandbytes LLM.int8 T5 encoders, and GGUF files of
a kind without a GGUF loader): installing or loading one is refused with what it would need, so a workflow never fails
halfway on a model that was accepted at install time. GGUF FLUX.1, FLUX.2 and Z-Image transformers and T5 and Qwen3
encoders load (`invokeai_provider.models.quantization.gguf`)."""

from __future__ import annotations

import importlib.util
from typing import Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.models.model_manager.configs import ModelFormat

QUANTIZED_FORMATS = (ModelFormat.BnbQuantizedLlmInt8b, ModelFormat.GGUFQuantized)
T5_FOLDER = "a T5 encoder folder: text_encoder_2/ (T5EncoderModel config and safetensors) with tokenizer_2/"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda() -> bool:
    if not _installed("torch"):
        return False
    import torch

    return torch.cuda.is_available()


def gguf_loadable(model_type: ModelType, base: Optional[BaseModelType]) -> bool:
    """Whether a GGUF model of this type and base has a loader here."""
    return model_type in (ModelType.Qwen3Encoder, ModelType.T5Encoder) or (
        model_type is ModelType.Main and base in (BaseModelType.Flux, BaseModelType.ZImage, BaseModelType.Flux2))


def refusal(model_type: ModelType, model_format: ModelFormat, where: str,
            base: Optional[BaseModelType] = None) -> Optional[str]:
    """Why a model of this type, format (and base) cannot be installed or loaded here, or None when it can."""
    if model_format is ModelFormat.BnbQuantizedLlmInt8b:
        bnb = "installed" if _installed("bitsandbytes") else "not installed here"
        cuda = "available" if _cuda() else "none here"
        return (f"{where}: a bitsandbytes LLM.int8-quantized T5 encoder (format bnb_quantized_int8b); running it needs "
                f"the bitsandbytes package ({bnb}), a CUDA GPU ({cuda}) and a loader for InvokeAI's int8 layout, "
                f"which this provider does not have yet; install the unquantized T5 encoder instead ({T5_FOLDER})")
    if model_format is ModelFormat.GGUFQuantized and not gguf_loadable(model_type, base):
        what = f"{base.value if base else 'unknown'} {model_type.value}"
        return (f"{where}: a GGUF-quantized {what} model (format gguf_quantized); this provider loads GGUF FLUX.1, "
                "FLUX.2 and Z-Image transformers and T5 and Qwen3 encoders, but has no GGUF loader for this kind; "
                "install the unquantized model instead")
    return None

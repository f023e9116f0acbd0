"""Quantized model formats that are identified but not run here (bitsandbytes LLM.int8 T5 encoders, and GGUF files of
a kind without a GGUF loader): installing or loading one is refused with what it would need, so a workflow never fails
halfway on a model that was accepted at install time. GGUF Z-Image and FLUX.2 transformers and Qwen3 encoders load
(`invokeai_provider.models.quantization.gguf`)."""

from __future__ import annotations

import importlib.util
from typing import Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType
from invokeai_provider.models.model_manager.configs import ModelFormat

QUANTIZED_FORMATS = (ModelFormat.BnbQuantizedLlmInt8b, ModelFormat.GGUFQuantized)
T5_FOLDER = "a T5 encoder folder: text_encoder_2/ (T5EncoderModel config and safetensors) with tokenizer_2/"
FLUX_FOLDER = ("FLUX.1 diffusers folder (model_index.json with transformer/, text encoders, tokenizers and vae/) "
               "or BFL's single file (flux1-dev.safetensors)")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda() -> bool:
    if not _installed("torch"):
        return False
    import torch

    return torch.cuda.is_available()


Z_IMAGE = "a ZImagePipeline diffusers folder or the unquantized single-file transformer"
FLUX2 = "a Flux2KleinPipeline diffusers folder or BFL's unquantized single file"
QWEN3_FOLDER = "a Qwen3 encoder folder: text_encoder/ (config and safetensors) with tokenizer/"


def gguf_loadable(model_type: ModelType, base: Optional[BaseModelType]) -> bool:
    """Whether a GGUF model of this type and base has a loader here."""
    return model_type is ModelType.Qwen3Encoder or (
        model_type is ModelType.Main and base in (BaseModelType.ZImage, BaseModelType.Flux2))


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
        what, instead = (("T5 encoder", T5_FOLDER) if model_type is ModelType.T5Encoder
                         else ("Qwen3 encoder", QWEN3_FOLDER) if model_type is ModelType.Qwen3Encoder
                         else ("Z-Image transformer", Z_IMAGE) if base is BaseModelType.ZImage
                         else ("FLUX.2 transformer", FLUX2) if base is BaseModelType.Flux2
                         else ("FLUX.1 transformer", f"a {FLUX_FOLDER}"))
        return (f"{where}: a GGUF-quantized {what} (format gguf_quantized); this provider loads GGUF Z-Image and "
                f"FLUX.2 transformers and Qwen3 encoders, but has no GGUF loader for a {what} yet; install the "
                f"unquantized model instead ({instead})")
    return None

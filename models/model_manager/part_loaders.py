"""Loading the models a FLUX.1 user installs beside the transformer, one submodel at a time as InvokeAI's
loaders do: a T5 encoder (``tokenizer_2`` / ``text_encoder_2``, or the ``_3`` slots SD3 asks for), a CLIP embed
(``tokenizer`` / ``text_encoder``), BFL's single-file FLUX VAE (``ae.safetensors``) and BFL's single-file FLUX.1
transformer (``flux1-dev.safetensors``): a main that is the transformer alone, whose other parts are separate models.

InvokeAI runs BFL's VAE with its own autoencoder class; here it becomes diffusers' ``AutoencoderKL`` (what the
FLUX VAE nodes and a diffusers FLUX folder use), its architecture read from the tensor shapes and its names
converted by diffusers' own LDM-VAE converter, so a BFL file and a diffusers folder of the same weights decode
identically. A GGUF FLUX.1 transformer goes through the same BFL conversion with its weights kept quantized, a GGUF
T5 encoder through `invokeai_provider.models.text_encoders.t5`; quantized formats without a loader are refused before
any file is fetched (`quantized`); GGUF FLUX.2 mains are FLUX.2's loader's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.models.model_manager.configs import ModelConfig, ModelFormat
from invokeai_provider.models.model_manager.manager import ModelLoadError
from invokeai_provider.models.model_manager.probe_parts import clip_embed_folders
from invokeai_provider.models.model_manager.quantized import QUANTIZED_FORMATS, refusal

if TYPE_CHECKING:
    from invokeai_provider.models.model_manager.registry import ModelRegistry

# The submodels a standalone model of each type has (what preloading loads)
PARTS: dict[ModelType, tuple[SubModelType, ...]] = {
    ModelType.T5Encoder: (SubModelType.Tokenizer2, SubModelType.TextEncoder2),
    ModelType.CLIPEmbed: (SubModelType.Tokenizer, SubModelType.TextEncoder),
}
T5_TOKENIZERS = (SubModelType.Tokenizer2, SubModelType.Tokenizer3)
T5_ENCODERS = (SubModelType.TextEncoder2, SubModelType.TextEncoder3)
# FLUX.1's latent scaling and shift (BFL's autoencoder parameters; a single file does not carry them)
FLUX_VAE_SCALING, FLUX_VAE_SHIFT = 0.3611, 0.1159
VAE_PREFIXES = ("first_stage_model.", "vae.")


def is_flux_transformer_file(config: ModelConfig) -> bool:
    """A FLUX.1 main installed as BFL's single file (plain or GGUF): only its transformer is in it."""
    return (config.type is ModelType.Main and config.base is BaseModelType.Flux
            and config.format in (ModelFormat.Checkpoint, ModelFormat.GGUFQuantized))


def handles(config: ModelConfig) -> bool:
    """Whether this module loads (or refuses) the model, rather than the manager's main/VAE/LoRA loaders."""
    quantized_here = config.format in QUANTIZED_FORMATS and config.base is not BaseModelType.Flux2
    return (config.type in PARTS or quantized_here or is_flux_transformer_file(config)
            or (config.type is ModelType.VAE and config.base is BaseModelType.Flux
                and config.format is ModelFormat.Checkpoint))


def preload_parts(config: ModelConfig) -> Optional[tuple[Optional[SubModelType], ...]]:
    """The submodels preloading loads for a model this module handles (None for the others, left to the
    manager)."""
    single_file = (ModelFormat.Checkpoint, ModelFormat.GGUFQuantized)
    if is_flux_transformer_file(config) or (config.base is BaseModelType.Flux2 and config.type is ModelType.Main
                                            and config.format in single_file):  # the transformer alone
        return (SubModelType.Transformer,)
    return PARTS.get(config.type, (None,)) if handles(config) else None


def load(registry: "ModelRegistry", config: ModelConfig, part: Optional[SubModelType], dtype: Any) -> Any:
    """The model's ``part`` (a T5 or CLIP submodel; ignored for a VAE), in ``dtype``."""
    refused = refusal(config.type, config.format, f"model {config.name!r} ({config.key})", config.base)
    if refused:
        raise ModelLoadError(refused)
    if is_flux_transformer_file(config) and part is not SubModelType.Transformer:  # before fetching the file
        raise ModelLoadError(
            f"model {config.name!r} is a single-file FLUX.1 transformer (BFL {config.format.value}): submodel "
            f"{part.value if part else 'None'!r} does not exist in it (only transformer); its T5 encoder, CLIP embed "
            "and VAE are separate models (flux_model_loader's t5_encoder_model, clip_embed_model and vae_model)")
    with registry.local_model(config) as local:
        if config.type is ModelType.T5Encoder and config.format is ModelFormat.GGUFQuantized:
            return _t5_gguf_part(config, part, local.path, local.config_path, dtype)
        if config.type is ModelType.T5Encoder:
            return _t5_part(config, part, local.path, dtype)
        if config.type is ModelType.CLIPEmbed:
            return _clip_part(config, part, local.path, dtype)
        if config.type is ModelType.Main:
            return _flux_transformer(config, local.path, dtype)
        return load_flux_vae_checkpoint(local.path, dtype)


def _wrong_part(config: ModelConfig, part: Optional[SubModelType]) -> ModelLoadError:
    names = ", ".join(p.value for p in (T5_TOKENIZERS + T5_ENCODERS if config.type is ModelType.T5Encoder
                                        else PARTS[config.type]))
    return ModelLoadError(f"model {config.name!r} is a {config.type.value} model: submodel "
                          f"{part.value if part else 'None'!r} does not exist in it (expected one of {names})")


def _t5_part(config: ModelConfig, part: Optional[SubModelType], folder: Path, dtype: Any) -> Any:
    if part in T5_TOKENIZERS:
        from transformers import T5TokenizerFast

        return T5TokenizerFast.from_pretrained(folder / "tokenizer_2", local_files_only=True)
    if part in T5_ENCODERS:
        from transformers import T5EncoderModel

        return T5EncoderModel.from_pretrained(folder / "text_encoder_2", local_files_only=True,
                                              torch_dtype=dtype).eval()
    raise _wrong_part(config, part)


def _t5_gguf_part(config: ModelConfig, part: Optional[SubModelType], path: Path, config_path: Optional[Path],
                  dtype: Any) -> Any:
    from invokeai_provider.models.text_encoders import t5

    where = f"model {config.name!r} ({config.key})"
    if part in T5_TOKENIZERS:
        from transformers import T5TokenizerFast

        return T5TokenizerFast.from_pretrained(t5.tokenizer_folder(config_path, where), local_files_only=True)
    if part in T5_ENCODERS:
        return t5.load_gguf(path, dtype)
    raise _wrong_part(config, part)


def _clip_part(config: ModelConfig, part: Optional[SubModelType], folder: Path, dtype: Any) -> Any:
    encoder, tokenizer = clip_embed_folders(folder)
    if part is SubModelType.Tokenizer:
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(tokenizer, local_files_only=True)
    if part is SubModelType.TextEncoder:  # FLUX reads CLIP-L's pooled output: CLIPTextModel, as InvokeAI loads it
        from transformers import CLIPTextModel

        return CLIPTextModel.from_pretrained(encoder, local_files_only=True, torch_dtype=dtype).eval()
    if part is SubModelType.TextEncoder2:  # SD3 reads the projected pooled output (CLIP-L's and CLIP-G's)
        from invokeai_provider.models.sd3.text_encoding import load_projected_clip

        return load_projected_clip(encoder, dtype, f"model {config.name!r}")
    raise _wrong_part(config, part)


def _flux_transformer(config: ModelConfig, path: Path, dtype: Any) -> Any:
    """The transformer of a BFL single file (GGUF: kept quantized), as diffusers' FluxTransformer2DModel."""
    from invokeai_provider.models.flux.bfl_transformer import (BflTransformerError, load_bfl_transformer,
                                                               load_gguf_transformer)

    try:
        if config.format is ModelFormat.GGUFQuantized:
            return load_gguf_transformer(path, dtype)
        return load_bfl_transformer(path, dtype)
    except BflTransformerError as exc:
        raise ModelLoadError(f"model {config.name!r} ({config.key}) transformer: {exc}") from None


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    for prefix in VAE_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            return {key[len(prefix):]: value for key, value in state.items()}
    return state


def _indices(state: dict[str, Any], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for key in state if (m := re.match(pattern, key))})


def flux_vae_config(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``AutoencoderKL`` arguments of a BFL-named VAE state dict, read from its shapes."""
    needed = ("encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight",
              "encoder.down.0.block.0.conv1.weight")
    missing = [key for key in needed if key not in state]
    if missing:
        raise ModelLoadError(f"{path}: not a BFL/LDM-named VAE (missing {', '.join(missing)})")
    levels = _indices(state, r"encoder\.down\.(\d+)\.")
    return dict(
        in_channels=state["encoder.conv_in.weight"].shape[1], out_channels=state["decoder.conv_out.weight"].shape[0],
        down_block_types=("DownEncoderBlock2D",) * len(levels), up_block_types=("UpDecoderBlock2D",) * len(levels),
        block_out_channels=tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in levels),
        layers_per_block=len(_indices(state, r"encoder\.down\.0\.block\.(\d+)\.")),
        latent_channels=state["decoder.conv_in.weight"].shape[1], sample_size=1024,
        scaling_factor=FLUX_VAE_SCALING, shift_factor=FLUX_VAE_SHIFT,
        use_quant_conv="quant_conv.weight" in state, use_post_quant_conv="post_quant_conv.weight" in state,
        mid_block_add_attention="encoder.mid.attn_1.q.weight" in state)


def load_flux_vae_checkpoint(path: Path, dtype: Any) -> Any:
    """BFL's ``ae.safetensors`` as diffusers' ``AutoencoderKL``; every tensor must find its place."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    state = _strip_prefix(load_file(str(path)))
    config = flux_vae_config(state, path)
    model = AutoencoderKL(**config)
    converted = convert_ldm_vae_checkpoint(state, config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{path}: the VAE's tensors do not fit AutoencoderKL (missing {sorted(missing)[:4]}, "
                             f"unexpected {sorted(unexpected)[:4]})")
    return (model if dtype in (None, model.dtype) else model.to(dtype=dtype)).eval()

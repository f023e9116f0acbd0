"""Loading Z-Image's models one submodel at a time, as InvokeAI's Z-Image loaders do: a ZImagePipeline folder's
parts, a single-file transformer (original or ComfyUI names, converted by diffusers' own converter, its architecture
read from the tensor shapes), standalone Qwen3 encoders (InvokeAI's folder, or a single file whose tokenizer comes
from the ``--config`` folder it was installed with: InvokeAI ships its own copy of Qwen3's tokenizer, this provider
has none), Alibaba's ControlNet files (as diffusers' ``ZImageControlNetModel``) and LoRAs (converted to diffusers'
module names, `lora_conversion`).

The Qwen3 encoder is always a ``Qwen3Model`` (the causal LM's head is never used: Z-Image reads a hidden state), so
one LoRA naming serves both the pipeline's encoder and a standalone one. Quantized formats (GGUF, SDNQ) are refused
before anything is read (`quantized`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.models.model_manager.configs import ModelConfig, ModelFormat
from invokeai_provider.models.model_manager.manager import ModelLoadError
from invokeai_provider.models.model_manager.quantized import refusal

if TYPE_CHECKING:
    from invokeai_provider.models.model_manager.registry import ModelRegistry

MAIN_PARTS = (SubModelType.Tokenizer, SubModelType.TextEncoder, SubModelType.Transformer, SubModelType.VAE,
              SubModelType.Scheduler)
QWEN3_PARTS = (SubModelType.Tokenizer, SubModelType.TextEncoder)
TOKENIZER_CLASSES = {"Qwen2Tokenizer", "Qwen2TokenizerFast", "PreTrainedTokenizerFast", "TokenizersBackend"}


def handles(config: ModelConfig) -> bool:
    """Z-Image mains, LoRAs and ControlNets, and every Qwen3 encoder."""
    return config.type is ModelType.Qwen3Encoder or (
        config.base is BaseModelType.ZImage and config.type in (ModelType.Main, ModelType.LoRA, ModelType.ControlNet))


def preload_parts(config: ModelConfig) -> tuple[Optional[SubModelType], ...]:
    if config.type is ModelType.Qwen3Encoder:
        return QWEN3_PARTS
    if config.type is ModelType.Main:
        return MAIN_PARTS if config.format is ModelFormat.Diffusers else (SubModelType.Transformer,)
    return (None,)


def is_transformer_file(config: ModelConfig) -> bool:
    """A Z-Image main installed as a single file: only its transformer is in it."""
    return config.type is ModelType.Main and config.base is BaseModelType.ZImage and \
        config.format is not ModelFormat.Diffusers


def load(registry: "ModelRegistry", config: ModelConfig, part: Optional[SubModelType], dtype: Any) -> Any:
    """The model's ``part`` (a submodel of a main or Qwen3 encoder; ignored for the others), in ``dtype``."""
    where = f"model {config.name!r} ({config.key})"
    refused = refusal(config.type, config.format, where, config.base)
    if refused:
        raise ModelLoadError(refused)
    if is_transformer_file(config) and part is not SubModelType.Transformer:
        raise ModelLoadError(
            f"{where} is a single-file Z-Image transformer: submodel {part.value if part else 'None'!r} does not "
            "exist in it (only transformer); its Qwen3 encoder and VAE are separate models (z_image_model_loader's "
            "qwen3_encoder_model and vae_model, or a ZImagePipeline folder as qwen3_source_model)")
    with registry.local_model(config) as local:
        if config.type is ModelType.LoRA:
            from invokeai_provider.models.patches.lora import load_lora_file
            from invokeai_provider.models.z_image.lora_conversion import to_diffusers_names

            return to_diffusers_names(load_lora_file(local.path))
        if config.type is ModelType.ControlNet:
            from invokeai_provider.models.z_image.control import load_controlnet

            return load_controlnet(local.path, dtype)
        if config.type is ModelType.Qwen3Encoder:
            return _qwen3_part(config, part, local.path, local.config_path, dtype)
        if config.format is ModelFormat.Diffusers:
            return _main_part(config, part, local.path, dtype)
        return load_transformer_file(local.path, dtype)


def _wrong_part(config: ModelConfig, part: Optional[SubModelType], parts: tuple[SubModelType, ...]) -> ModelLoadError:
    return ModelLoadError(f"model {config.name!r} ({config.key}): submodel {part.value if part else 'None'!r} does not "
                          f"exist in a {config.type.value} model (expected one of {', '.join(p.value for p in parts)})")


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _qwen3_encoder(folder: Path, dtype: Any) -> Any:
    """A ``Qwen3Model`` from a folder holding a ``Qwen3Model`` or ``Qwen3ForCausalLM`` (its ``model.`` weights)."""
    from transformers import Qwen3Model

    return Qwen3Model.from_pretrained(folder, local_files_only=True, torch_dtype=dtype).eval()


def _main_part(config: ModelConfig, part: Optional[SubModelType], folder: Path, dtype: Any) -> Any:
    import json

    if part not in MAIN_PARTS:
        raise _wrong_part(config, part, MAIN_PARTS)
    sub = folder / part.value
    if part is SubModelType.Scheduler:
        return json.loads((sub / "scheduler_config.json").read_text())
    if part is SubModelType.Tokenizer:
        return _tokenizer(sub)
    if part is SubModelType.TextEncoder:
        return _qwen3_encoder(sub, dtype)
    if part is SubModelType.VAE:
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(sub, local_files_only=True, torch_dtype=dtype).eval()
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel.from_pretrained(sub, local_files_only=True, torch_dtype=dtype).eval()


def _qwen3_part(config: ModelConfig, part: Optional[SubModelType], path: Path, config_path: Optional[Path],
                dtype: Any) -> Any:
    from invokeai_provider.models.z_image.probe import qwen3_folders

    if part not in QWEN3_PARTS:
        raise _wrong_part(config, part, QWEN3_PARTS)
    if config.format is ModelFormat.Qwen3Encoder:
        encoder, tokenizer = qwen3_folders(path)
        return _tokenizer(tokenizer) if part is SubModelType.Tokenizer else _qwen3_encoder(encoder, dtype)
    if part is SubModelType.Tokenizer:
        if config_path is None:
            raise ModelLoadError(
                f"model {config.name!r} ({config.key}) is a single-file Qwen3 encoder, which ships no tokenizer (InvokeAI "
                "uses a copy bundled with it; this provider has none): install it again with --config naming a folder "
                "that holds Qwen3's tokenizer (tokenizer.json, tokenizer_config.json), or install the encoder as a "
                "folder with text_encoder/ and tokenizer/")
        return _tokenizer(qwen3_folders(config_path)[1])
    return load_qwen3_file(path, dtype)


# --- single files ---------------------------------------------------------------------------------------


def _count(state: dict[str, Any], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def transformer_config(state: dict[str, Any]) -> dict[str, Any]:
    """A ``ZImageTransformer2DModel`` config read from the shapes of diffusers-named weights (the RoPE split of a
    head follows the real model's 32/48/48 of 128)."""
    try:
        embedder = state["all_x_embedder.2-1.weight"]
        head_dim = state["layers.0.attention.norm_q.weight"].shape[0]
        kv_width = state["layers.0.attention.to_k.weight"].shape[0]
        cap_feat_dim = state["cap_embedder.1.weight"].shape[1]
    except KeyError as missing:
        raise ModelLoadError(f"not a Z-Image transformer this loader can build: no {missing} tensor") from None
    dim = embedder.shape[0]
    if head_dim % 8:
        raise ModelLoadError(f"a Z-Image transformer with heads {head_dim} wide; expected a multiple of 8")
    return dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=embedder.shape[1] // 4, dim=dim,
                n_layers=_count(state, "layers"), n_refiner_layers=_count(state, "noise_refiner"),
                n_heads=dim // head_dim, n_kv_heads=kv_width // head_dim, cap_feat_dim=cap_feat_dim,
                axes_dims=[head_dim // 4, head_dim * 3 // 8, head_dim * 3 // 8], axes_lens=[1024, 512, 512])


def to_diffusers_state(state: dict[str, Any]) -> dict[str, Any]:
    """Original/ComfyUI names (fused ``qkv``, ``out``, ``q_norm``, ``x_embedder``) -> diffusers', with diffusers' own
    converter; already diffusers-named weights pass through."""
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    return convert_z_image_transformer_checkpoint_to_diffusers(dict(state))


def load_transformer_file(path: Path, dtype: Any) -> Any:
    """A single-file Z-Image transformer as diffusers' ``ZImageTransformer2DModel``."""
    from accelerate import init_empty_weights
    from diffusers import ZImageTransformer2DModel
    from safetensors.torch import load_file

    state = to_diffusers_state(load_file(str(path)))
    with init_empty_weights():
        model = ZImageTransformer2DModel(**transformer_config(state))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path.name}: the weights do not fit a Z-Image transformer: {exc}") from None
    return model.to(dtype=dtype).eval()


def load_qwen3_file(path: Path, dtype: Any) -> Any:
    """A single-file Qwen3 encoder (``model.*`` names, its causal LM's head ignored) as a ``Qwen3Model``, its
    architecture read from the shapes."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import Qwen3Config, Qwen3Model

    state = {k.removeprefix("model."): v for k, v in load_file(str(path)).items() if not k.startswith("lm_head.")}
    try:
        vocab, width = state["embed_tokens.weight"].shape
        head_dim = state["layers.0.self_attn.q_norm.weight"].shape[0]
        config = Qwen3Config(
            vocab_size=vocab, hidden_size=width, num_hidden_layers=_count(state, "layers"), head_dim=head_dim,
            num_attention_heads=state["layers.0.self_attn.q_proj.weight"].shape[0] // head_dim,
            num_key_value_heads=state["layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
            intermediate_size=state["layers.0.mlp.gate_proj.weight"].shape[0], max_position_embeddings=40960,
            rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    except KeyError as missing:
        raise ModelLoadError(f"{path.name}: not a Qwen3 encoder this loader can build: no {missing} tensor") from None
    with init_empty_weights():
        model = Qwen3Model(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path.name}: the weights do not fit a Qwen3 encoder: {exc}") from None
    return model.to(dtype=dtype).eval()

"""Loading Z-Image's models one submodel at a time, as InvokeAI's Z-Image loaders do: a ZImagePipeline folder's
parts, a single-file transformer (original or ComfyUI names, converted by diffusers' own converter, its architecture
read from the tensor shapes), Alibaba's ControlNet files (as diffusers' ``ZImageControlNetModel``) and LoRAs
(converted to diffusers' module names, `lora_conversion`). Standalone Qwen3 encoders are
`invokeai_provider.models.text_encoders.qwen3`'s; a pipeline folder's encoder loads the same way (a ``Qwen3Model``),
so one LoRA naming serves both. A GGUF transformer loads through `invokeai_provider.models.quantization.gguf`, its
linear layers kept quantized; SDNQ is refused at probing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.models.flux.bfl_names import block_count
from invokeai_provider.models.model_manager.configs import ModelConfig, ModelFormat
from invokeai_provider.models.model_manager.manager import ModelLoadError
from invokeai_provider.models.model_manager.quantized import refusal
from invokeai_provider.models.text_encoders import qwen3

if TYPE_CHECKING:
    from invokeai_provider.models.model_manager.registry import ModelRegistry

MAIN_PARTS = (SubModelType.Tokenizer, SubModelType.TextEncoder, SubModelType.Transformer, SubModelType.VAE,
              SubModelType.Scheduler)


def handles(config: ModelConfig) -> bool:
    """Z-Image mains, LoRAs and ControlNets (Qwen3 encoders: `invokeai_provider.models.text_encoders.qwen3`)."""
    return config.base is BaseModelType.ZImage and config.type in (ModelType.Main, ModelType.LoRA,
                                                                    ModelType.ControlNet)


def preload_parts(config: ModelConfig) -> tuple[Optional[SubModelType], ...]:
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
        if config.format is ModelFormat.Diffusers:
            return _main_part(config, part, local.path, dtype)
        if config.format is ModelFormat.GGUFQuantized:
            return load_transformer_gguf(local.path, dtype)
        return load_transformer_file(local.path, dtype)


def _wrong_part(config: ModelConfig, part: Optional[SubModelType], parts: tuple[SubModelType, ...]) -> ModelLoadError:
    return ModelLoadError(f"model {config.name!r} ({config.key}): submodel {part.value if part else 'None'!r} does not "
                          f"exist in a {config.type.value} model (expected one of {', '.join(p.value for p in parts)})")


def _main_part(config: ModelConfig, part: Optional[SubModelType], folder: Path, dtype: Any) -> Any:
    import json

    if part not in MAIN_PARTS:
        raise _wrong_part(config, part, MAIN_PARTS)
    sub = folder / part.value
    if part is SubModelType.Scheduler:
        return json.loads((sub / "scheduler_config.json").read_text())
    if part is SubModelType.Tokenizer:
        return qwen3.load_tokenizer(sub)
    if part is SubModelType.TextEncoder:
        return qwen3.load_encoder(sub, dtype)
    if part is SubModelType.VAE:
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(sub, local_files_only=True, torch_dtype=dtype).eval()
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel.from_pretrained(sub, local_files_only=True, torch_dtype=dtype).eval()


# --- single files ---------------------------------------------------------------------------------------


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
                n_layers=block_count(state, "layers"), n_refiner_layers=block_count(state, "noise_refiner"),
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


def load_transformer_gguf(path: Path, dtype: Any) -> Any:
    """A GGUF Z-Image transformer (original or ComfyUI names) as diffusers' ``ZImageTransformer2DModel`` with its
    linear layers kept quantized, computing in ``dtype``; the architecture read from the shapes."""
    from diffusers import ZImageTransformer2DModel

    from invokeai_provider.models.quantization import gguf

    state = gguf.read_gguf(path)
    config = transformer_config(to_diffusers_state(gguf.shape_tensors(state)))
    return gguf.load_diffusers_model(ZImageTransformer2DModel, state, config, dtype, path.name)

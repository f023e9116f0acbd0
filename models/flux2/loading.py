"""Loading FLUX.2 models one submodel at a time, as InvokeAI's loaders do.

- A diffusers folder (``Flux2KleinPipeline``, or [dev]'s ``Flux2Pipeline``): each submodel of the class its
  ``model_index.json`` names, from an allowlist (Qwen3 or Mistral Small 3.1 and their tokenizers, the FLUX.2
  transformer and VAE), so a model folder never makes the loader import anything else; the scheduler is its
  config. [dev]'s ``PixtralProcessor`` is read as the tokenizer it wraps.
- BFL's single-file transformer: the transformer alone (its text encoder and VAE are separate models), its
  architecture read from the tensor shapes and its names converted by diffusers' own FLUX.2 converter.
- A FLUX.2 VAE: a diffusers ``AutoencoderKLFlux2`` folder, or BFL's single file (LDM names, converted by diffusers'
  LDM-VAE converter, with the batch-norm statistics as they are).
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from invokeai_provider.core.taxonomy import Flux2VariantType, ModelType, SubModelType
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.models.model_manager.configs import ModelConfig, ModelFormat

if TYPE_CHECKING:
    from invokeai_provider.models.model_manager.registry import ModelRegistry

LOADABLE = {
    "transformers": {"Qwen3ForCausalLM", "Qwen3Model", "Qwen2Tokenizer", "Qwen2TokenizerFast",
                     # [dev]: Mistral Small 3.1 (multimodal, or its language model) and its Pixtral processor
                     "Mistral3ForConditionalGeneration", "MistralForCausalLM", "MistralModel", "PixtralProcessor",
                     "PreTrainedTokenizerFast", "TokenizersBackend", "LlamaTokenizerFast"},
    "diffusers": {"Flux2Transformer2DModel", "AutoencoderKLFlux2"},
}
PREFIX = "model.diffusion_model."


class Flux2LoadError(InvokeAIProviderError):
    """A FLUX.2 model or submodel cannot be loaded; the message says why."""


def load(registry: "ModelRegistry", config: ModelConfig, part: Optional[SubModelType], dtype: Any) -> Any:
    """The FLUX.2 model's ``part`` (ignored for a VAE) in ``dtype``."""
    where = f"model {config.name!r} ({config.key})"
    if config.type is ModelType.Main and config.format in (ModelFormat.Checkpoint, ModelFormat.GGUFQuantized) \
            and part is not SubModelType.Transformer:
        if config.variant is Flux2VariantType.Dev:
            parts = ("Mistral encoder", "flux2_dev_model_loader's mistral_encoder_model and vae_model, or a diffusers "
                     "FLUX.2 [dev] model as mistral_source_model")
        else:
            parts = ("Qwen3 encoder", "flux2_klein_model_loader's qwen3_encoder_model and vae_model, or a diffusers "
                     "FLUX.2 Klein model as qwen3_source_model")
        kind = "GGUF file" if config.format is ModelFormat.GGUFQuantized else "BFL checkpoint"
        raise Flux2LoadError(f"{where} is a single-file FLUX.2 transformer ({kind}): submodel "
                             f"{part.value if part else 'None'!r} does not exist in it (only transformer); its "
                             f"{parts[0]} and VAE are separate models ({parts[1]})")
    with registry.local_model(config) as local:
        if config.type is ModelType.VAE:
            if config.format is ModelFormat.Diffusers:
                from diffusers import AutoencoderKLFlux2

                return AutoencoderKLFlux2.from_pretrained(local.path, local_files_only=True, torch_dtype=dtype).eval()
            return load_vae_checkpoint(local.path, dtype)
        if config.type is ModelType.LoRA:
            from invokeai_provider.models.flux2.lora_conversion import to_patch_names
            from invokeai_provider.models.patches.lora import load_lora_file

            return to_patch_names(load_lora_file(local.path))
        if config.type is not ModelType.Main:
            raise Flux2LoadError(f"{where}: loading FLUX.2 {config.type.value} models is not supported")
        if config.format is ModelFormat.Checkpoint:
            return load_bfl_transformer(local.path, dtype)
        if config.format is ModelFormat.GGUFQuantized:
            return load_gguf_transformer(local.path, dtype)
        if part is None:
            raise Flux2LoadError(f"{where} is a main model: name the submodel to load")
        return load_submodel(Path(local.path), part, dtype, where)


def load_submodel(folder: Path, part: SubModelType, dtype: Any, where: str = "") -> Any:
    """One submodel of a diffusers FLUX.2 folder."""
    if part is SubModelType.Scheduler:
        return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    entry = json.loads((folder / "model_index.json").read_text()).get(part.value)
    library, class_name = entry if isinstance(entry, list) and len(entry) == 2 else (None, None)
    if class_name not in LOADABLE.get(str(library), ()):
        raise Flux2LoadError(f"{where}: submodel {part.value!r} is {library}.{class_name} in its model_index.json, "
                             "which the FLUX.2 loader does not load")
    if class_name == "PixtralProcessor":  # only its tokenizer is read (the processor itself needs torchvision)
        from invokeai_provider.models.text_encoders.mistral import load_tokenizer

        return load_tokenizer(folder / part.value)
    model_class = getattr(importlib.import_module(library), class_name)
    if "Tokenizer" in class_name:
        return model_class.from_pretrained(folder / part.value, local_files_only=True)
    return model_class.from_pretrained(folder / part.value, local_files_only=True, torch_dtype=dtype).eval()


def _bare(state: dict[str, Any]) -> dict[str, Any]:
    if any(key.startswith(PREFIX) for key in state):
        return {key[len(PREFIX):]: value for key, value in state.items() if key.startswith(PREFIX)}
    return state


def _count(shapes: dict[str, Any], pattern: str) -> int:
    return len({m.group(1) for key in shapes if (m := re.match(pattern, key))})


def bfl_transformer_config(shapes: dict[str, Any]) -> dict[str, Any]:
    """``Flux2Transformer2DModel`` arguments read from a BFL state dict's shapes (tensors or shape tuples)."""
    def shape(key: str) -> tuple[int, ...]:
        value = shapes.get(key)
        if value is None:
            raise Flux2LoadError(f"no {key} in the file")
        return tuple(getattr(value, "shape", value))

    inner, in_channels = shape("img_in.weight")
    head_dim = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0]
    if inner % head_dim or head_dim % 4:
        raise Flux2LoadError(f"attention width {inner} and head width {head_dim} do not fit FLUX.2's four RoPE axes")
    mlp_ratio = shape("double_blocks.0.img_mlp.0.weight")[0] / 2 / inner
    return dict(patch_size=1, in_channels=in_channels, out_channels=shape("final_layer.linear.weight")[0],
                num_layers=_count(shapes, r"double_blocks\.(\d+)\."),
                num_single_layers=_count(shapes, r"single_blocks\.(\d+)\."), attention_head_dim=head_dim,
                num_attention_heads=inner // head_dim, joint_attention_dim=shape("txt_in.weight")[1],
                timestep_guidance_channels=shape("time_in.in_layer.weight")[1], mlp_ratio=mlp_ratio,
                axes_dims_rope=(head_dim // 4,) * 4, guidance_embeds="guidance_in.in_layer.weight" in shapes)


def load_bfl_transformer(path: Path, dtype: Any) -> Any:
    """BFL's FLUX.2 single file as diffusers' ``Flux2Transformer2DModel``; every tensor must find its place."""
    from accelerate import init_empty_weights
    from diffusers import Flux2Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers
    from safetensors.torch import load_file

    state = _bare(load_file(str(path)))
    config = bfl_transformer_config(state)
    converted = convert_flux2_transformer_checkpoint_to_diffusers(dict(state))
    with init_empty_weights():
        model = Flux2Transformer2DModel(**config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise Flux2LoadError(f"{path}: the transformer's tensors do not fit Flux2Transformer2DModel (missing "
                             f"{missing[:4]}, unexpected {unexpected[:4]})")
    model.load_state_dict({k: v.to(dtype) if dtype is not None else v for k, v in converted.items()}, assign=True)
    return model.eval()


def load_gguf_transformer(path: Path, dtype: Any) -> Any:
    """A GGUF FLUX.2 transformer (BFL's names, optionally under ComfyUI's prefix) as diffusers'
    ``Flux2Transformer2DModel`` with its linear layers kept quantized, computing in ``dtype``."""
    from diffusers import Flux2Transformer2DModel

    from invokeai_provider.models.quantization import gguf

    state = _bare(gguf.read_gguf(path))
    return gguf.load_diffusers_model(Flux2Transformer2DModel, state, bfl_transformer_config(gguf.gguf_shapes(state)),
                                     dtype, path.name)


def vae_config(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """``AutoencoderKLFlux2`` arguments of a BFL/LDM-named FLUX.2 VAE state dict, read from its shapes."""
    needed = ("encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight",
              "encoder.down.0.block.0.conv1.weight", "bn.running_mean")
    missing = [key for key in needed if key not in state]
    if missing:
        raise Flux2LoadError(f"{path}: not a BFL/LDM-named FLUX.2 VAE (missing {', '.join(missing)})")
    levels = sorted({int(m.group(1)) for key in state if (m := re.match(r"encoder\.down\.(\d+)\.", key))})
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", key))}
    return dict(in_channels=state["encoder.conv_in.weight"].shape[1],
                out_channels=state["decoder.conv_out.weight"].shape[0],
                down_block_types=("DownEncoderBlock2D",) * len(levels),
                up_block_types=("UpDecoderBlock2D",) * len(levels),
                block_out_channels=tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in levels),
                layers_per_block=len(blocks), latent_channels=state["decoder.conv_in.weight"].shape[1],
                use_quant_conv="quant_conv.weight" in state, use_post_quant_conv="post_quant_conv.weight" in state,
                mid_block_add_attention="encoder.mid.attn_1.q.weight" in state)


def load_vae_checkpoint(path: Path, dtype: Any) -> Any:
    """BFL's FLUX.2 ``ae.safetensors`` as diffusers' ``AutoencoderKLFlux2``; every tensor must find its place."""
    from diffusers import AutoencoderKLFlux2
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    state = load_file(str(path))
    for prefix in ("first_stage_model.", "vae."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    config = vae_config(state, path)
    model = AutoencoderKLFlux2(**config)
    converted = convert_ldm_vae_checkpoint({k: v for k, v in state.items() if not k.startswith("bn.")}, config)
    converted |= {key: value for key, value in state.items() if key.startswith("bn.")}
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise Flux2LoadError(f"{path}: the VAE's tensors do not fit AutoencoderKLFlux2 (missing {sorted(missing)[:4]}, "
                             f"unexpected {sorted(unexpected)[:4]})")
    return (model if dtype in (None, model.dtype) else model.to(dtype=dtype)).eval()

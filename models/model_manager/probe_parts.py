"""Probing the models a FLUX.1 user installs beside the transformer, with InvokeAI's rules (reference §4.2):
T5 encoders, CLIP embed encoders, VAE bases from latent channels, and GGUF files.

- ``t5_encoder`` (base any): a folder with ``text_encoder_2/config.json`` naming ``T5EncoderModel``. Its format is
  ``bnb_quantized_int8b`` when a weight file's name says ``llm_int8`` and its tensors carry bitsandbytes' ``SCB``
  scales, else ``t5_encoder``. InvokeAI insists on a sharded ``model.safetensors.index.json``; an unsharded
  ``model.safetensors`` is just as loadable and is accepted too. A ``tokenizer_2/`` folder is required, since every
  FLUX prompt needs it.
- ``clip_embed`` (base any): a CLIP text encoder with its tokenizer, either as ``text_encoder/`` + ``tokenizer/``
  or in one folder; the variant comes from the hidden width (768 large, 1280 gigantic).
- VAE base: 16 latent channels (``decoder.conv_in``) is FLUX.1's, in a checkpoint (BFL's ``ae.safetensors``) and
  in a diffusers ``AutoencoderKL`` folder (InvokeAI reads a diffusers VAE's base from its name only, and would call
  a FLUX one SD1); 4 channels leave the base to the name, as before.
- GGUF (``.gguf``): the tensor names and shapes are read from the file's header (no ``gguf`` package needed):
  llama.cpp's T5 encoder names (``enc.blk.*``) are a t5_encoder, BFL's transformer names a FLUX.1 main with its
  variant (FLUX.2's, Z-Image's and Qwen3's are their families' probes'); a quantization type that cannot be
  dequantized here is refused by name.
- BFL's single-file FLUX.1 transformer (``flux1-dev.safetensors``; keys bare or under ``model.diffusion_model.``):
  a main, format checkpoint, recognised by InvokeAI's key (``double_blocks.0.img_attn.norm.key_norm.scale``) with
  its variant. FLUX.2 files carry the same key: `invokeai_provider.models.flux2.probe` identifies them first (a
  text input wider than T5-XXL's 4,096, or FLUX.2's shared modulation layers); what still reaches FLUX.1's probe
  with FLUX.2's marks or 128 input channels (a full Depth/Canny model) is refused here; so are
  bitsandbytes NF4 files and architectures the loader could not build (`bfl_transformer.transformer_config`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ClipVariantType, FluxVariantType, ModelType
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.model_manager.probe import ProbeError, ProbeResult, safetensors_shapes

GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"
T5_CLASS = "T5EncoderModel"
CLIP_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPModel")
CLIP_WIDTH_VARIANT = {768: ClipVariantType.L, 1280: ClipVariantType.G}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")
FLUX_KEY = "double_blocks.0.img_attn.norm.key_norm.scale"  # InvokeAI's mark of a BFL FLUX transformer
FLUX_PREFIX = "model.diffusion_model."
FLUX_LATENT_CHANNELS = 16
FLUX2_KEYS = ("single_stream_modulation.lin.weight", "double_stream_modulation_img.lin.weight")  # bare names
NF4_KEY = "double_blocks.0.img_attn.proj.weight.quant_state.bitsandbytes__nf4"  # InvokeAI's mark of an NF4 file


def _config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProbeError(f"{path}: unreadable config ({exc})") from None
    if not isinstance(data, dict):
        raise ProbeError(f"{path}: expected a JSON object")
    return data


def class_name(config: dict[str, Any]) -> Optional[str]:
    """The model class a diffusers (``_class_name``) or transformers (``architectures``) config names."""
    if isinstance(config.get("_class_name"), str):
        return config["_class_name"]
    architectures = config.get("architectures")
    return architectures[0] if isinstance(architectures, list) and architectures else None


def has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)


# --- folders --------------------------------------------------------------------------------------------


def _probe_t5_folder(path: Path) -> ProbeResult:
    encoder = path / "text_encoder_2"
    if not has_tokenizer(path / "tokenizer_2"):
        raise ProbeError(f"{path}: a T5 encoder folder needs its tokenizer in tokenizer_2/ (tokenizer.json or "
                         "spiece.model); none found")
    weights = sorted(encoder.glob("*.safetensors"))
    int8 = [w for w in weights if "llm_int8" in w.name]
    if int8 and any(key.endswith("SCB") for key in safetensors_shapes(int8[0])):
        return ProbeResult(ModelType.T5Encoder, ModelFormat.BnbQuantizedLlmInt8b, BaseModelType.Any)
    if not ((encoder / "model.safetensors.index.json").is_file() or (encoder / "model.safetensors").is_file()):
        raise ProbeError(f"{path}: text_encoder_2/ has no model.safetensors.index.json or model.safetensors "
                         "(unquantized T5 weights) and is not a bitsandbytes llm_int8 file either")
    return ProbeResult(ModelType.T5Encoder, ModelFormat.T5Encoder, BaseModelType.Any)


def clip_embed_folders(path: Path) -> tuple[Path, Path]:
    """(text encoder folder, tokenizer folder) of a CLIP embed model: subfolders when it has them, else itself."""
    encoder = path / "text_encoder" if (path / "text_encoder" / "config.json").is_file() else path
    tokenizer = path / "tokenizer" if (path / "tokenizer").is_dir() else path
    return encoder, tokenizer


def _probe_clip_embed(path: Path, config: dict[str, Any]) -> ProbeResult:
    encoder, tokenizer = clip_embed_folders(path)
    width = config.get("hidden_size", (config.get("text_config") or {}).get("hidden_size"))
    variant = CLIP_WIDTH_VARIANT.get(width) if isinstance(width, int) else None
    if variant is None:
        raise ProbeError(f"{encoder / 'config.json'}: CLIP hidden_size {width} is neither CLIP-L's (768) nor "
                         "CLIP-G's (1280)")
    if not has_tokenizer(tokenizer):
        raise ProbeError(f"{path}: a CLIP embed model needs its tokenizer (vocab.json or tokenizer.json) in "
                         "tokenizer/ or beside its config; none found")
    return ProbeResult(ModelType.CLIPEmbed, ModelFormat.Diffusers, BaseModelType.Any, variant)


def probe_part_folder(path: Path) -> Optional[ProbeResult]:
    """A T5 encoder or CLIP embed folder, or None when the folder is neither."""
    t5 = path / "text_encoder_2" / "config.json"
    if t5.is_file() and class_name(_config(t5)) == T5_CLASS:
        return _probe_t5_folder(path)
    for candidate in (path / "text_encoder" / "config.json", path / "config.json"):
        if candidate.is_file():
            config = _config(candidate)
            if class_name(config) in CLIP_CLASSES:
                return _probe_clip_embed(path, config)
    return None


def vae_folder_base(config: dict[str, Any]) -> Optional[BaseModelType]:
    """FLUX.1's base for a diffusers AutoencoderKL with 16 latent channels; None leaves it to the name."""
    return BaseModelType.Flux if config.get("latent_channels") == FLUX_LATENT_CHANNELS else None


# --- single files ---------------------------------------------------------------------------------------


def vae_checkpoint_base(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[BaseModelType]:
    """The base a VAE checkpoint's latent channels give (InvokeAI's rule): 16 is FLUX.1's; 4 (or no
    ``decoder.conv_in``) returns None, leaving the base to the file's name."""
    shape = shapes.get("decoder.conv_in.weight")
    if shape is None or (len(shape) == 4 and shape[1] == 4):
        return None
    if len(shape) == 4 and shape[1] == FLUX_LATENT_CHANNELS:
        return BaseModelType.Flux
    raise ProbeError(f"{path}: a VAE whose decoder.conv_in has shape {shape}; expected 4 latent channels (SD) or "
                     f"{FLUX_LATENT_CHANNELS} (FLUX.1) in a 2-D convolution (FLUX.2, Wan and Qwen VAEs are not "
                     "supported)")


def flux_variant(shapes: dict[str, tuple[int, ...]]) -> FluxVariantType:
    """InvokeAI's FLUX.1 variant from BFL names: a guidance embedder is dev (384 input channels: dev fill)."""
    def shape(key: str) -> Optional[tuple[int, ...]]:
        return shapes.get(key, shapes.get(FLUX_PREFIX + key))

    img_in = shape("img_in.weight")
    if shape("guidance_in.out_layer.weight") is None:
        return FluxVariantType.Schnell
    return FluxVariantType.DevFill if img_in is not None and img_in[-1] == 384 else FluxVariantType.Dev


def is_bfl_transformer(shapes: dict[str, tuple[int, ...]]) -> bool:
    """InvokeAI's test for a BFL-named FLUX transformer (FLUX.1 or FLUX.2), with or without the bundle prefix."""
    return FLUX_KEY in shapes or FLUX_PREFIX + FLUX_KEY in shapes


def refuse_non_flux1(path: Path, shapes: dict[str, tuple[int, ...]], what: str) -> None:
    """Raises ProbeError for a BFL-named transformer that is not FLUX.1's (bare names): FLUX.2 (InvokeAI's tests: a
    text input wider than T5-XXL's, or 128 input channels; and FLUX.2's shared modulation layers) or a full FLUX.1
    Depth/Canny model, whose 128 input channels InvokeAI takes for FLUX.2 too."""
    context = shapes.get("txt_in.weight")
    if context is not None and context[-1] != 4096:
        raise ProbeError(f"{path}: a {what} whose txt_in takes {context[-1]} features; FLUX.1's takes T5-XXL's 4096 "
                         "(FLUX.2 is not supported)")
    shared = [key for key in FLUX2_KEYS if key in shapes]
    if shared:
        raise ProbeError(f"{path}: a {what} with FLUX.2's {shared[0]}; FLUX.2 is not supported, only FLUX.1")
    img_in = shapes.get("img_in.weight")
    if img_in is not None and img_in[-1] not in (64, 384):
        raise ProbeError(f"{path}: a {what} taking {img_in[-1]} input channels; FLUX.1 takes 64 (dev, schnell, "
                         "Kontext) or 384 (Fill); 128 is FLUX.2's or a full Depth/Canny model's, neither supported (use "
                         "a Control LoRA for depth or canny)")


def probe_flux_checkpoint(path: Path, shapes: dict[str, tuple[int, ...]]) -> ProbeResult:
    """A BFL single-file FLUX.1 transformer: a main (checkpoint) with InvokeAI's variant; other FLUX-like files are
    refused with the reason."""
    from invokeai_provider.models.flux.bfl_transformer import BflTransformerError, transformer_config, transformer_only

    bare = transformer_only(shapes)
    if NF4_KEY in bare:
        raise ProbeError(f"{path}: a bitsandbytes NF4-quantized FLUX.1 transformer (InvokeAI's "
                         "bnb_quantized_nf4b); running it needs bitsandbytes, a CUDA GPU and a loader this provider "
                         "does not have; install the unquantized single file (flux1-dev.safetensors) instead")
    refuse_non_flux1(path, bare, "single-file transformer")
    try:
        transformer_config(bare)
    except BflTransformerError as exc:
        raise ProbeError(f"{path}: a BFL FLUX transformer that cannot be loaded: {exc}") from None
    return ProbeResult(ModelType.Main, ModelFormat.Checkpoint, BaseModelType.Flux, flux_variant(bare))


def _gguf_string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", handle.read(8))
    return handle.read(length).decode("utf-8", errors="replace")


# GGUF metadata value types -> struct format of a scalar (8 is a string, 9 an array)
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _skip_gguf_value(handle: BinaryIO, kind: int) -> None:
    if kind in _GGUF_SCALARS:
        handle.read(struct.calcsize("<" + _GGUF_SCALARS[kind]))
    elif kind == 8:
        _gguf_string(handle)
    elif kind == 9:
        item_kind, count = struct.unpack("<IQ", handle.read(12))
        for _ in range(count):
            _skip_gguf_value(handle, item_kind)
    else:
        raise ValueError(f"unknown metadata value type {kind}")


def gguf_tensors(path: Path) -> dict[str, tuple[tuple[int, ...], int]]:
    """Tensor name -> (torch-order shape, GGML type) from a GGUF file's header; nothing else is read."""
    try:
        with path.open("rb") as handle:
            magic, version = handle.read(4), struct.unpack("<I", handle.read(4))[0]
            if magic != GGUF_MAGIC or version not in (2, 3):
                raise ProbeError(f"{path}: not a GGUF file (magic {magic!r}, version {version}; expected GGUF "
                                 "version 2 or 3)")
            tensor_count, kv_count = struct.unpack("<QQ", handle.read(16))
            for _ in range(kv_count):
                _gguf_string(handle)
                _skip_gguf_value(handle, struct.unpack("<I", handle.read(4))[0])
            tensors = {}
            for _ in range(tensor_count):
                name = _gguf_string(handle)
                (dims,) = struct.unpack("<I", handle.read(4))
                sizes = struct.unpack(f"<{dims}Q", handle.read(8 * dims))
                kind, _offset = struct.unpack("<IQ", handle.read(12))
                tensors[name] = (tuple(reversed(sizes)), kind)  # GGUF lists the fastest-varying size first
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ProbeError(f"{path}: truncated or damaged GGUF header ({exc})") from None
    return tensors


def probe_gguf(path: Path) -> ProbeResult:
    """A GGUF-quantized T5 encoder (llama.cpp names), FLUX.1 or FLUX.2 transformer (BFL names), Z-Image transformer
    or Qwen3 encoder; a quantization type that cannot be dequantized here is refused by name."""
    from invokeai_provider.models.quantization.gguf import GGUFError, check_quant_types

    tensors = gguf_tensors(path)
    try:
        check_quant_types(path, tensors)
    except GGUFError as exc:
        raise ProbeError(str(exc)) from None
    if any(name.startswith("enc.blk.") or name.endswith("enc.output_norm.weight") for name in tensors):
        return ProbeResult(ModelType.T5Encoder, ModelFormat.GGUFQuantized, BaseModelType.Any)
    if FLUX_KEY in tensors or FLUX_PREFIX + FLUX_KEY in tensors:
        from invokeai_provider.models.flux.bfl_transformer import transformer_only
        from invokeai_provider.models.flux2.probe import probe_gguf as probe_flux2_gguf

        shapes = {name: shape for name, (shape, _) in tensors.items()}
        flux2 = probe_flux2_gguf(path, shapes)
        if flux2 is not None:
            return flux2
        refuse_non_flux1(path, transformer_only(shapes), "GGUF transformer")
        return ProbeResult(ModelType.Main, ModelFormat.GGUFQuantized, BaseModelType.Flux, flux_variant(shapes))
    from invokeai_provider.models.z_image.probe import probe_z_image_gguf

    z_image = probe_z_image_gguf(path, {name: shape for name, (shape, _) in tensors.items()})
    if z_image is not None:  # a Z-Image transformer or a Qwen3 encoder
        return z_image
    sample = ", ".join(sorted(tensors)[:3])
    raise ProbeError(f"{path}: a GGUF file of an unknown architecture: neither a T5 encoder (enc.blk.* tensors), a "
                     f"FLUX.1/FLUX.2 transformer ({FLUX_KEY}), a Z-Image transformer nor a Qwen3 encoder; it has "
                     f"{len(tensors)} tensors ({sample}, ...)")

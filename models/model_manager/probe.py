"""Identify a model on disk the way InvokeAI does (reference §4.2): type, format, base, variant.

Only tensor names and shapes are read: a safetensors header, or (when allowed) a pickled checkpoint that
was scanned first and is then loaded with ``weights_only=True``. Nothing is executed from a model file.
"""

from __future__ import annotations

import json
import pickletools
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

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
    ZImageVariantType,
)
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.models.image_encoders.clip_vision import is_clip_vision_folder
from invokeai_provider.models.flux.control_lora import is_flux_control_lora
from invokeai_provider.models.flux.controlnet import controlnet_kind, folder_is_controlnet
from invokeai_provider.models.flux.ip_adapter import is_xlabs_ip_adapter
from invokeai_provider.models.flux.lora_conversion import flux_lora_format
from invokeai_provider.models.flux.redux import SIGLIP_PROCESSOR_FILE, folder_siglip_class, is_redux
from invokeai_provider.models.model_manager.configs import ModelFormat
from invokeai_provider.models.stable_diffusion import ip_adapter as sd_ip_adapter

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
MAIN_PIPELINES = {
    "StableDiffusionPipeline", "StableDiffusionInpaintPipeline", "StableDiffusionXLPipeline",
    "StableDiffusionXLInpaintPipeline", "StableDiffusionXLImg2ImgPipeline", "LatentConsistencyModelPipeline",
    "StableDiffusionDepth2ImgPipeline",
}
FLUX_PIPELINES = {"FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline", "FluxFillPipeline",
                  "FluxKontextPipeline"}
CROSS_ATTENTION_BASE = {768: BaseModelType.StableDiffusion1, 1024: BaseModelType.StableDiffusion2,
                        1280: BaseModelType.StableDiffusionXLRefiner, 2048: BaseModelType.StableDiffusionXL}
IN_CHANNELS_VARIANT = {4: ModelVariantType.Normal, 9: ModelVariantType.Inpaint, 5: ModelVariantType.Depth}
TOKEN_LENGTH_BASE = {768: BaseModelType.StableDiffusion1, 1024: BaseModelType.StableDiffusion2,
                     1280: BaseModelType.StableDiffusionXL, 2048: BaseModelType.StableDiffusionXL}
# Globals a pickled torch checkpoint legitimately needs; anything else is refused.
SAFE_PICKLE_GLOBALS = re.compile(
    r"^(torch\.(_utils\._rebuild_\w+|\w+Storage|storage\._load_from_bytes|_tensor\._rebuild_from_type_v2|"
    r"serialization\._get_layout|Size|float\d*|bfloat16|half|int\d*|uint8|bool|device|dtype)|"
    r"collections\.OrderedDict|builtins\.(set|dict|list|tuple|slice)|_codecs\.encode|"
    r"numpy\.(core\.multiarray\._reconstruct|core\.multiarray\.scalar|dtype|ndarray)|"
    r"pytorch_lightning\.callbacks\.model_checkpoint\.ModelCheckpoint)$"
)


class ProbeError(InvokeAIProviderError):
    """The file is not a model we recognise, or is damaged."""


class PickleRefusedError(ProbeError):
    """A pickled checkpoint without explicit permission."""


class UnsafePickleError(ProbeError):
    """A pickle that would import code beyond what a tensor checkpoint needs."""


@dataclass(frozen=True)
class ProbeResult:
    type: ModelType
    format: ModelFormat
    base: BaseModelType
    variant: Optional[Union[ModelVariantType, FluxVariantType, ClipVariantType, ZImageVariantType,
                            Qwen3VariantType, Flux2VariantType, MistralVariantType]] = None
    prediction_type: Optional[SchedulerPredictionType] = None
    repo_variant: Optional[str] = None
    image_encoder_model_id: Optional[str] = None  # an InvokeAI-format IP-Adapter's image_encoder.txt


# --- reading tensor shapes ----------------------------------------------------------------------------


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header; a truncated or malformed file is refused clearly."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise ProbeError(f"{path}: truncated safetensors file (no header length)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise ProbeError(f"{path}: truncated safetensors file (header of {header_len} bytes, file has {size})")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProbeError(f"{path}: not a safetensors file (unreadable header)") from None
    header.pop("__metadata__", None)
    end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    if 8 + header_len + end > size:
        raise ProbeError(f"{path}: truncated safetensors file: tensors need {8 + header_len + end} bytes, "
                         f"the file has {size}")
    return {name: tuple(t["shape"]) for name, t in header.items()}


def pickle_globals(path: Path) -> set[str]:
    """Every ``module.name`` a pickle (or torch's zip of pickles) would import when loaded."""
    found: set[str] = set()
    blobs: list[bytes] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            blobs = [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
    else:
        blobs = [path.read_bytes()]
    for blob in blobs:
        strings: list[str] = []
        try:
            for opcode, arg, _ in pickletools.genops(blob):
                if opcode.name in ("GLOBAL", "INST"):
                    found.add(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.add(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception as exc:  # a damaged pickle is as bad as a malicious one here
            raise ProbeError(f"{path}: unreadable pickle ({exc})") from None
    return found


def scan_pickle(path: Path) -> None:
    unsafe = sorted(g for g in pickle_globals(path) if not SAFE_PICKLE_GLOBALS.match(g))
    if unsafe:
        raise UnsafePickleError(f"{path}: refused: the pickle imports {', '.join(unsafe[:8])}")


def pickle_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    import torch

    scan_pickle(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        shapes = _flatten_shapes(data["state_dict"])
        if "global_step" in data:
            shapes["__global_step__"] = (int(data["global_step"]),)
        return shapes
    return _flatten_shapes(data)


def _flatten_shapes(data: Any, prefix: str = "") -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    if hasattr(data, "shape"):
        return {prefix: tuple(data.shape)}
    if isinstance(data, dict):
        for key, value in data.items():
            shapes.update(_flatten_shapes(value, f"{prefix}.{key}" if prefix else str(key)))
    return shapes


def file_shapes(path: Path, allow_pickle: bool = False) -> dict[str, tuple[int, ...]]:
    if path.suffix == SAFETENSORS_SUFFIX:
        return safetensors_shapes(path)
    if path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise PickleRefusedError(f"{path}: pickled checkpoints ({path.suffix}) are refused; convert it to "
                                     "safetensors, or allow pickles explicitly (it is then scanned)")
        return pickle_shapes(path)
    raise ProbeError(f"{path}: unrecognised model file type {path.suffix!r} (expected .safetensors, or an allowed "
                     f"pickle: {', '.join(PICKLE_SUFFIXES)})")


# --- single files -------------------------------------------------------------------------------------


def _has_prefix(keys: Iterable[str], prefixes: tuple[str, ...]) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def _has_suffix(keys: Iterable[str], suffixes: tuple[str, ...]) -> bool:
    return any(k.endswith(suffixes) for k in keys)


def _probe_main_checkpoint(path: Path, shapes: dict[str, tuple[int, ...]]) -> ProbeResult:
    sd1_key = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
    sdxl_key = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    base = None
    if sd1_key in shapes and shapes[sd1_key][-1] in (768, 1024):
        base = CROSS_ATTENTION_BASE[shapes[sd1_key][-1]]
    elif sdxl_key in shapes and shapes[sdxl_key][-1] in (2048, 1280):
        base = CROSS_ATTENTION_BASE[shapes[sdxl_key][-1]]
    if base is None:
        raise ProbeError(f"{path}: looks like a main checkpoint, but its UNet cross-attention width is not one of "
                         "SD1 (768), SD2 (1024), SDXL (2048) or SDXL refiner (1280)")
    in_channels = shapes.get("model.diffusion_model.input_blocks.0.0.weight", (0, 4))[1]
    variant = IN_CHANNELS_VARIANT.get(in_channels)
    if variant is None or (variant is ModelVariantType.Depth and base is not BaseModelType.StableDiffusion2):
        raise ProbeError(f"{path}: UNet has {in_channels} input channels; expected 4 (normal), 9 (inpaint) or 5 "
                         "(SD2 depth)")
    prediction = SchedulerPredictionType.Epsilon
    if base is BaseModelType.StableDiffusion2:
        step = shapes.get("__global_step__", (0,))[0]
        prediction = SchedulerPredictionType.Epsilon if step == 220000 else SchedulerPredictionType.VPrediction
    return ProbeResult(ModelType.Main, ModelFormat.Checkpoint, base, variant, prediction)


def _lora_input_width(key: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]]) -> Optional[int]:
    """The input width of the layer whose down-side factor ``key`` is: a LoRA/LoHa down matrix's or a full ``diff``'s
    second dimension, or a LoKr's ``w1`` input width times its ``w2``'s; None for other keys."""
    if len(shape) < 2:
        return None
    if key.endswith(("lora_down.weight", "lora.down.weight", "lora_A.weight", "hada_w1_b", "hada_w2_b", ".diff")):
        return shape[1]
    if key.endswith((".lokr_w1", ".lokr_w1_b")):
        stem = key.rsplit(".", 1)[0]
        w2 = shapes.get(f"{stem}.lokr_w2") or shapes.get(f"{stem}.lokr_w2_b")
        return shape[1] * w2[1] if w2 is not None and len(w2) >= 2 else None
    return None


def _lora_token_length(shapes: dict[str, tuple[int, ...]]) -> Optional[int]:
    """The text-embedding width a LoRA's cross-attention or text-encoder layers take (as InvokeAI reads it)."""
    length = None
    for key, shape in shapes.items():
        width = _lora_input_width(key, shape, shapes)
        if width is None:
            continue
        if any(part in key for part in ("attn2_to_k", "attn2_to_v", "attn2.to_k", "attn2.to_v")):
            length = width
        elif key.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.", "te1.", "te2.")):
            return 2048
        elif (key.startswith("lora_te_") or key.startswith("text_encoder.")) and ("self_attn" in key) and length is None:
            length = width
    return length


def _probe_lora(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    if flux_lora_format(shapes) is not None:
        return ProbeResult(ModelType.LoRA, ModelFormat.LyCORIS, BaseModelType.Flux)
    prefixes = ("lora_te_", "lora_unet_", "lora_te1_", "lora_te2_", "lora_transformer_")
    suffixes = ("to_k_lora.up.weight", "to_q_lora.down.weight", "lora_A.weight", "lora_B.weight",
                "lora.down.weight", "lokr_w1", "lokr_w2", "hada_w1_a", "hada_w2_a")
    if not (_has_prefix(shapes, prefixes) or _has_suffix(shapes, suffixes)):
        return None
    length = _lora_token_length(shapes)
    if length not in TOKEN_LENGTH_BASE:
        raise ProbeError(f"{path}: looks like a LoRA, but its token vector length {length} matches no SD base")
    return ProbeResult(ModelType.LoRA, ModelFormat.LyCORIS, TOKEN_LENGTH_BASE[length])


def _probe_embedding(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    if "clip_g" in shapes or "clip_l" in shapes:
        return ProbeResult(ModelType.TextualInversion, ModelFormat.EmbeddingFile, BaseModelType.StableDiffusionXL)
    dims = None
    if "emb_params" in shapes:
        dims = shapes["emb_params"][-1]
    elif any(k.startswith("string_to_param.") for k in shapes):
        dims = next(v for k, v in shapes.items() if k.startswith("string_to_param."))[-1]
    elif len(shapes) == 1:  # a bare vector file is an embedding only if it has an embedding's width
        (only,) = shapes.values()
        dims = only[-1] if only and only[-1] in (768, 1024) else None
    if dims is None:
        return None
    if dims not in (768, 1024):
        raise ProbeError(f"{path}: looks like a textual-inversion embedding of width {dims}; expected 768 (SD1), "
                         "1024 (SD2) or clip_l/clip_g vectors (SDXL)")
    base = BaseModelType.StableDiffusion1 if dims == 768 else BaseModelType.StableDiffusion2
    return ProbeResult(ModelType.TextualInversion, ModelFormat.EmbeddingFile, base)


def _probe_sd_controlnet(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """An SD1/SD2/SDXL ControlNet file (InvokeAI's key prefixes; base from its cross-attention width)."""
    from invokeai_provider.models.stable_diffusion import controlnet_checkpoint as checkpoint

    if not checkpoint.looks_like_controlnet(shapes):
        return None
    reason = checkpoint.refusal(shapes)
    if reason:
        raise ProbeError(f"{path}: {reason}")
    base = checkpoint.checkpoint_base(shapes)
    if base is None:
        raise ProbeError(f"{path}: looks like a ControlNet, but its cross-attention context width "
                         f"{checkpoint.context_width(shapes)} is not SD1's (768), SD2's (1024) or SDXL's (2048, 1280)")
    return ProbeResult(ModelType.ControlNet, ModelFormat.Checkpoint, BaseModelType(base))


def _vae_base_from_name(name: str) -> BaseModelType:
    if re.search("xl", name, re.IGNORECASE):
        return BaseModelType.StableDiffusionXL
    if re.search("sd2", name, re.IGNORECASE):
        return BaseModelType.StableDiffusion2
    return BaseModelType.StableDiffusion1


def probe_file(path: Path, allow_pickle: bool = False) -> ProbeResult:
    from invokeai_provider.models.model_manager import probe_parts

    if path.suffix == probe_parts.GGUF_SUFFIX:
        return probe_parts.probe_gguf(path)
    shapes = file_shapes(path, allow_pickle)
    from invokeai_provider.models.z_image.probe import probe_z_image_file

    z_image = probe_z_image_file(path, shapes)  # first: Z-Image files carry model.diffusion_model./lora_unet_ names too
    if z_image is not None:
        return z_image
    from invokeai_provider.models.flux2 import probe as flux2_probe

    flux2 = flux2_probe.probe_file(path, shapes) or flux2_probe.probe_lora(path, shapes)  # before FLUX.1's: FLUX.2
    # files carry BFL's FLUX keys too, and FLUX.2 LoRAs FLUX.1's diffusers names
    if flux2 is not None:
        return flux2
    from invokeai_provider.models.text_encoders.mistral import probe_mistral_file

    mistral = probe_mistral_file(path, shapes)  # FLUX.2 [dev]'s Mistral Small 3 encoder
    if mistral is not None:
        return mistral
    from invokeai_provider.models.cogview4 import probe as cogview4_probe

    cogview4_probe.refuse_single_file(path, shapes)  # CogView4 is a diffusers folder only (InvokeAI's rule)
    flux = probe_parts.is_bfl_transformer(shapes)  # BFL's FLUX keys, bare or bundled under model.diffusion_model.
    from invokeai_provider.models.sd3 import probe as sd3_probe

    sd3_probe.refuse_checkpoint(path, shapes)  # Stability's SD3 single files: refused with the reason
    if _has_prefix(shapes, ("model.diffusion_model.",)) and not flux:
        return _probe_main_checkpoint(path, shapes)
    if is_flux_control_lora(shapes):  # BFL's Control LoRAs, before LoRAs: their lora_A keys would look like a LoRA's
        return ProbeResult(ModelType.ControlLoRa, ModelFormat.LyCORIS, BaseModelType.Flux)
    if controlnet_kind(shapes) is not None:  # InstantX (diffusers keys) or XLabs FLUX ControlNets
        return ProbeResult(ModelType.ControlNet, ModelFormat.Checkpoint, BaseModelType.Flux)
    if is_redux(shapes):  # BFL's Redux image embedder (InvokeAI's test: exactly its four tensors)
        return ProbeResult(ModelType.FluxRedux, ModelFormat.Checkpoint, BaseModelType.Flux)
    if is_xlabs_ip_adapter(shapes):  # XLabs' FLUX IP-Adapter (InvokeAI's IPAdapter_Checkpoint_FLUX_Config test)
        return ProbeResult(ModelType.IPAdapter, ModelFormat.Checkpoint, BaseModelType.Flux)
    if sd_ip_adapter.is_ip_adapter_state(shapes):  # Tencent's single file, SD1/SD2/SDXL
        return _probe_sd_ip_adapter(path, shapes, ModelFormat.Checkpoint)
    if flux:  # after the FLUX add-ons above, some of which carry double-block keys too (InvokeAI's order)
        return probe_parts.probe_flux_checkpoint(path, shapes)
    for probe in (_probe_sd_controlnet, _probe_lora, _probe_embedding):
        result = probe(path, shapes)
        if result is not None:
            return result
    if "encoder.conv_in.weight" in shapes and "decoder.conv_out.weight" in shapes:
        base = probe_parts.vae_checkpoint_base(path, shapes) or _vae_base_from_name(path.name)
        return ProbeResult(ModelType.VAE, ModelFormat.Checkpoint, base)
    from invokeai_provider.models.upscalers import spandrel as spandrel_model
    if spandrel_model.identify(path) is not None:  # an upscaler or restorer of an architecture spandrel knows
        return ProbeResult(ModelType.SpandrelImageToImage, ModelFormat.Checkpoint, BaseModelType.Any)
    reason = spandrel_model.unavailable_reason()
    hint = "" if reason is None else (f"; spandrel, which recognises upscaler checkpoints, cannot be imported "
                                      f"({reason})")
    raise ProbeError(f"{path}: not a model this provider recognises (no main, LoRA, embedding, VAE or spandrel "
                     f"image-to-image keys){hint}")


# --- diffusers folders --------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProbeError(f"{path}: unreadable config ({exc})") from None


def _repo_variant(folder: Path) -> Optional[str]:
    names = [p.name for p in folder.rglob("*") if p.is_file()]
    if any(".fp16." in n for n in names):
        return "fp16"
    return None


def _probe_flux_folder(path: Path) -> ProbeResult:
    """A FLUX.1 diffusers folder: T5-XXL's width on the context embedder (FLUX.2's text encoders are wider),
    the variant from the transformer's input channels and guidance embedder (InvokeAI's rules)."""
    transformer = _read_json(path / "transformer" / "config.json")
    if transformer.get("joint_attention_dim") != 4096:
        raise ProbeError(f"{path}: transformer joint_attention_dim {transformer.get('joint_attention_dim')} is not "
                         "FLUX.1's (4096, T5-XXL)")
    channels = transformer.get("in_channels")
    if channels == 384:
        variant = FluxVariantType.DevFill
    elif channels == 64:
        variant = FluxVariantType.Dev if transformer.get("guidance_embeds") else FluxVariantType.Schnell
    else:
        raise ProbeError(f"{path}: transformer in_channels {channels} is not FLUX.1's (64, or 384 for fill)")
    return ProbeResult(ModelType.Main, ModelFormat.Diffusers, BaseModelType.Flux, variant,
                       repo_variant=_repo_variant(path))


def _probe_siglip(path: Path) -> ProbeResult:
    """A SigLIP folder (InvokeAI: config naming ``SiglipModel``; a bare ``SiglipVisionModel`` is taken too), which
    FLUX Redux needs with its image processor."""
    if not (path / SIGLIP_PROCESSOR_FILE).is_file():
        raise ProbeError(f"{path}: a SigLIP model without {SIGLIP_PROCESSOR_FILE}; FLUX Redux needs its image "
                         "processor beside the weights")
    return ProbeResult(ModelType.SigLIP, ModelFormat.Diffusers, BaseModelType.Any, repo_variant=_repo_variant(path))


def _probe_sd_ip_adapter(path: Path, shapes: dict[str, tuple[int, ...]], format: ModelFormat,
                         encoder: Optional[str] = None) -> ProbeResult:
    try:
        base = sd_ip_adapter.ip_adapter_base(shapes, path.name)
        sd_ip_adapter.ip_adapter_kind((k[len("image_proj."):] for k in shapes if k.startswith("image_proj.")),
                                      path.name)
    except sd_ip_adapter.IPAdapterError as exc:
        raise ProbeError(str(exc)) from None
    return ProbeResult(ModelType.IPAdapter, format, BaseModelType(base), image_encoder_model_id=encoder)


def probe_folder(path: Path) -> ProbeResult:
    index = path / "model_index.json"
    if index.is_file():
        class_name = _read_json(index).get("_class_name")
        from invokeai_provider.models.z_image.probe import probe_z_image_folder

        z_image = probe_z_image_folder(path, class_name)
        if z_image is not None:
            return z_image
        if class_name in FLUX_PIPELINES:
            return _probe_flux_folder(path)
        from invokeai_provider.models.flux2 import probe as flux2_probe

        if class_name in flux2_probe.PIPELINES:
            return flux2_probe.probe_folder(path, _read_json(index), _read_json(path / "transformer" / "config.json"),
                                            _repo_variant(path))
        from invokeai_provider.models.cogview4 import probe as cogview4_probe

        if class_name in cogview4_probe.PIPELINES:
            return cogview4_probe.probe_folder(path, _repo_variant(path))
        from invokeai_provider.models.sd3 import probe as sd3_probe

        if class_name in sd3_probe.SD3_PIPELINES:
            return sd3_probe.probe_sd3_folder(path)
        if class_name not in MAIN_PIPELINES:
            raise ProbeError(f"{path}: diffusers pipeline {class_name!r} is not a supported main model "
                             f"(expected one of {', '.join(sorted(MAIN_PIPELINES | FLUX_PIPELINES))})")
        unet = _read_json(path / "unet" / "config.json")
        width = unet.get("cross_attention_dim")
        if width not in CROSS_ATTENTION_BASE:
            raise ProbeError(f"{path}: unet cross_attention_dim {width} matches no SD base")
        variant = IN_CHANNELS_VARIANT.get(unet.get("in_channels", 4))
        if variant is None:
            raise ProbeError(f"{path}: unet in_channels {unet.get('in_channels')} is not 4, 9 or 5")
        scheduler = path / "scheduler" / "scheduler_config.json"
        prediction = _read_json(scheduler).get("prediction_type", "epsilon") if scheduler.is_file() else "epsilon"
        return ProbeResult(ModelType.Main, ModelFormat.Diffusers, CROSS_ATTENTION_BASE[width], variant,
                           SchedulerPredictionType(prediction), _repo_variant(path))
    from invokeai_provider.models.model_manager import probe_parts

    if (path / sd_ip_adapter.INVOKEAI_WEIGHTS).is_file():  # InvokeAI's IP-Adapter folder (its own pickle, scanned)
        return _probe_sd_ip_adapter(path, pickle_shapes(path / sd_ip_adapter.INVOKEAI_WEIGHTS), ModelFormat.InvokeAI,
                                    sd_ip_adapter.encoder_model_id(path))
    if is_clip_vision_folder(path):  # an IP-Adapter's image encoder (CLIPVisionModelWithProjection)
        return ProbeResult(ModelType.CLIPVision, ModelFormat.Diffusers, BaseModelType.Any,
                           repo_variant=_repo_variant(path))
    from invokeai_provider.models.text_encoders.qwen3 import probe_qwen3_folder

    qwen3 = probe_qwen3_folder(path)  # a standalone Qwen3 encoder (Z-Image, FLUX.2 Klein)
    if qwen3 is not None:
        return qwen3
    from invokeai_provider.models.text_encoders.mistral import probe_mistral_folder

    mistral = probe_mistral_folder(path)  # a standalone Mistral encoder (FLUX.2 [dev])
    if mistral is not None:
        return mistral
    part = probe_parts.probe_part_folder(path)  # a T5 encoder or CLIP embed folder
    if part is not None:
        return part
    if folder_siglip_class(path) is not None:
        return _probe_siglip(path)
    config = path / "config.json"
    if folder_is_controlnet(path):
        return ProbeResult(ModelType.ControlNet, ModelFormat.Diffusers, BaseModelType.Flux,
                           repo_variant=_repo_variant(path))
    if config.is_file() and _read_json(config).get("_class_name") == "T2IAdapter":  # InvokeAI's bases by adapter type
        adapter_type = _read_json(config).get("adapter_type")
        bases = {"full_adapter": BaseModelType.StableDiffusion1, "light_adapter": BaseModelType.StableDiffusion1,
                 "full_adapter_xl": BaseModelType.StableDiffusionXL}
        if adapter_type not in bases:
            raise ProbeError(f"{path}: T2I-Adapter type {adapter_type!r} is not one InvokeAI runs "
                             f"({', '.join(bases)})")
        return ProbeResult(ModelType.T2IAdapter, ModelFormat.Diffusers, bases[adapter_type],
                           repo_variant=_repo_variant(path))
    if config.is_file() and _read_json(config).get("_class_name") in ("ControlNetUnionModel", "ControlNetModel_Union"):
        raise ProbeError(f"{path}: a union ControlNet ({_read_json(config)['_class_name']}); InvokeAI 6.11 identifies "
                         "only ControlNetModel folders, and its controlnet node has no control type to give a union "
                         "model; install a ControlNetModel folder")
    if config.is_file() and _read_json(config).get("_class_name") == "ControlNetModel":  # SD1/SD2/SDXL
        width = _read_json(config).get("cross_attention_dim")
        if width not in CROSS_ATTENTION_BASE:
            raise ProbeError(f"{path}: ControlNet cross_attention_dim {width} matches no SD base")
        return ProbeResult(ModelType.ControlNet, ModelFormat.Diffusers, CROSS_ATTENTION_BASE[width],
                           repo_variant=_repo_variant(path))
    if config.is_file():
        from invokeai_provider.models.sd3 import probe as sd3_probe

        sd3_probe.refuse_transformer_folder(path, _read_json(config))
    if config.is_file() and _read_json(config).get("_class_name") == "AutoencoderKLFlux2":  # FLUX.2's 32 channels
        return ProbeResult(ModelType.VAE, ModelFormat.Diffusers, BaseModelType.Flux2, repo_variant=_repo_variant(path))
    if config.is_file() and _read_json(config).get("_class_name") in ("AutoencoderKL", "AutoencoderTiny"):
        base = sd3_probe.vae_folder_base(_read_json(config)) or probe_parts.vae_folder_base(_read_json(config)) \
            or _vae_base_from_name(path.name)
        return ProbeResult(ModelType.VAE, ModelFormat.Diffusers, base, repo_variant=_repo_variant(path))
    weights = sorted(path.glob("*.safetensors"))
    if len(weights) == 1:
        return probe_file(weights[0])
    raise ProbeError(f"{path}: not a recognised model folder (no model_index.json, VAE config.json or single "
                     "safetensors file)")


def probe(path: str | Path, allow_pickle: bool = False) -> ProbeResult:
    """Identifies a model file or diffusers folder; raises ProbeError with the reason when it cannot."""
    path = Path(path)
    if not path.exists():
        raise ProbeError(f"{path}: no such file or folder")
    return probe_folder(path) if path.is_dir() else probe_file(path, allow_pickle)

"""Qwen3 text encoders (InvokeAI's ``qwen3_encoder`` models, base any), read by Z-Image and FLUX.2 Klein.

Identified with InvokeAI's rules: a folder with ``text_encoder/config.json`` (or ``config.json``) naming Qwen3 and its
tokenizer, or a single file with Qwen3's names (``model.layers.*``, ``q_norm``), or a GGUF file with llama.cpp's
names (identified so that installing it is refused with the reason); the variant from the hidden width (1024 0.6B,
2560 4B, 4096 8B), an unknown width is not one InvokeAI knows.

Loaded always as a ``Qwen3Model`` (the causal LM's head is never used: the families read a hidden state). A single
file ships no tokenizer: InvokeAI bundles a copy of Qwen3's, this provider has none, so it comes from the ``--config``
folder the file was installed with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from invokeai_provider.core.taxonomy import BaseModelType, ModelType, Qwen3VariantType, SubModelType
from invokeai_provider.models.flux.bfl_names import block_count
from invokeai_provider.models.model_manager.configs import ModelConfig, ModelFormat
from invokeai_provider.models.model_manager.probe import ProbeError, ProbeResult
from invokeai_provider.models.text_encoders.folders import (
    encoder_folder_config,
    encoder_folders,
    require_tokenizer,
)

QWEN3_CLASSES = {"Qwen3ForCausalLM", "Qwen3Model"}
QWEN3_WIDTHS = {1024: Qwen3VariantType.Qwen3_06B, 2560: Qwen3VariantType.Qwen3_4B, 4096: Qwen3VariantType.Qwen3_8B}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
QWEN3_PARTS = (SubModelType.Tokenizer, SubModelType.TextEncoder)


def qwen3_variant(width: Any, where: Path) -> Qwen3VariantType:
    variant = QWEN3_WIDTHS.get(width) if isinstance(width, int) else None
    if variant is None:
        raise ProbeError(f"{where}: a Qwen3 encoder {width} wide; InvokeAI knows Qwen3 0.6B (1024), 4B (2560) and "
                         "8B (4096)")
    return variant


def is_qwen3_state(shapes: dict[str, tuple[int, ...]]) -> bool:
    """Qwen3's names (``model.layers.*`` or ``model.embed_tokens``) with its QK norms, no vision tower."""
    names = list(shapes)
    qwen = any(k.startswith("model.layers.0.") or k == "model.embed_tokens.weight" for k in names)
    qk_norm = any(".self_attn.q_norm." in k or ".self_attn.k_norm." in k for k in names)
    vision = any(k.startswith(("visual.", "model.visual.")) or ".visual." in k for k in names)
    return qwen and qk_norm and not vision


def probe_qwen3_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A single-file Qwen3 encoder, or None."""
    if not is_qwen3_state(shapes):
        return None
    embed = shapes.get("model.embed_tokens.weight")
    return ProbeResult(ModelType.Qwen3Encoder, ModelFormat.Checkpoint, BaseModelType.Any,
                       qwen3_variant(embed[-1] if embed else None, path))


def probe_qwen3_gguf(path: Path, shapes: dict[str, tuple[int, ...]]) -> Optional[ProbeResult]:
    """A GGUF Qwen3 encoder (llama.cpp names with ``attn_q_norm``, no T5-style ``enc.``), or None."""
    llama = any(k.startswith("blk.0.") or k == "token_embd.weight" for k in shapes)
    if not (llama and any(".attn_q_norm." in k for k in shapes) and not any(k.startswith("enc.") for k in shapes)):
        return None
    embed = shapes.get("token_embd.weight")
    return ProbeResult(ModelType.Qwen3Encoder, ModelFormat.GGUFQuantized, BaseModelType.Any,
                       qwen3_variant(embed[-1] if embed else None, path))


def probe_qwen3_folder(path: Path) -> Optional[ProbeResult]:
    """A standalone Qwen3 encoder folder (InvokeAI's ``qwen3_encoder`` format), or None when the folder is not one."""
    found = encoder_folder_config(path, QWEN3_CLASSES)
    if found is None:
        return None
    encoder, tokenizer, config = found
    if (encoder / "quantization_config.json").is_file():
        raise ProbeError(f"{path}: an SDNQ-quantized Qwen3 encoder; running it needs SDNQ's dequantizing loader, "
                         "which this provider does not have; install the unquantized encoder")
    require_tokenizer(path, tokenizer, "Qwen3", TOKENIZER_FILES)
    return ProbeResult(ModelType.Qwen3Encoder, ModelFormat.Qwen3Encoder, BaseModelType.Any,
                       qwen3_variant(config.get("hidden_size"), encoder / "config.json"))


# --- loading --------------------------------------------------------------------------------------------


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def load_encoder(folder: Path, dtype: Any) -> Any:
    """A ``Qwen3Model`` from a folder holding a ``Qwen3Model`` or ``Qwen3ForCausalLM`` (its ``model.`` weights)."""
    from transformers import Qwen3Model

    return Qwen3Model.from_pretrained(folder, local_files_only=True, torch_dtype=dtype).eval()


def load_part(config: ModelConfig, part: Optional[SubModelType], path: Path, config_path: Optional[Path],
              dtype: Any) -> Any:
    """A standalone Qwen3 encoder's tokenizer or encoder (``path``: its local files)."""
    from invokeai_provider.models.model_manager.manager import ModelLoadError

    where = f"model {config.name!r} ({config.key})"
    if part not in QWEN3_PARTS:
        raise ModelLoadError(f"{where}: submodel {part.value if part else 'None'!r} does not exist in a "
                             f"{config.type.value} model (expected one of {', '.join(p.value for p in QWEN3_PARTS)})")
    if config.format is ModelFormat.Qwen3Encoder:
        encoder, tokenizer = encoder_folders(path)
        return load_tokenizer(tokenizer) if part is SubModelType.Tokenizer else load_encoder(encoder, dtype)
    if part is SubModelType.Tokenizer:
        if config_path is None:
            raise ModelLoadError(
                f"{where} is a single-file Qwen3 encoder, which ships no tokenizer (InvokeAI uses a copy bundled with "
                "it; this provider has none): install it again with --config naming a folder that holds Qwen3's "
                "tokenizer (tokenizer.json, tokenizer_config.json), or install the encoder as a folder with "
                "text_encoder/ and tokenizer/")
        return load_tokenizer(encoder_folders(config_path)[1])
    return load_gguf(path, dtype) if config.format is ModelFormat.GGUFQuantized else load_file(path, dtype)


def qwen3_config(shapes: dict[str, tuple[int, ...]], where: str) -> Any:
    """A ``Qwen3Config`` read from the shapes of a ``Qwen3Model``'s weights (names without ``model.``)."""
    from transformers import Qwen3Config

    from invokeai_provider.models.model_manager.manager import ModelLoadError

    try:
        vocab, width = shapes["embed_tokens.weight"]
        head_dim = shapes["layers.0.self_attn.q_norm.weight"][0]
        return Qwen3Config(
            vocab_size=vocab, hidden_size=width, num_hidden_layers=block_count(shapes, "layers"), head_dim=head_dim,
            num_attention_heads=shapes["layers.0.self_attn.q_proj.weight"][0] // head_dim,
            num_key_value_heads=shapes["layers.0.self_attn.k_proj.weight"][0] // head_dim,
            intermediate_size=shapes["layers.0.mlp.gate_proj.weight"][0], max_position_embeddings=40960,
            rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    except KeyError as missing:
        raise ModelLoadError(f"{where}: not a Qwen3 encoder this loader can build: no {missing} tensor") from None


def load_file(path: Path, dtype: Any) -> Any:
    """A single-file Qwen3 encoder (``model.*`` names, its causal LM's head ignored) as a ``Qwen3Model``, its
    architecture read from the shapes."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file as read
    from transformers import Qwen3Model

    from invokeai_provider.models.model_manager.manager import ModelLoadError

    state = {k.removeprefix("model."): v for k, v in read(str(path)).items() if not k.startswith("lm_head.")}
    config = qwen3_config({key: tuple(value.shape) for key, value in state.items()}, path.name)
    with init_empty_weights():
        model = Qwen3Model(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path.name}: the weights do not fit a Qwen3 encoder: {exc}") from None
    return model.to(dtype=dtype).eval()


# llama.cpp's tensor names for Qwen3 (GGUF files) <-> transformers' (``Qwen3Model``'s, without ``model.``)
LLAMA_CPP_TOP = {"token_embd": "embed_tokens", "output_norm": "norm", "output": "lm_head"}
LLAMA_CPP_BLOCK = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                   "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
                   "attn_k_norm": "self_attn.k_norm", "attn_norm": "input_layernorm",
                   "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                   "ffn_down": "mlp.down_proj"}


def from_llama_cpp_names(state: dict[str, Any], where: str) -> dict[str, Any]:
    """llama.cpp's Qwen3 names (``blk.0.attn_q.weight``) -> ``Qwen3Model``'s (``layers.0.self_attn.q_proj.weight``)."""
    from invokeai_provider.models.model_manager.manager import ModelLoadError

    out = {}
    for key, value in state.items():
        stem, _, param = key.rpartition(".")
        parts = stem.split(".")
        if len(parts) == 3 and parts[0] == "blk" and parts[2] in LLAMA_CPP_BLOCK:
            out[f"layers.{parts[1]}.{LLAMA_CPP_BLOCK[parts[2]]}.{param}"] = value
        elif stem in LLAMA_CPP_TOP:
            out[f"{LLAMA_CPP_TOP[stem]}.{param}"] = value
        else:
            raise ModelLoadError(f"{where}: tensor {key!r} is not one of llama.cpp's Qwen3 tensors")
    return out


def to_llama_cpp_names(state: dict[str, Any]) -> dict[str, Any]:
    """``Qwen3Model``/``Qwen3ForCausalLM`` names -> llama.cpp's; a tied head is left out (as llama.cpp does)."""
    top = {hf: cpp for cpp, hf in LLAMA_CPP_TOP.items()}
    block = {hf: cpp for cpp, hf in LLAMA_CPP_BLOCK.items()}
    out = {}
    for key, value in state.items():
        stem, _, param = key.removeprefix("model.").rpartition(".")
        if stem == "lm_head":
            continue
        parts = stem.split(".", 2)
        out[f"blk.{parts[1]}.{block[parts[2]]}.{param}" if parts[0] == "layers" else f"{top[stem]}.{param}"] = value
    return out


def load_gguf(path: Path, dtype: Any) -> Any:
    """A GGUF Qwen3 encoder (llama.cpp's names) as a ``Qwen3Model`` whose linear layers stay quantized (dequantized
    per call in ``dtype``, as InvokeAI runs them); its architecture read from the shapes."""
    from transformers import Qwen3Model

    from invokeai_provider.models.quantization import gguf

    state = {k: v for k, v in from_llama_cpp_names(gguf.read_gguf(path), path.name).items()
             if not k.startswith("lm_head.")}
    config = qwen3_config(gguf.gguf_shapes(state), path.name)
    return gguf.load_quantized_module(lambda: Qwen3Model(config), state, dtype, path.name)

"""The tiny models as GGUF files, under the names real GGUF files use: a transformer's original names (BFL's for
FLUX.1 and FLUX.2, Tongyi's for Z-Image, as city96's conversions keep them) and llama.cpp's for the Qwen3 and T5
encoders.

Written with the ``gguf`` package: each 2-D weight whose rows fill whole quantization blocks is quantized (Q8_0 by
default, Q4_0 or another type the ``gguf`` package can quantize on request), everything else (norms, biases, narrow
matrices, pad tokens) stays F32, as in the real files. The weights are the unquantized tiny model's for the same seed, so a GGUF
model's image can be compared with that model's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["build_flux2_gguf", "build_flux_gguf", "build_qwen3_gguf", "build_t5_gguf", "build_t5_tokenizer",
           "build_z_image_gguf", "write_gguf"]

DEFAULT_QUANT = "Q8_0"


def _new(dest: Path) -> Path:
    dest = Path(dest)
    if dest.suffix != ".gguf":
        raise ValueError(f"{dest}: expected a .gguf file")
    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def write_gguf(dest: Path, state: dict[str, Any], arch: str, *, quant: str = DEFAULT_QUANT,
               metadata: dict[str, Any] | None = None) -> Path:
    """``state`` (name -> torch tensor) as a GGUF file of architecture ``arch`` with ``metadata`` (key -> int,
    float or str); 2-D ``.weight`` tensors whose rows are whole ``quant`` blocks are quantized, the rest is F32."""
    import gguf
    import numpy as np

    qtype = gguf.GGMLQuantizationType[quant]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    dest = _new(dest)
    writer = gguf.GGUFWriter(str(dest), arch)
    for key, value in (metadata or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, str(value))
    for name, tensor in state.items():
        data = tensor.detach().float().cpu().numpy().astype(np.float32)
        if data.ndim == 2 and data.shape[-1] % block == 0 and name.endswith(".weight"):
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def build_z_image_gguf(dest: Path, *, seed: int = 0, quant: str = DEFAULT_QUANT) -> Path:
    """The tiny Z-Image transformer (the main's, for the same seed) under its original names."""
    from invokeai_provider.models.testing.tiny_z_image import original_transformer_state

    return write_gguf(dest, original_transformer_state(seed), "lumina2", quant=quant)


def build_flux2_gguf(dest: Path, *, seed: int = 0, quant: str = DEFAULT_QUANT) -> Path:
    """The tiny FLUX.2 Klein transformer (the main's, for the same seed) under BFL's names."""
    from invokeai_provider.models.testing.tiny_flux2 import bfl_transformer_state

    return write_gguf(dest, bfl_transformer_state(seed), "flux2", quant=quant)


def build_flux_gguf(dest: Path, *, seed: int = 0, quant: str = DEFAULT_QUANT) -> Path:
    """The tiny FLUX.1 [dev] transformer (the main's, for the same seed) under BFL's names."""
    from invokeai_provider.models.testing.tiny_flux import _transformer
    from invokeai_provider.models.testing.tiny_flux_checkpoint import bfl_state_dict

    state = {key: value.contiguous() for key, value in _transformer("dev", seed).state_dict().items()}
    return write_gguf(dest, bfl_state_dict(state), "flux", quant=quant)


def build_qwen3_gguf(dest: Path, *, seed: int = 0, quant: str = DEFAULT_QUANT, family: str = "z-image") -> Path:
    """The tiny Qwen3 encoder of ``family`` (``z-image``: the Z-Image main's two-layer one; ``flux2``: FLUX.2
    Klein's 27-layer one) under llama.cpp's names, with llama.cpp's ``qwen3.*`` metadata. It ships no tokenizer:
    install it with ``--config`` naming a folder with Qwen3's tokenizer, as for any single-file Qwen3 encoder."""
    from invokeai_provider.models.testing.tiny_qwen3 import qwen3_encoder, qwen3_tokenizer
    from invokeai_provider.models.text_encoders.qwen3 import to_llama_cpp_names

    if family == "z-image":
        from invokeai_provider.models.testing.tiny_z_image import _qwen3

        model = _qwen3(seed)
    elif family == "flux2":
        model = qwen3_encoder(seed, vocab_size=len(qwen3_tokenizer()), tag="flux2/qwen3")
    else:
        raise ValueError(f"Qwen3 encoder family {family!r}: expected z-image or flux2")
    config = model.config
    metadata = {"qwen3.block_count": config.num_hidden_layers, "qwen3.context_length": 40960,
                "qwen3.embedding_length": config.hidden_size, "qwen3.feed_forward_length": config.intermediate_size,
                "qwen3.attention.head_count": config.num_attention_heads,
                "qwen3.attention.head_count_kv": config.num_key_value_heads,
                "qwen3.attention.key_length": config.head_dim, "qwen3.attention.value_length": config.head_dim,
                "qwen3.rope.freq_base": 1000000.0, "qwen3.attention.layer_norm_rms_epsilon": 1e-6}
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    return write_gguf(dest, to_llama_cpp_names(state), "qwen3", quant=quant, metadata=metadata)


def build_t5_gguf(dest: Path, *, seed: int = 0, quant: str = DEFAULT_QUANT) -> Path:
    """The tiny FLUX.1 T5 encoder (the main's and the t5_encoder folder's, for the same seed) under llama.cpp's
    names, with llama.cpp's ``t5encoder.*`` metadata. It ships no tokenizer: install it with ``--config`` naming a
    folder with the tiny T5 tokenizer (`build_t5_tokenizer`), as for any GGUF T5 encoder."""
    from invokeai_provider.models.testing.tiny_flux import _t5, t5_tokenizer
    from invokeai_provider.models.text_encoders.t5 import to_llama_cpp_names

    model = _t5(seed, len(t5_tokenizer()))
    config = model.config
    metadata = {"t5encoder.block_count": config.num_layers, "t5encoder.context_length": 512,
                "t5encoder.embedding_length": config.d_model, "t5encoder.feed_forward_length": config.d_ff,
                "t5encoder.attention.head_count": config.num_heads, "t5encoder.attention.key_length": config.d_kv,
                "t5encoder.attention.value_length": config.d_kv,
                "t5encoder.attention.layer_norm_epsilon": config.layer_norm_epsilon,
                "t5encoder.attention.relative_buckets_count": config.relative_attention_num_buckets}
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    return write_gguf(dest, to_llama_cpp_names(state), "t5encoder", quant=quant, metadata=metadata)


def build_t5_tokenizer(dest: Path) -> Path:
    """A folder holding the tiny T5 tokenizer (``tokenizer_2/``, as a t5_encoder folder has it): the ``--config``
    of the tiny GGUF T5 encoder."""
    from invokeai_provider.models.testing.tiny_flux_parts import T5_MAX_LENGTH
    from invokeai_provider.models.testing.tiny_flux import t5_tokenizer

    t5_tokenizer(T5_MAX_LENGTH).save_pretrained(Path(dest) / "tokenizer_2")
    return Path(dest)

"""GGUF-quantized T5 encoders (city96's ``t5-v1_1-xxl-encoder-Q8_0.gguf``: llama.cpp's tensor names), which FLUX.1
and SD3 read as their T5 encoder, loaded as transformers' ``T5EncoderModel`` with their linear layers kept quantized
(diffusers' ``GGUFLinear``, dequantized per call), as InvokeAI runs them.

Two things differ from a quantized transformer:

- transformers' T5 feed-forward casts its input to ``wo.weight.dtype`` before ``wo`` (a guard for fp16 overflow); a
  quantized weight's dtype is uint8, which would turn the activations into integers. The ``wo`` layers are therefore
  dequantized once at load (float32 under a float16 compute dtype, as transformers keeps them), the other layers
  stay quantized.
- the file ships no tokenizer transformers can read: InvokeAI uses a copy of T5's bundled with it; this provider has
  none, so it comes from the ``--config`` folder given at install (a T5 encoder folder, a FLUX.1 or SD3 diffusers
  folder, or the tokenizer's own files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from invokeai_provider.models.flux.bfl_names import block_count

__all__ = ["LLAMA_CPP_BLOCK", "from_llama_cpp_names", "load_gguf", "t5_config", "to_llama_cpp_names",
           "tokenizer_folder"]

# llama.cpp's T5 encoder names -> transformers' ``T5EncoderModel`` names (``encoder.block.N.`` inside a block)
LLAMA_CPP_TOP = {"token_embd.weight": "shared.weight", "enc.output_norm.weight": "encoder.final_layer_norm.weight"}
LLAMA_CPP_BLOCK = {"attn_q": "layer.0.SelfAttention.q", "attn_k": "layer.0.SelfAttention.k",
                   "attn_v": "layer.0.SelfAttention.v", "attn_o": "layer.0.SelfAttention.o",
                   "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias", "attn_norm": "layer.0.layer_norm",
                   "ffn_gate": "layer.1.DenseReluDense.wi_0", "ffn_up": "layer.1.DenseReluDense.wi_1",
                   "ffn_down": "layer.1.DenseReluDense.wo", "ffn_norm": "layer.1.layer_norm"}
UNGATED_UP = "layer.1.DenseReluDense.wi"  # a T5 v1.0 feed-forward (no ffn_gate): ffn_up is its only input layer
TOKENIZER_SUBFOLDERS = ("tokenizer_2", "tokenizer_3", "tokenizer")  # FLUX.1's / SD3's T5 slot, a plain folder
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def from_llama_cpp_names(state: dict[str, Any], where: str) -> dict[str, Any]:
    """llama.cpp's names (``enc.blk.0.attn_q.weight``) -> ``T5EncoderModel``'s
    (``encoder.block.0.layer.0.SelfAttention.q.weight``); a name of neither is refused."""
    from invokeai_provider.models.model_manager.manager import ModelLoadError

    gated = any(".ffn_gate." in key for key in state)
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if key in LLAMA_CPP_TOP:
            out[LLAMA_CPP_TOP[key]] = value
        elif len(parts) == 5 and parts[:2] == ["enc", "blk"] and parts[3] in LLAMA_CPP_BLOCK:
            layer = LLAMA_CPP_BLOCK[parts[3]] if gated or parts[3] != "ffn_up" else UNGATED_UP
            out[f"encoder.block.{parts[2]}.{layer}.{parts[4]}"] = value
        else:
            raise ModelLoadError(f"{where}: tensor {key!r} is not one of llama.cpp's T5 encoder tensors")
    return out


def to_llama_cpp_names(state: dict[str, Any]) -> dict[str, Any]:
    """``T5EncoderModel`` names -> llama.cpp's (the tied ``encoder.embed_tokens`` copy left out, as llama.cpp does)."""
    top = {hf: cpp for cpp, hf in LLAMA_CPP_TOP.items()}
    block = {hf: cpp for cpp, hf in LLAMA_CPP_BLOCK.items()} | {UNGATED_UP: "ffn_up"}
    out = {}
    for key, value in state.items():
        if key == "encoder.embed_tokens.weight":
            continue
        if key in top:
            out[top[key]] = value
            continue
        _, _, index, rest = key.split(".", 3)  # encoder.block.N.<layer>.<param>
        layer, _, param = rest.rpartition(".")
        out[f"enc.blk.{index}.{block[layer]}.{param}"] = value
    return out


def t5_config(shapes: dict[str, tuple[int, ...]], where: str) -> Any:
    """A ``T5Config`` read from the shapes of ``T5EncoderModel``'s weights. Not in the shapes, so T5 v1.1's (every
    FLUX.1 and SD3 T5): the layer norm epsilon, the relative attention's maximum distance and the GELU activation."""
    from transformers import T5Config

    from invokeai_provider.models.model_manager.manager import ModelLoadError

    attention = "encoder.block.0.layer.0.SelfAttention."
    try:
        vocab, width = shapes["shared.weight"]
        inner = shapes[attention + "q.weight"][0]
        buckets, heads = shapes[attention + "relative_attention_bias.weight"]
        gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
        d_ff = shapes[f"encoder.block.0.{UNGATED_UP}{'_0' if gated else ''}.weight"][0]
    except KeyError as missing:
        raise ModelLoadError(f"{where}: not a T5 encoder this loader can build: no {missing} tensor") from None
    return T5Config(vocab_size=vocab, d_model=width, d_kv=inner // heads, d_ff=d_ff, num_heads=heads,
                    num_layers=block_count(shapes, "encoder.block"), relative_attention_num_buckets=buckets,
                    relative_attention_max_distance=128, layer_norm_epsilon=1e-6, dense_act_fn="gelu_new",
                    feed_forward_proj="gated-gelu" if gated else "gelu", is_gated_act=gated,
                    tie_word_embeddings=False, use_cache=False)


def load_gguf(path: Path, dtype: Any) -> Any:
    """A GGUF T5 encoder (llama.cpp's names) as a ``T5EncoderModel`` computing in ``dtype``: its linear layers kept
    quantized except ``wo`` (see the module's note), its embeddings dequantized; the architecture from the shapes."""
    import torch
    from transformers import T5EncoderModel

    from invokeai_provider.models.quantization import gguf

    state = from_llama_cpp_names(gguf.read_gguf(path), path.name)
    if "shared.weight" in state:  # the encoder's own reference to the table, retied below
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
    config = t5_config(gguf.gguf_shapes(state), path.name)
    model = gguf.load_quantized_module(lambda: T5EncoderModel(config), state, dtype, path.name,
                                       keep_dequantized=("DenseReluDense.wo",))
    model.encoder.embed_tokens = model.shared  # one table, as T5's (the file has it once)
    if dtype == torch.float16:  # transformers keeps T5's wo in float32 under float16 (_keep_in_fp32_modules)
        for block in model.encoder.block:
            block.layer[1].DenseReluDense.wo.float()
    return model


def tokenizer_folder(config_path: Optional[Path], where: str) -> Path:
    """The folder holding the T5 tokenizer for a GGUF encoder: ``config_path`` (the ``--config`` folder) itself or its
    ``tokenizer_2/``, ``tokenizer_3/`` or ``tokenizer/``."""
    from invokeai_provider.models.model_manager.manager import ModelLoadError

    if config_path is None:
        raise ModelLoadError(
            f"{where} is a GGUF T5 encoder, which ships no tokenizer (InvokeAI uses a copy bundled with it; this "
            "provider has none): install it again with --config naming a folder that holds T5's tokenizer (a "
            "t5_encoder folder, a FLUX.1 or SD3 diffusers folder, or tokenizer.json / spiece.model)")
    for folder in (*(config_path / name for name in TOKENIZER_SUBFOLDERS), config_path):
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            return folder
    raise ModelLoadError(f"{where}: its --config folder {config_path} holds no T5 tokenizer (tokenizer.json or "
                         f"spiece.model, there or in {', '.join(f'{name}/' for name in TOKENIZER_SUBFOLDERS)})")

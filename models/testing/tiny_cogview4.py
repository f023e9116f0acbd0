"""Tiny random-weight CogView4 models (a ``CogView4Pipeline`` diffusers folder) for tests and offline smoke runs.

The layout is THUDM/CogView4-6B's: ``tokenizer`` (a ``PreTrainedTokenizerFast``), ``text_encoder`` (transformers'
``GlmModel``), ``transformer`` (``CogView4Transformer2DModel``), ``vae`` (``AutoencoderKL``, 16 latent channels,
four blocks: 8x down, as InvokeAI assumes) and ``scheduler`` (``FlowMatchEulerDiscreteScheduler`` with CogView4's
linear dynamic shift). Everything else is narrow: GLM is two layers 32 wide, the transformer one block of two heads.

GLM-4's tokenizer cannot be fetched here, so `glm_tokenizer` builds a small one in its format: byte-level BPE
(every byte has a token, so any prompt encodes), a few hundred merges for common words, GLM's special tokens and
its ``[gMASK] <sop>`` prefix on every text, ``<|endoftext|>`` as the pad token and left padding.

The VAE's scaling factor is 0.8 rather than the real 1.0, so that a decode or encode that forgot it shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from invokeai_provider.models.testing.tiny import _construct

__all__ = ["GLM_SPECIAL_TOKENS", "GLM_WIDTH", "SCHEDULER", "VAE_SCALING", "build_cogview4_model",
           "cogview4_components", "glm_tokenizer"]

GLM_WIDTH = 32  # the tiny GLM's hidden size: the transformer's text_embed_dim (GLM-4-9B's is 4096)
VAE_SCALING = 0.8
# CogView4-6B's scheduler: the shift grows with the square root of the token count (linear time shift)
SCHEDULER: dict[str, Any] = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True,
                                 time_shift_type="linear", base_shift=0.25, max_shift=0.75, base_image_seq_len=256,
                                 max_image_seq_len=4096)
GLM_SPECIAL_TOKENS = ("<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>")
_WORDS = ("a an the of in on at to and with by for from is photo painting portrait landscape cat dog fox "
          "lighthouse storm sea sky city night day red blue green white black golden oil watercolor "
          "mountain forest river tree flower house street light dark snow astronaut horse").split()


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2's table), in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in kept:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[byte] for byte in range(256)]


def glm_tokenizer() -> Any:
    """A small GLM-4-format tokenizer (see the module docstring); ``len()`` of it is the tiny GLM's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: index for index, symbol in enumerate(_byte_alphabet())}
    merges: list[tuple[str, str]] = []

    def merge(left: str, right: str) -> None:
        if left + right not in vocab:
            vocab[left + right] = len(vocab)
            merges.append((left, right))

    for word in _WORDS:
        piece = word[0]
        for char in word[1:]:
            merge(piece, char)
            piece += char
        merge("Ġ", word)  # the word after a space ("Ġ" stands for the space byte)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(GLM_SPECIAL_TOKENS))
    ids = {token: tokenizer.token_to_id(token) for token in ("[gMASK]", "<sop>")}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[gMASK] <sop> $A", pair="[gMASK] <sop> $A $B", special_tokens=list(ids.items()))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   padding_side="left", clean_up_tokenization_spaces=False)


def _glm(seed: int, tokenizer: Any) -> Any:
    from transformers import GlmConfig, GlmModel

    pad = tokenizer.pad_token_id
    config = GlmConfig(vocab_size=len(tokenizer), hidden_size=GLM_WIDTH, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                       pad_token_id=pad, eos_token_id=[pad])
    return _construct(lambda: GlmModel(config), materialize=True, seed=seed, tag="cogview4/glm")


def _transformer(seed: int) -> Any:
    from diffusers import CogView4Transformer2DModel

    return _construct(lambda: CogView4Transformer2DModel(
        patch_size=2, in_channels=16, out_channels=16, num_layers=1, attention_head_dim=16, num_attention_heads=2,
        text_embed_dim=GLM_WIDTH, time_embed_dim=32, condition_dim=16), materialize=True, seed=seed,
        tag="cogview4/transformer")


def _vae(seed: int) -> Any:
    from diffusers import AutoencoderKL

    return _construct(lambda: AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16, sample_size=64,
        scaling_factor=VAE_SCALING, use_quant_conv=False, use_post_quant_conv=False),
        materialize=True, seed=seed, tag="cogview4/vae")


def cogview4_components(seed: int = 0) -> dict[str, Any]:
    """The components of a tiny CogView4 model (what ``CogView4Pipeline(**components)`` takes)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    tokenizer = glm_tokenizer()
    return {"tokenizer": tokenizer, "text_encoder": _glm(seed, tokenizer), "transformer": _transformer(seed),
            "vae": _vae(seed), "scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULER)}


def build_cogview4_model(dest: Path, *, seed: int = 0) -> Path:
    """A tiny CogView4 model as a diffusers folder (``model_index.json`` of a ``CogView4Pipeline``)."""
    from diffusers import CogView4Pipeline

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    CogView4Pipeline(**cogview4_components(seed)).save_pretrained(dest, safe_serialization=True)
    # transformers 5 names a fast tokenizer TokenizersBackend when saving it; CogView4-6B's folder says
    # PreTrainedTokenizerFast (the same class there), so the tiny folder says what a real one does
    for file, key in ((dest / "model_index.json", "tokenizer"), (dest / "tokenizer" / "tokenizer_config.json", None)):
        data = json.loads(file.read_text())
        if key is None:
            data["tokenizer_class"] = "PreTrainedTokenizerFast"
        else:
            data[key] = ["transformers", "PreTrainedTokenizerFast"]
        file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return dest

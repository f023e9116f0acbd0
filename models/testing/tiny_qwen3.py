"""A tiny random-weight Qwen3 text encoder and a Qwen3-format tokenizer, built offline (no hub).

The Qwen3 encoder is what FLUX.2 Klein and Z-Image read prompts with. As for the other tiny models, what a prober
reads is real and the rest is narrow: the hidden width is Qwen3-4B's 2,560 (InvokeAI tells the 4B, 8B and 0.6B
encoders apart by it, and FLUX.2 Klein's transformer takes three of its hidden states side by side), with 27 layers
(FLUX.2 Klein reads hidden states 9, 18 and 27), two 16-wide attention heads and a 16-wide MLP.

Qwen's byte-level BPE vocabulary is not reachable offline, so the tokenizer is a small one in Qwen's format: the
256 byte symbols, whole-word merges for a few hundred common words (alone and after a space), Qwen's special tokens
(``<|endoftext|>`` pads, ``<|im_start|>``/``<|im_end|>`` frame chat turns, ``<think>``/``</think>``) and a chat
template of our own that renders a conversation as Qwen3's does, including the empty thinking block
``enable_thinking=False`` asks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invokeai_provider.models.testing.tiny import _construct

__all__ = ["QWEN3_4B_WIDTH", "QWEN3_LAYERS", "build_qwen3_encoder", "qwen3_encoder", "qwen3_tokenizer"]

QWEN3_4B_WIDTH = 2560  # Qwen3-4B's hidden_size: the variant InvokeAI reads (qwen3_4b)
QWEN3_LAYERS = 27  # enough for FLUX.2 Klein's hidden states 9, 18 and 27
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ADDED_TOKENS = ("<think>", "</think>")
WORDS = ("a an the of in on at to and with by for from is are photo painting portrait landscape cat dog fox "
         "lighthouse storm sea sky city night day red blue green white black golden oil watercolor study mountain "
         "forest river tree flower house street light dark user assistant system image picture woman man girl boy "
         "old young small big blue sunset sunrise beach boat castle garden road car bird horse ocean snow rain "
         "cloud clouds star stars moon sun fire water stone wood glass metal bright soft sharp detailed").split()
# Qwen3's turn layout; with enable_thinking=False the assistant turn opens with an empty thinking block
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: the best-ranked adjacent pair merged until none is known."""
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
        known = [(rank, i) for rank, i in pairs if rank is not None]
        if not known:
            break
        _, i = min(known)
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    return pieces


def _vocab_and_merges(words: tuple[str, ...] | list[str] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte symbols, then merges that make each word (bare and space-prefixed ``Ġword``) one token: what the merges
    so far leave of the word is joined left to right by new, lowest-ranked merges, so no earlier word changes.
    (`tiny_mistral` builds its byte-level vocabulary here too, from fewer words.)"""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {symbol: index for index, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        for spelled in (word, "Ġ" + word):
            pieces = _bpe(list(spelled), ranks)
            while len(pieces) > 1:
                ranks[pieces[0], pieces[1]] = len(ranks)
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
                pieces = [pieces[0] + pieces[1]] + pieces[2:]
    return vocab, sorted(ranks, key=ranks.__getitem__)


def qwen3_tokenizer(model_max_length: int = 131072) -> Any:
    """The tiny Qwen3-format tokenizer (a ``Qwen2TokenizerFast``, as Qwen3's is)."""
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast

    vocab, merges = _vocab_and_merges()
    for token in SPECIAL_TOKENS + ADDED_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=model_max_length,
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in ADDED_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def qwen3_encoder(seed: int = 0, *, vocab_size: int | None = None, layers: int = QWEN3_LAYERS,
                  width: int = QWEN3_4B_WIDTH, tag: str = "qwen3") -> Any:
    """A tiny ``Qwen3ForCausalLM`` (tied embeddings, as Qwen3-4B's) with seeded random weights."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen3_tokenizer()
    tokenizer_size = len(tokenizer) if vocab_size is None else vocab_size
    config = Qwen3Config(vocab_size=tokenizer_size, hidden_size=width, intermediate_size=8, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
                         tie_word_embeddings=True, rms_norm_eps=1e-6, rope_parameters={"rope_type": "default",
                                                                                      "rope_theta": 1000000.0},
                         pad_token_id=tokenizer.pad_token_id, architectures=["Qwen3ForCausalLM"])
    model = _construct(lambda: Qwen3ForCausalLM(config), materialize=True, seed=seed, tag=tag)
    model.tie_weights()  # one embedding table: the random fill gave the tied pair two
    return model


def build_qwen3_encoder(dest: Path, *, seed: int = 0, tag: str = "qwen3") -> Path:
    """A standalone ``qwen3_encoder`` folder in InvokeAI's layout: ``text_encoder/`` and ``tokenizer/``."""
    dest = Path(dest)
    if dest.exists() and (dest.is_file() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} is not empty")
    tokenizer = qwen3_tokenizer()
    qwen3_encoder(seed, vocab_size=len(tokenizer), tag=tag).save_pretrained(dest / "text_encoder",
                                                                            safe_serialization=True)
    tokenizer.save_pretrained(dest / "tokenizer")
    return dest

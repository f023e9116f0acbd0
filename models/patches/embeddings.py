"""Textual-inversion embeddings for the span of one node, the way InvokeAI applies them for compel.

A prompt names an embedding as ``<name>`` (InvokeAI's trigger is the embedding model's name in angle brackets). For
the block, a *copy* of the tokenizer learns one new token per vector (``<name>``, then ``<name#1>``, ``<name#2>``...)
and the text encoder gets a larger token-embedding module whose extra rows are the vectors. InvokeAI's pad tokens
are ``<name-!pad-1>``, but with transformers 5 a tokenizer whose pad token is ``!`` (SDXL's second) splits those
apart; ``<name-1>`` could be another embedding's trigger (``bad-hands-5``). ``#`` is outside the trigger pattern.
On exit the original embedding module and ``config.vocab_size`` are put back, so the cached tokenizer and text
encoder are never left modified; the original rows are never written either.

Only ``<name>`` is written in prompts; compel asks the returned manager to expand it to all of its vector tokens.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch
from compel.embeddings_provider import BaseTextualInversionManager

__all__ = ["TextualInversionManager", "apply_embeddings", "embedding_vectors", "pad_trigger", "trigger_names_in"]

# InvokeAI's trigger pattern (invokeai/app/util/ti_utils.py).
_TRIGGER = re.compile(r"<([a-zA-Z0-9., _-]+)>")


def trigger_names_in(prompt: str) -> list[str]:
    """Embedding names written as ``<name>`` in ``prompt``, first occurrence order, without duplicates."""
    return list(dict.fromkeys(_TRIGGER.findall(prompt)))


def pad_trigger(name: str, index: int) -> str:
    """Token of vector ``index`` of embedding ``name``: ``<name>`` for the first, ``<name#i>`` after."""
    return f"<{name}>" if index == 0 else f"<{name}#{index}>"


def embedding_vectors(state_dict: Mapping[str, Any], target: Literal["clip_l", "clip_g"] | None = None) -> torch.Tensor:
    """The ``(tokens, width)`` vectors of a textual-inversion file's tensors.

    ``target`` picks the SDXL half (``clip_l`` for text_encoder, ``clip_g`` for text_encoder_2) and must be given for
    SDXL files and only for them. Other formats: ``string_to_param`` (A1111 ``.pt``, nested or flattened; first
    token only, like InvokeAI), ``emb_params`` (safetensors), and diffusers' ``{token: vector}``.
    """
    sdxl = "clip_l" in state_dict or "clip_g" in state_dict
    if target is not None or sdxl:
        if target is None:
            raise ValueError("SDXL embedding (clip_l/clip_g): pass target='clip_l' or 'clip_g'")
        if target not in ("clip_l", "clip_g"):
            raise ValueError(f"unknown embedding target {target!r}")
        if target not in state_dict:
            raise ValueError(f"embedding has no {target!r} vectors (keys: {sorted(state_dict)})")
        vectors = state_dict[target]
    elif "string_to_param" in state_dict:
        vectors = next(iter(state_dict["string_to_param"].values()))
    elif flat := [k for k in state_dict if k.startswith("string_to_param.")]:
        vectors = state_dict[flat[0]]
    elif "emb_params" in state_dict:
        vectors = state_dict["emb_params"]
    elif len(tensors := [v for v in state_dict.values() if isinstance(v, torch.Tensor)]) == 1:
        vectors = tensors[0]
    else:
        raise ValueError(f"unrecognised textual-inversion format (keys: {sorted(state_dict)[:8]})")
    if not isinstance(vectors, torch.Tensor) or vectors.ndim not in (1, 2) or vectors.numel() == 0:
        raise ValueError("textual-inversion vectors must be a non-empty 1-D or 2-D tensor")
    return vectors if vectors.ndim == 2 else vectors.unsqueeze(0)


class TextualInversionManager(BaseTextualInversionManager):
    """Tells compel that ``<name>`` stands for all of the embedding's vector tokens."""

    def __init__(self) -> None:
        self.pad_tokens: dict[int, list[int]] = {}  # first token id -> the other vector token ids

    def expand_textual_inversion_token_ids_if_necessary(self, token_ids: list[int]) -> list[int]:
        """Insert the pad tokens after each multi-vector trigger. compel strips BOS/EOS before and truncates after."""
        if not self.pad_tokens:
            return token_ids
        out: list[int] = []
        for token_id in token_ids:
            out.append(token_id)
            out.extend(self.pad_tokens.get(token_id, ()))
        return out


@contextmanager
def apply_embeddings(
    tokenizer: Any, text_encoder: torch.nn.Module, embeddings: Mapping[str, torch.Tensor]
) -> Iterator[tuple[Any, TextualInversionManager]]:
    """Yield ``(tokenizer copy with the triggers, manager for compel)`` while ``text_encoder`` knows the vectors.

    ``embeddings`` maps a name (without brackets) to its ``(tokens, width)`` vectors for this text encoder. The
    caller's tokenizer is never modified: pass the yielded one to compel along with the manager.
    """
    manager = TextualInversionManager()
    if not embeddings:
        yield tokenizer, manager
        return
    original = text_encoder.get_input_embeddings()
    weight = original.weight
    width, known = weight.shape[1], len(tokenizer)
    # CLIPTokenizer cannot forget added tokens, so work on a copy; a pickle round trip is far faster than deepcopy.
    patched = pickle.loads(pickle.dumps(tokenizer))
    triggers: dict[str, torch.Tensor] = {}  # every vector token -> its vector
    for name, vectors in embeddings.items():
        if vectors.ndim != 2 or not len(vectors) or vectors.shape[1] != width:
            raise ValueError(
                f"embedding {name!r} has vectors of shape {tuple(vectors.shape)}, but this text encoder's tokens are "
                f"{width} wide (an embedding for another base or text encoder?)"
            )
        triggers |= {pad_trigger(name, index): vector for index, vector in enumerate(vectors)}
    patched.add_tokens(list(triggers))
    # Checked once all are added: triggers match case-insensitively, and which of two clashing tokens wins varies
    # from process to process, so a clash shows up as some trigger not tokenizing to its own new id.
    token_of: dict[str, int] = {}
    for trigger in triggers:
        token_ids = patched.encode(trigger, add_special_tokens=False)
        if len(token_ids) != 1 or token_ids[0] != patched.convert_tokens_to_ids(trigger) or token_ids[0] < known:
            raise ValueError(f"trigger {trigger!r} clashes with another token of the tokenizer (triggers ignore "
                             f"case); it tokenizes to {token_ids}")
        token_of[trigger] = token_ids[0]
    for name, vectors in embeddings.items():
        if len(vectors) > 1:
            manager.pad_tokens[token_of[pad_trigger(name, 0)]] = [token_of[pad_trigger(name, i)]
                                                                  for i in range(1, len(vectors))]
    new_ids = list(token_of.values())
    rows = list(triggers.values())
    rows_before = weight.shape[0]
    with torch.no_grad():
        table = weight.new_zeros((max(rows_before, max(new_ids) + 1), width))
        table[:rows_before] = weight
        table[new_ids] = torch.stack(rows).to(weight.device, weight.dtype)
    grown = torch.nn.Embedding.from_pretrained(table, freeze=not weight.requires_grad, padding_idx=original.padding_idx)
    config = getattr(text_encoder, "config", None)
    vocab_size = getattr(config, "vocab_size", None)
    try:
        text_encoder.set_input_embeddings(grown)
        if vocab_size is not None:
            config.vocab_size = table.shape[0]
        yield patched, manager
    finally:
        text_encoder.set_input_embeddings(original)
        if vocab_size is not None:
            config.vocab_size = vocab_size

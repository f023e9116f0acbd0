"""The GLM prompt encoding InvokeAI's ``cogview4_text_encoder`` stores (the same as ``CogView4Pipeline``'s): the prompt
tokenized with GLM's ``[gMASK] <sop>`` prefix, truncated to 1,024 tokens, padded on the left with the pad token to a
multiple of 16 tokens, and the hidden states of GLM's second-to-last layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import torch

MAX_SEQ_LEN = 1024  # InvokeAI's COGVIEW4_GLM_MAX_SEQ_LEN, diffusers' default
TOKEN_MULTIPLE = 16


def encode_glm(tokenizer: Any, encoder: Any, prompt: str, max_seq_len: int = MAX_SEQ_LEN,
               warn: Optional[Callable[[str], None]] = None) -> "torch.Tensor":
    """``(1, tokens, width)`` GLM embeddings of ``prompt``; ``warn`` hears which words were cut off."""
    import torch

    ids = tokenizer([prompt], padding="longest", max_length=max_seq_len, truncation=True, add_special_tokens=True,
                    return_tensors="pt").input_ids
    whole = tokenizer([prompt], padding="longest", return_tensors="pt").input_ids
    if warn is not None and whole.shape[-1] > ids.shape[-1]:
        cut = tokenizer.batch_decode(whole[:, max_seq_len - 1:-1])
        warn(f"the prompt was truncated to {max_seq_len} tokens; this part was dropped: {cut}")
    pad = (TOKEN_MULTIPLE - ids.shape[1] % TOKEN_MULTIPLE) % TOKEN_MULTIPLE
    if pad:
        ids = torch.cat([torch.full((ids.shape[0], pad), tokenizer.pad_token_id, dtype=ids.dtype), ids], dim=1)
    device = next(encoder.parameters()).device
    with torch.no_grad():
        return encoder(ids.to(device), output_hidden_states=True).hidden_states[-2]

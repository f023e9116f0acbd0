"""FLUX.1's prompt encoding, as InvokeAI's ``flux_text_encoder`` stores it: T5's last hidden state over the prompt
padded to the variant's sequence length (256 schnell, 512 dev), and CLIP-L's pooled output over 77 tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MAX_SEQ_LENS = (256, 512)


@dataclass
class FluxConditioning:
    """InvokeAI's FLUXConditioningInfo: ``t5_embeds`` (1, seq, 4096) and ``clip_embeds`` (1, 768)."""

    t5_embeds: "torch.Tensor"
    clip_embeds: "torch.Tensor"


def encode_t5(tokenizer: Any, encoder: Any, prompt: str, max_seq_len: int) -> "torch.Tensor":
    import torch

    if max_seq_len not in MAX_SEQ_LENS:
        raise ValueError(f"t5_max_seq_len {max_seq_len}: expected 256 (schnell) or 512 (dev)")
    tokens = tokenizer([prompt], truncation=True, max_length=max_seq_len, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        return encoder(input_ids=tokens.input_ids.to(encoder.device), output_hidden_states=False).last_hidden_state


def encode_clip(tokenizer: Any, encoder: Any, prompt: str) -> "torch.Tensor":
    import torch

    tokens = tokenizer([prompt], truncation=True, max_length=tokenizer.model_max_length, padding="max_length",
                       return_tensors="pt")
    with torch.no_grad():
        return encoder(input_ids=tokens.input_ids.to(encoder.device), output_hidden_states=False).pooler_output

"""FLUX.2 Klein's prompt encoding, as InvokeAI's ``flux2_klein_text_encoder`` (and diffusers' Flux2KleinPipeline) do
it: the prompt as one user turn of Qwen3's chat template with thinking switched off, padded to the node's length,
through the Qwen3 encoder; hidden states 9, 18 and 27 (past the encoder's last: its last) side by side per token.
InvokeAI also stores the mean of the last hidden state over the prompt's real tokens (its "pooled" embedding, which
the FLUX.2 transformer does not read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

KLEIN_LAYERS = (9, 18, 27)
KIND = "flux2"  # the ``kind`` in a saved conditioning's metadata


@dataclass
class Flux2Conditioning:
    """One prompt's embeddings: ``(1, tokens, 3 * width)`` for the transformer, and the pooled ``(1, width)``."""

    embeds: "torch.Tensor"
    pooled: "torch.Tensor"


def chat_text(tokenizer: Any, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False)


def encode_klein(tokenizer: Any, encoder: Any, prompt: str, max_seq_len: int) -> Flux2Conditioning:
    import torch

    inputs = tokenizer(chat_text(tokenizer, prompt), return_tensors="pt", padding="max_length", truncation=True,
                       max_length=max_seq_len)
    device = encoder.device
    input_ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
    with torch.no_grad():
        # the causal LM's body: its hidden states are the whole model's, without computing the logits
        body = getattr(encoder, "model", encoder)
        hidden = body(input_ids=input_ids, attention_mask=mask, output_hidden_states=True,
                      use_cache=False).hidden_states
    layers = [hidden[min(index, len(hidden) - 1)] for index in KLEIN_LAYERS]
    stacked = torch.stack(layers, dim=1).to(dtype=encoder.dtype)
    batch, channels, length, width = stacked.shape
    embeds = stacked.permute(0, 2, 1, 3).reshape(batch, length, channels * width)
    last = hidden[-1]
    weights = mask.unsqueeze(-1).expand_as(last).float()
    pooled = (last * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    return Flux2Conditioning(embeds=embeds, pooled=pooled)

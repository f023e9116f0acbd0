"""FLUX.2's prompt encoding.

- Klein, as InvokeAI's ``flux2_klein_text_encoder`` (and diffusers' Flux2KleinPipeline) do it: the prompt as one user
  turn of Qwen3's chat template with thinking switched off, padded to the node's length, through the Qwen3 encoder;
  hidden states 9, 18 and 27 (past the encoder's last: its last) side by side per token. InvokeAI also stores the
  mean of the last hidden state over the prompt's real tokens (its "pooled" embedding, which the FLUX.2 transformer
  does not read).
- [dev], as InvokeAI's ``flux2_dev_text_encoder`` and diffusers' Flux2Pipeline do it: BFL's system message (diffusers'
  constant) and the prompt as a system and a user turn of Mistral's chat template (``[SYSTEM_PROMPT]...[INST]...``),
  padded on the left to the node's length, through the Mistral Small 3.1 language model with the padding masked;
  hidden states 10, 20 and 30 side by side per token (15,360 wide). There is no pooled embedding: InvokeAI stores a
  zero in its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

KLEIN_LAYERS = (9, 18, 27)
DEV_LAYERS = (10, 20, 30)
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


class EncoderTooShallow(ValueError):
    """A [dev] text encoder with fewer layers than the hidden states FLUX.2 [dev] reads."""


def dev_messages(prompt: str) -> list[dict[str, Any]]:
    """BFL's system message and the prompt, as the two turns Flux2Pipeline gives the chat template (diffusers strips
    ``[IMG]`` from a prompt: a processor counts image tokens)."""
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM_MESSAGE}]},
            {"role": "user", "content": [{"type": "text", "text": prompt.replace("[IMG]", "")}]}]


def encode_dev(tokenizer: Any, encoder: Any, prompt: str, max_seq_len: int) -> Flux2Conditioning:
    """``(1, tokens, 3 * 5120)`` embeddings of ``prompt`` for FLUX.2 [dev] (``pooled`` is a zero, as InvokeAI's)."""
    import torch

    from invokeai_provider.models.text_encoders.mistral import text_body

    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a Pixtral processor's own tokenizer
    inputs = tokenizer.apply_chat_template([dev_messages(prompt)], add_generation_prompt=False, tokenize=True,
                                           return_dict=True, return_tensors="pt", padding="max_length",
                                           padding_side="left", truncation=True, max_length=max_seq_len)
    body = text_body(encoder)
    device = next(body.parameters()).device
    input_ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
    with torch.no_grad():
        hidden = body(input_ids=input_ids, attention_mask=mask, output_hidden_states=True,
                      use_cache=False).hidden_states
    if len(hidden) - 1 < max(DEV_LAYERS):
        raise EncoderTooShallow(f"the Mistral encoder has {len(hidden) - 1} layers; FLUX.2 [dev] reads hidden states "
                                f"{', '.join(map(str, DEV_LAYERS))} (Mistral Small 3 has 30 or 40 layers)")
    embeds = torch.cat([hidden[index] for index in DEV_LAYERS], dim=-1).to(dtype=encoder.dtype)
    return Flux2Conditioning(embeds=embeds, pooled=torch.zeros(1, dtype=embeds.dtype, device=embeds.device))

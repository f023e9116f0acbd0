"""Z-Image's prompt encoding, as InvokeAI's ``z_image_text_encoder`` and diffusers' ZImagePipeline do it: the prompt
wrapped in Qwen3's chat template (a user turn, the assistant's opened), padded to 512 tokens, and the encoder's
second-to-last hidden state at the real (unpadded) tokens: a ``(tokens, width)`` tensor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch

MAX_SEQ_LEN = 512


def chat_prompt(tokenizer: Any, prompt: str) -> str:
    """The prompt as Qwen3's chat template writes a user turn followed by the assistant's (thinking left on, as
    diffusers asks for it); a tokenizer without a template gets the bare prompt, as InvokeAI falls back."""
    try:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=True)
    except (AttributeError, TypeError, ValueError):
        return prompt


def encode(tokenizer: Any, encoder: Any, prompt: str, max_seq_len: int = MAX_SEQ_LEN
           ) -> tuple["torch.Tensor", Optional[str]]:
    """``(embeddings, truncated text)``: the prompt's ``(tokens, width)`` embeddings in float32 on the CPU, and the
    text cut off beyond ``max_seq_len`` tokens (None when it all fit)."""
    import torch

    text = chat_prompt(tokenizer, prompt)
    tokens = tokenizer(text, padding="max_length", max_length=max_seq_len, truncation=True,
                       return_attention_mask=True, return_tensors="pt")
    whole = tokenizer(text, padding="longest", return_tensors="pt").input_ids
    truncated = None
    if whole.shape[-1] > max_seq_len:
        truncated = tokenizer.batch_decode(whole[:, max_seq_len - 1:-1])[0]
    device = next(encoder.parameters()).device
    mask = tokens.attention_mask.to(device).bool()
    with torch.no_grad():
        hidden = encoder(input_ids=tokens.input_ids.to(device), attention_mask=mask,
                         output_hidden_states=True).hidden_states
    if hidden is None or len(hidden) < 2:
        raise ValueError("the Qwen3 encoder returned fewer than 2 hidden states; Z-Image reads the second-to-last")
    return hidden[-2][0][mask[0]].float().cpu(), truncated

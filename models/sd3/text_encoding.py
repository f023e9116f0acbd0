"""SD3's prompt encoding as InvokeAI's ``sd3_text_encoder`` stores it and ``sd3_denoise`` reads it.

Each CLIP (L and G, both with their text projection) gives its penultimate hidden state over 77 tokens and its
projected pooled output; T5 gives its last hidden state over 256 tokens, or nothing when no T5 is connected (SD3
was trained with text-encoder dropout). The transformer then sees the two CLIP states side by side, padded with
zeros to T5's width, followed by T5's tokens (256 zero tokens without T5, as InvokeAI does), and the two pooled
outputs side by side: what ``StableDiffusion3Pipeline.encode_prompt`` builds from the same encoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch

T5_MAX_SEQ_LEN = 256  # InvokeAI's SD3_T5_MAX_SEQ_LEN (diffusers' default)
CLIP_MAX_LEN = 77
KIND = "sd3"  # the ``kind`` in a saved conditioning's metadata
PROJECTION_KEY = "text_projection.weight"


@dataclass
class SD3Conditioning:
    """InvokeAI's SD3ConditioningInfo: CLIP-L/G states ``(1, 77, w)`` and pooled ``(1, w)``, T5 ``(1, 256, 4096)``."""

    clip_l_embeds: "torch.Tensor"
    clip_l_pooled_embeds: "torch.Tensor"
    clip_g_embeds: "torch.Tensor"
    clip_g_pooled_embeds: "torch.Tensor"
    t5_embeds: Optional["torch.Tensor"] = None

    def to_dict(self) -> dict[str, "torch.Tensor"]:
        tensors = {name: getattr(self, name).detach().float().cpu() for name in
                   ("clip_l_embeds", "clip_l_pooled_embeds", "clip_g_embeds", "clip_g_pooled_embeds")}
        if self.t5_embeds is not None:
            tensors["t5_embeds"] = self.t5_embeds.detach().float().cpu()
        return tensors

    @classmethod
    def from_dict(cls, tensors: dict[str, "torch.Tensor"]) -> "SD3Conditioning":
        missing = [name for name in ("clip_l_embeds", "clip_l_pooled_embeds", "clip_g_embeds", "clip_g_pooled_embeds")
                   if name not in tensors]
        if missing:
            raise ValueError(f"not an SD3 conditioning (no {', '.join(missing)})")
        return cls(tensors["clip_l_embeds"], tensors["clip_l_pooled_embeds"], tensors["clip_g_embeds"],
                   tensors["clip_g_pooled_embeds"], tensors.get("t5_embeds"))


def load_projected_clip(folder: Path, dtype: Any, what: str) -> Any:
    """A CLIP text encoder with its projection (``CLIPTextModelWithProjection``), as SD3 needs CLIP-L and CLIP-G;
    a folder saved without the projection is refused rather than given a random one."""
    from safetensors import safe_open

    from invokeai_provider.models.model_manager.manager import ModelLoadError

    weights = sorted(Path(folder).glob("*.safetensors"))
    keys: set[str] = set()
    for weight in weights:
        with safe_open(str(weight), framework="pt") as handle:
            keys.update(handle.keys())
    if not any(key.endswith(PROJECTION_KEY) for key in keys):
        raise ModelLoadError(f"{what}: its CLIP text encoder has no {PROJECTION_KEY} (saved without its "
                             "projection); SD3 needs the projected pooled output: install a CLIP embed saved as "
                             "CLIPTextModelWithProjection (SD3's text_encoder or text_encoder_2 folder)")
    from transformers import CLIPTextModelWithProjection

    return CLIPTextModelWithProjection.from_pretrained(folder, local_files_only=True, torch_dtype=dtype).eval()


def encode_clip(tokenizer: Any, encoder: Any, prompt: str) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(penultimate hidden state ``(1, 77, w)``, projected pooled output ``(1, w)``) of one CLIP."""
    import torch

    if not hasattr(encoder, "text_projection"):
        raise ValueError(f"SD3 needs a CLIP text encoder with its projection, got {type(encoder).__name__}")
    tokens = tokenizer([prompt], padding="max_length", max_length=CLIP_MAX_LEN, truncation=True,
                       return_tensors="pt")
    with torch.no_grad():
        out = encoder(input_ids=tokens.input_ids.to(encoder.device), output_hidden_states=True)
    return out.hidden_states[-2], out[0]


def encode_t5(tokenizer: Any, encoder: Any, prompt: str, max_seq_len: int = T5_MAX_SEQ_LEN) -> "torch.Tensor":
    """T5's last hidden state over the prompt padded to ``max_seq_len`` tokens."""
    import torch

    tokens = tokenizer([prompt], padding="max_length", max_length=max_seq_len, truncation=True,
                       add_special_tokens=True, return_tensors="pt")
    with torch.no_grad():
        return encoder(tokens.input_ids.to(encoder.device))[0]


def truncated(tokenizer: Any, prompt: str, max_len: int) -> bool:
    """Whether the prompt has more tokens than ``max_len`` (its end is then dropped)."""
    return len(tokenizer(prompt).input_ids) > max_len


def transformer_inputs(conditioning: SD3Conditioning, joint_attention_dim: int, *, device: Any = "cpu",
                       dtype: Any = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(``encoder_hidden_states`` ``(1, 77 + 256, joint_attention_dim)``, ``pooled_projections``) for the
    transformer, built as InvokeAI's sd3_denoise builds them."""
    import torch
    import torch.nn.functional as F

    def moved(tensor: "torch.Tensor") -> "torch.Tensor":
        return tensor.to(device=device, dtype=dtype or torch.float32)

    t5 = conditioning.t5_embeds
    t5 = moved(t5) if t5 is not None else torch.zeros((1, T5_MAX_SEQ_LEN, joint_attention_dim), device=device,
                                                      dtype=dtype or torch.float32)
    clip = torch.cat([moved(conditioning.clip_l_embeds), moved(conditioning.clip_g_embeds)], dim=-1)
    if clip.shape[-1] > t5.shape[-1]:
        raise ValueError(f"the CLIP states are {clip.shape[-1]} wide together, wider than the T5 states "
                         f"({t5.shape[-1]})")
    clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    pooled = torch.cat([moved(conditioning.clip_l_pooled_embeds), moved(conditioning.clip_g_pooled_embeds)], dim=-1)
    return torch.cat([clip, t5], dim=-2), pooled

"""A tiny random FLUX.1 Control LoRA for the tiny FLUX transformer, in Black Forest Labs' format (the one of
``flux1-canny-dev-lora.safetensors``): every linear layer by BFL's name with ``lora_A.weight``, ``lora_B.weight``
and ``lora_B.bias``, ``img_in`` taking 128 input channels (the image's 64 and the control image's 64), and full
``.scale`` weights for each attention's query and key RMS norms (16 wide: one head)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from invokeai_provider.models.testing.tiny_flux import CLIP_WIDTH, _WIDTH, _bfl_lora_layers

if TYPE_CHECKING:
    import torch

__all__ = ["build_flux_control_lora", "flux_control_lora_state"]

HEAD_WIDTH = 16  # the tiny transformer's attention_head_dim
TIME_WIDTH = 256  # the sinusoidal timestep (and guidance) projection diffusers feeds the embedders


def _layers() -> dict[str, tuple[int, int]]:
    """(fan_out, fan_in) of each patched layer: the tiny transformer's, with ``img_in`` 128 wide, and its
    timestep, guidance and pooled-text embedders."""
    w = _WIDTH
    layers = _bfl_lora_layers() | {"img_in": (w, 128)}
    for embedder, fan_in in (("time_in", TIME_WIDTH), ("guidance_in", TIME_WIDTH), ("vector_in", CLIP_WIDTH)):
        layers |= {f"{embedder}.in_layer": (w, fan_in), f"{embedder}.out_layer": (w, w)}
    return layers


def flux_control_lora_state(*, rank: int = 4, seed: int = 0) -> dict[str, "torch.Tensor"]:
    """The tensors of the tiny Control LoRA (float32): small LoRA factors and biases, norm scales near 1."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape: int, bound: float) -> torch.Tensor:
        return torch.empty(*shape).uniform_(-bound, bound, generator=generator)

    state: dict[str, torch.Tensor] = {}
    for name, (fan_out, fan_in) in _layers().items():
        state[f"{name}.lora_A.weight"] = uniform(rank, fan_in, bound=fan_in ** -0.5)
        state[f"{name}.lora_B.weight"] = uniform(fan_out, rank, bound=0.5)
        state[f"{name}.lora_B.bias"] = uniform(fan_out, bound=0.1)
    norms = [f"double_blocks.0.{stream}_attn.norm" for stream in ("img", "txt")] + ["single_blocks.0.norm"]
    for norm in norms:
        for which in ("query_norm", "key_norm"):
            state[f"{norm}.{which}.scale"] = 1.0 + uniform(HEAD_WIDTH, bound=0.2)
    return state


def build_flux_control_lora(dest: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """The tiny Control LoRA as a new ``.safetensors`` file."""
    from safetensors.torch import save_file

    dest = Path(dest)
    if dest.suffix != ".safetensors" or dest.exists():
        raise ValueError(f"{dest}: expected a new .safetensors file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(flux_control_lora_state(rank=rank, seed=seed), str(dest))
    return dest

"""Tiny LyCORIS LoRA files (LoHa, LoKr, or LoRA/LoHa/LoKr mixed) for tests and demos.

They patch the same layers under the same kohya names as `tiny.build_lora`'s kohya file (``lora_unet_``,
``lora_te_`` / SDXL ``lora_te1_``, ``lora_te2_``, SGM UNet names for SDXL), so the prober and the patcher see what
LyCORIS' trainers write: ``hada_w1_a``/``hada_w1_b``/``hada_w2_a``/``hada_w2_b`` and ``lokr_w1`` or
``lokr_w1_a``/``lokr_w1_b`` with ``lokr_w2`` or ``lokr_w2_a``/``lokr_w2_b``, each layer with its ``alpha``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from invokeai_provider.models.testing.tiny import build_lora

if TYPE_CHECKING:
    import torch

LycorisKind = Literal["loha", "lokr", "mixed"]

__all__ = ["LycorisKind", "build_lycoris_lora", "loha_factors", "lokr_factors"]


def _small_divisor(n: int) -> int:
    """The smallest divisor of ``n`` above 1 (``n`` itself when prime): LoKr's small ``w1`` side."""
    return next((d for d in range(2, n) if n % d == 0), n)


def loha_factors(out_features: int, in_features: int, rank: int, generator: "torch.Generator",
                 scale: float = 0.1) -> "dict[str, torch.Tensor]":
    """LoHa factors for a linear layer: ``w1_a @ w1_b`` of about ``scale`` per entry, ``w2_a @ w2_b`` about 1."""
    import torch

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return {"hada_w1_a": randn(out_features, rank) * scale, "hada_w1_b": randn(rank, in_features) * rank**-0.5,
            "hada_w2_a": randn(out_features, rank), "hada_w2_b": randn(rank, in_features) * rank**-0.5}


def lokr_factors(out_features: int, in_features: int, rank: int, generator: "torch.Generator", *,
                 factored_w1: bool, scale: float = 0.1) -> "dict[str, torch.Tensor]":
    """LoKr factors for a linear layer: a small ``w1`` (whole, or ``w1_a @ w1_b`` when ``factored_w1``) and a large
    ``w2`` (the other way round), their Kronecker product of about ``scale`` per entry."""
    import torch

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    a, b = _small_divisor(out_features), _small_divisor(in_features)
    c, d = out_features // a, in_features // b
    if factored_w1:
        return {"lokr_w1_a": randn(a, rank), "lokr_w1_b": randn(rank, b) * rank**-0.5, "lokr_w2": randn(c, d) * scale}
    return {"lokr_w1": randn(a, b), "lokr_w2_a": randn(c, rank) * scale, "lokr_w2_b": randn(rank, d) * rank**-0.5}


def build_lycoris_lora(base: str, dest: Path, *, kind: LycorisKind = "loha", rank: int = 4, seed: int = 0) -> Path:
    """Write a kohya-named LyCORIS ``.safetensors`` file at ``dest`` for ``base`` (sd-1, sd-2, sdxl).

    ``kind`` ``mixed`` cycles the layers through LoRA (``tiny.build_lora``'s own matrices), LoHa and LoKr. LoKr
    layers alternate between a factored ``w2`` and a factored ``w1``. ``alpha`` is half the rank (scale 0.5)."""
    import torch
    from safetensors.torch import load_file, save_file

    if Path(dest).suffix != ".safetensors":
        raise ValueError(f"LyCORIS LoRA destination must end with .safetensors, got {Path(dest).name}")
    if Path(dest).exists():
        raise FileExistsError(f"{dest} already exists")
    if kind not in ("loha", "lokr", "mixed"):
        raise ValueError(f"unknown LyCORIS kind {kind!r}; expected loha, lokr or mixed")
    with tempfile.TemporaryDirectory(prefix="tiny-lycoris-") as tmp:
        lora = load_file(str(build_lora(base, Path(tmp) / "lora.safetensors", style="kohya", rank=rank, seed=seed)))
    generator = torch.Generator().manual_seed(seed * 1000 + {"loha": 1, "lokr": 2, "mixed": 3}[kind])
    stems = sorted(key.removesuffix(".lora_down.weight") for key in lora if key.endswith(".lora_down.weight"))
    tensors: dict[str, torch.Tensor] = {}
    for index, stem in enumerate(stems):
        rank_, fan_in = lora[f"{stem}.lora_down.weight"].shape
        fan_out = lora[f"{stem}.lora_up.weight"].shape[0]
        layer_kind = ("lora", "loha", "lokr")[index % 3] if kind == "mixed" else kind
        if layer_kind == "lora":
            parts = {"lora_down.weight": lora[f"{stem}.lora_down.weight"],
                     "lora_up.weight": lora[f"{stem}.lora_up.weight"]}
        elif layer_kind == "loha":
            parts = loha_factors(fan_out, fan_in, rank_, generator)
        else:
            parts = lokr_factors(fan_out, fan_in, rank_, generator, factored_w1=bool(index % 2))
        tensors |= {f"{stem}.{role}": value.contiguous() for role, value in parts.items()}
        tensors[f"{stem}.alpha"] = torch.tensor(rank_ / 2)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest), metadata={"format": "pt", "ss_network_module": "lycoris.kohya"})
    return Path(dest)

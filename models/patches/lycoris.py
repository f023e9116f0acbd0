"""The maths of each LoRA layer kind the patcher applies: what a layer adds to its module's parameters.

A layer's tensors arrive keyed by role (the key's tail: ``up``/``down``/``mid`` for LoRA, LyCORIS' own names for the
rest). Kinds are told apart in LyCORIS' (and InvokeAI's) order:

* ``dora``: a LoRA with ``dora_scale``: the patched weight ``W + s*up@down`` is renormalised per input column to
  ``dora_scale``; it adds the difference to ``W`` (the module's weight as the LoRAs before it left it).
* ``lora`` (LoCon): ``up @ down``, or with ``mid`` the Tucker form ``einsum(mid, up, down)`` for convolutions.
* ``loha``: ``(w1_a @ w1_b) * (w2_a @ w2_b)`` elementwise; with ``hada_t1``/``hada_t2`` each product is rebuilt from
  its Tucker core (conv kernels), and the ``a`` factors are then stored ``(rank, out)``.
* ``lokr``: ``kron(w1, w2)``; each factor is stored whole or as ``a @ b``, ``w2`` optionally as a Tucker core
  ``lokr_t2`` with ``(rank, out)``/``(rank, in)`` factors. A 4-D ``w2`` (conv kernel) gets a 1x1 ``w1``.
* ``full``: ``diff`` (and ``diff_b`` for the bias) added as they are.
* ``norm``: ``w_norm``/``b_norm`` added to a normalisation layer's scale and shift.

The LoRA-like kinds are scaled by ``alpha / rank``, rank being the inner width of the ``down``/``b`` factor (LoKr:
``w1_b``'s, else ``w2_b``'s, else no scaling); without ``alpha`` the scale is 1. Their optional sparse bias
(``bias_indices``/``bias_values``/``bias_size``) is scaled the same. IA3 layers (``on_input``) and DoRA on LoHa or
LoKr layers (which InvokeAI does not apply either) are refused.

``row_index`` is no file format's: the FLUX converter adds it when one LoHa/LoKr/full layer of a fused BFL layer
(``qkv``, ``linear1``) stands for several diffusers layers; each of them takes those rows of the whole update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where the maths runs: the FLUX converter reads ROLES without it
    import torch

__all__ = ["ROLES", "kind_of", "param_deltas", "scale_of", "update_shape"]

_BIAS = frozenset({"bias_indices", "bias_values", "bias_size"})
_HADA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
_LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
# Roles each kind may carry; "alpha" is accepted (and unused) everywhere, as trainers write it for every layer.
_ALLOWED: dict[str, frozenset[str]] = {
    "dora": frozenset({"up", "down", "dora_scale", "alpha"}) | _BIAS,
    "lora": frozenset({"up", "down", "mid", "alpha"}) | _BIAS,
    "loha": frozenset({*_HADA, "hada_t1", "hada_t2", "alpha", "row_index"}) | _BIAS,
    "lokr": frozenset({*_LOKR, "alpha", "row_index"}) | _BIAS,
    "full": frozenset({"diff", "diff_b", "alpha", "row_index"}),
    "norm": frozenset({"w_norm", "b_norm", "alpha"}),
}
# LyCORIS key tails (``<layer>.<role>``) beyond the LoRA suffixes the key parser knows itself.
ROLES: tuple[str, ...] = (*_HADA, "hada_t1", "hada_t2", *_LOKR, "dora_scale", "diff", "diff_b", "w_norm", "b_norm",
                          *sorted(_BIAS), "on_input", "row_index")


def kind_of(parts: Mapping[str, torch.Tensor]) -> str:
    """The layer kind of a layer's roles; raises ValueError for incomplete, mixed or unsupported layers."""
    roles = set(parts)
    if "on_input" in roles:
        raise ValueError("is an IA3 layer (on_input), which is not supported")
    if "dora_scale" in roles and roles & {*_HADA, *_LOKR}:
        raise ValueError("is a LoHa/LoKr layer with a DoRA scale (dora_scale), which is not supported")
    if "dora_scale" in roles:
        kind, need = "dora", ["up", "down"]
    elif roles & {"up", "down"}:
        kind, need = "lora", ["up", "down"]
    elif roles & {*_HADA, "hada_t1", "hada_t2"}:
        kind, need = "loha", list(_HADA)
    elif roles & set(_LOKR):
        kind, need = "lokr", []
        for factor in ("lokr_w1", "lokr_w2"):
            whole, pair = factor in roles, {f"{factor}_a", f"{factor}_b"} & roles
            if whole == bool(pair) or len(pair) == 1:
                raise ValueError(f"needs either {factor} or both {factor}_a and {factor}_b")
        if "lokr_t2" in roles and "lokr_w2" in roles:
            raise ValueError("has lokr_t2 without the lokr_w2_a/lokr_w2_b factors it combines")
    elif "diff" in roles or "diff_b" in roles:
        kind, need = "full", ["diff"]
    elif "w_norm" in roles or "b_norm" in roles:
        kind, need = "norm", ["w_norm"]
    else:
        raise ValueError("has no weight factors (alpha or bias alone)")
    missing = [role for role in need if role not in roles]
    if kind == "loha" and ("hada_t1" in roles) != ("hada_t2" in roles):
        missing.append("hada_t2" if "hada_t1" in roles else "hada_t1")
    if missing:
        raise ValueError(f"is a {kind} layer that lacks {', '.join(missing)}")
    if extra := roles - _ALLOWED[kind]:
        raise ValueError(f"mixes {kind} factors with {', '.join(sorted(extra))}")
    if roles & _BIAS and not _BIAS <= roles:
        raise ValueError(f"needs all of {', '.join(sorted(_BIAS))} for a sparse bias")
    return kind


def scale_of(kind: str, parts: Mapping[str, torch.Tensor]) -> float:
    """``alpha / rank`` for the LoRA-like kinds (1 without alpha or rank); 1 for ``full`` and ``norm``."""
    if "alpha" not in parts or kind in ("full", "norm"):
        return 1.0
    if kind in ("lora", "dora"):
        rank = parts["down"].shape[0]
    elif kind == "loha":
        rank = parts["hada_w1_b"].shape[0]
    else:
        factor = next((parts[f] for f in ("lokr_w1_b", "lokr_w2_b") if f in parts), None)
        if factor is None:
            return 1.0
        rank = factor.shape[0]
    return float(parts["alpha"]) / rank


def _weight_delta(kind: str, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The unscaled weight update of a layer, in the factors' own layout (reshaped onto the module later)."""
    import torch

    if kind in ("lora", "dora"):
        if "mid" in p:
            up, down = p["up"].flatten(1), p["down"].flatten(1)
            return torch.einsum("m n w h, i m, n j -> i j w h", p["mid"], up, down)
        return p["up"].flatten(1) @ p["down"].flatten(1)
    if kind == "loha":
        if "hada_t1" in p:
            tucker = "i j k l, j r, i p -> p r k l"
            return (torch.einsum(tucker, p["hada_t1"], p["hada_w1_b"], p["hada_w1_a"])
                    * torch.einsum(tucker, p["hada_t2"], p["hada_w2_b"], p["hada_w2_a"]))
        return (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
    if kind == "lokr":
        w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
        if "lokr_w2" in p:
            w2 = p["lokr_w2"]
        elif "lokr_t2" in p:
            w2 = torch.einsum("i j k l, i p, j r -> p r k l", p["lokr_t2"], p["lokr_w2_a"], p["lokr_w2_b"])
        else:
            w2 = p["lokr_w2_a"] @ p["lokr_w2_b"]
        if w2.ndim == 4:
            w1 = w1.reshape(*w1.shape, 1, 1)
        return torch.kron(w1, w2.contiguous())
    return p["diff" if kind == "full" else "w_norm"]


def update_shape(kind: str, parts: Mapping[str, torch.Tensor]) -> torch.Size:
    """The shape of a layer's whole weight update in its factors' layout (worked out on meta tensors); raises
    ValueError when the factors do not combine."""
    import torch

    return _combined(kind, {role: t.to("meta", torch.float32) for role, t in parts.items()
                            if role not in _BIAS and role != "row_index"}).shape


def _combined(kind: str, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    try:
        return _weight_delta(kind, p)
    except RuntimeError as exc:  # factors whose shapes do not multiply
        shapes = ", ".join(f"{role} {tuple(t.shape)}" for role, t in sorted(p.items()) if t.ndim)
        raise ValueError(f"has factors that do not combine ({shapes}): {exc}") from None


def _sparse_bias(p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """LyCORIS' sparse COO bias as a dense float32 tensor, built where the file's tensors are (it is small);
    repeated indices add up, as in a coalesced COO tensor."""
    import torch

    indices = p["bias_indices"].long()
    size = [int(n) for n in p["bias_size"].flatten().tolist()]
    if indices.ndim != 2 or indices.shape[0] != len(size):
        raise ValueError(f"has bias_indices of shape {tuple(indices.shape)} for a bias of size {size}")
    try:
        return torch.zeros(size, dtype=torch.float32, device=indices.device).index_put_(
            tuple(indices), p["bias_values"].float().to(indices.device), accumulate=True)
    except (IndexError, RuntimeError) as exc:
        raise ValueError(f"has a sparse bias that does not fit its size {size}: {exc}") from None


def _rows(delta: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` of ``delta``; the index is checked as stored, since ``delta`` may be a meta tensor."""
    import torch

    if rows.ndim != 1 or (rows.numel() and not 0 <= int(rows.min()) <= int(rows.max()) < delta.shape[0]):
        raise ValueError(f"has a row_index outside the update's {delta.shape[0]} rows")
    return delta.index_select(0, rows.to(delta.device, torch.long))


def _fit(delta: torch.Tensor, param: torch.Tensor, what: str) -> torch.Tensor:
    """``delta`` reshaped onto ``param``: the same element count and output width (so a linear-shaped update fits
    a 1x1 conv and kohya's flattened conv factors fit their kernel)."""
    if delta.numel() != param.numel() or (param.ndim and delta.shape[0] != param.shape[0]):
        raise ValueError(f"makes a {what} update of shape {tuple(delta.shape)}, which does not fit the layer's "
                         f"{what} of shape {tuple(param.shape)}")
    return delta.reshape(param.shape)


def param_deltas(kind: str, parts: Mapping[str, torch.Tensor], scale: float,
                 params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 updates (before the user's weight) of the module parameters a layer touches, shaped like them; new
    tensors the caller may change in place.

    ``params`` are the module's current ``weight`` (and ``bias``) in float32 on the target device, or meta tensors
    of their shapes for a dry run that checks shapes; ``parts`` (the file's tensors, any device) are moved there.
    Raises ValueError when the factors do not combine or do not fit.
    """
    import torch

    weight = params["weight"]
    p = {role: t.to(weight.device, torch.float32) for role, t in parts.items()
         if role not in _BIAS and role != "row_index"}
    if kind not in ("full", "norm") and weight.ndim < 2:
        raise ValueError(f"is a {kind} layer for a layer whose weight is {weight.ndim}-D (a norm layer?)")
    rows = parts.get("row_index")
    delta = _combined(kind, p)
    if rows is not None:
        delta = _rows(delta, rows)
    out = {"weight": _fit(delta, weight, "weight")}
    if kind == "dora":
        patched = weight + out["weight"] * scale
        columns = patched.transpose(0, 1).reshape(patched.shape[1], -1).norm(dim=1)
        magnitude = p["dora_scale"]
        if magnitude.numel() != patched.shape[1] or (magnitude.ndim > 1 and magnitude.shape[0] != 1):
            raise ValueError(f"has a dora_scale of shape {tuple(magnitude.shape)}; expected one value per input "
                             f"channel ({patched.shape[1]})")
        ratio = (magnitude.flatten() / columns).reshape(1, -1, *[1] * (patched.ndim - 2))
        out["weight"] = patched * ratio - weight
    else:
        out["weight"] = out["weight"] * scale
    bias = p.get("diff_b", p.get("b_norm"))
    if bias is None and "bias_indices" in parts:
        bias = _sparse_bias(parts).to(weight.device)
    if bias is not None and rows is not None:
        bias = _rows(bias, rows)
    if bias is not None:
        if "bias" not in params:
            raise ValueError("has a bias update for a layer without a bias")
        out["bias"] = _fit(bias * scale, params["bias"], "bias")
    return out

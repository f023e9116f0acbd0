"""LoRA patching for the span of one node.

The model cache keeps a single loaded copy of each model and several runs share it, so a LoRA must never be baked
into cached weights: ``apply_loras`` adds ``weight * alpha/rank * up @ down`` to the touched parameters in place
(fast: no second model copy) and, on exit, copies the saved originals back bit for bit, exceptions included.
Besides LoRA (LoCon, with an optional Tucker ``lora_mid``), the LyCORIS kinds InvokeAI applies are understood under
any of the names below: DoRA, LoHa (``hada_*``), LoKr (``lokr_*``), full ``diff``/``diff_b`` and norm
``w_norm``/``b_norm`` layers, mixed freely within one file; their maths is in :mod:`.lycoris`.

Three key styles are understood (InvokeAI reads the same ones):

* kohya / sd-scripts: ``lora_unet_<path>`` / ``lora_te_`` (SD1/SD2) / ``lora_te1_``, ``lora_te2_`` (SDXL) with
  ``.lora_down.weight``, ``.lora_up.weight`` and an optional ``.alpha``. Module paths have ``.`` replaced by ``_``,
  which is ambiguous, so names are resolved against the model's own modules, never by guessing splits. SDXL UNet
  names are LDM/SGM paths (``input_blocks_4_1_transformer_blocks_0_attn2_to_k``) and are mapped to diffusers.
* diffusers: ``unet.<path>.lora.down.weight``, ``text_encoder.<path>.lora_linear_layer.down.weight`` and the older
  attention-processor form ``unet.<path>.processor.to_q_lora.down.weight``.
* PEFT: ``<owner>.<path>.lora_A.weight`` / ``.lora_B.weight``.

A GGUF-quantized layer (its weight diffusers' ``GGUFParameter``) is not patched: its update runs beside it as a
sidecar whose output is added to the layer's (`_sidecar`), as InvokeAI does for quantized layers.

FLUX.1 LoRAs (owner ``transformer``) arrive converted to diffusers' names by
`invokeai_provider.models.flux.lora_conversion`; only their kohya text-encoder keys (``lora_te1_`` CLIP-L,
``lora_te2_`` T5) and OneTrainer's ``lora_transformer_`` names are resolved here.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch

from invokeai_provider.models.patches import lycoris
from invokeai_provider.models.quantization.gguf import dequantized, is_quantized
from invokeai_provider.models.stable_diffusion.ldm_keys import unet_key_to_ldm

Target = Literal["unet", "transformer", "text_encoder", "text_encoder_2"]
LoraWeights = dict[str, torch.Tensor]

__all__ = ["LoraKeyError", "apply_loras", "load_lora_file"]

DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
_SDXL_BASES = ("sdxl", "sdxl-refiner")

# Key suffix -> role. Longest first so ".lora_linear_layer.down.weight" wins over shorter tails.
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_mid.weight", "mid"),
    (".lora_linear_layer.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"),
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".alpha", "alpha"),
    *((f".{role}", role) for role in lycoris.ROLES),
)
_PROCESSOR = re.compile(r"(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight")
_OWNERS: tuple[str, ...] = ("unet", "transformer", "text_encoder", "text_encoder_2")
_DENOISERS = ("unet", "transformer")


class LoraKeyError(ValueError):
    """A LoRA key that cannot be applied to the target model (unknown format, no such module, bad shape)."""


@dataclass
class _Layer:
    """The parts of one LoRA layer, keyed by role; ``keys`` keeps the original names for error messages. ``kind``
    and ``scale`` (``alpha/rank``) are set once the layer's keys are all read."""

    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    kind: str = ""
    scale: float = 1.0


def load_lora_file(path: str | Path) -> LoraWeights:
    """Tensors of a LoRA: a ``.safetensors``/``.pt``/``.bin`` file, or a diffusers folder holding
    ``pytorch_lora_weights.safetensors``."""
    path = Path(path)
    if path.is_dir():
        path = path / DIFFUSERS_LORA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"LoRA folder {path.parent} has no {DIFFUSERS_LORA_FILE}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return state_dict.get("state_dict", state_dict)


def _split_key(key: str, base: str) -> tuple[str, str, str, bool]:
    """``(owner, module name, role, kohya)`` of one LoRA key; raises ``LoraKeyError`` for unknown formats."""
    if m := _PROCESSOR.fullmatch(key):
        stem, proj, role = m.groups()
        stem += ".to_out.0" if proj == "to_out" else f".{proj}"
    else:
        match = next(((key[: -len(suffix)], role) for suffix, role in _SUFFIXES if key.endswith(suffix)), None)
        if match is None:
            raise LoraKeyError(f"unsupported LoRA key {key!r} (not a kohya, diffusers or PEFT LoRA layer, nor a "
                               "LyCORIS LoHa, LoKr, DoRA, full or norm layer; IA3 layers are not supported)")
        stem, role = match
    if stem.startswith("lora_"):
        prefixes = {"lora_unet_": "unet", "lora_te_": "text_encoder"}
        if base in _SDXL_BASES:
            prefixes |= {"lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2"}
        elif base == "flux":  # CLIP-L, T5 and OneTrainer's transformer names (others are converted on load)
            prefixes = {"lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2", "lora_transformer_": "transformer"}
        for prefix, owner in prefixes.items():
            if stem.startswith(prefix):
                return owner, stem[len(prefix) :], role, True
        raise LoraKeyError(f"LoRA key {key!r} has a prefix unknown for a {base} model")
    owner, _, path = stem.partition(".")
    if owner not in _OWNERS or not path:
        raise LoraKeyError(f"LoRA key {key!r} names no known model part (expected one of {', '.join(_OWNERS)})")
    return owner, path, role, False


def _strip_text_model(name: str, sep: str) -> str:
    """transformers >= 5.6 dropped ``text_model.`` from CLIPTextModel (not from ...WithProjection); LoRAs keep it."""
    return name.removeprefix(f"text_model{sep}")


_Lookups = tuple[dict[str, str], dict[str, str]]
# Per (model, is text encoder): (dotted name -> module name, underscored name -> module name), built once per cached
# model. Modules hash by identity, and the entry goes away with the model.
_LOOKUPS: weakref.WeakKeyDictionary[torch.nn.Module, dict[bool, _Lookups]] = weakref.WeakKeyDictionary()


def _lookups(model: torch.nn.Module, target: Target) -> _Lookups:
    """Name lookups built from the model's own weight-bearing modules (linear, conv, embedding and, for LyCORIS
    norm layers, normalisation layers)."""
    text = target not in _DENOISERS
    cached = _LOOKUPS.setdefault(model, {})
    if text in cached:
        return cached[text]
    dotted: dict[str, str] = {}
    kohya: dict[str, str] = {}
    config = getattr(model, "config", None) if not text else None
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim < 1:
            continue
        plain = _strip_text_model(name, ".") if text else name
        dotted[plain] = name
        kohya[plain.replace(".", "_")] = name
        if config is not None and "layers_per_block" in config:
            with suppress(KeyError, IndexError, ValueError):  # LDM/SGM name, used by kohya for SDXL
                kohya[unet_key_to_ldm(f"{name}.weight", config).removesuffix(".weight").replace(".", "_")] = name
    cached[text] = (dotted, kohya)
    return dotted, kohya


def _resolve(model: torch.nn.Module, lora: LoraWeights, target: Target, base: str) -> dict[str, _Layer]:
    """Group one LoRA's keys for ``target`` by model module name; other targets' keys are skipped."""
    dotted, kohya = _lookups(model, target)
    text = target not in _DENOISERS
    layers: dict[str, _Layer] = {}
    for key, tensor in lora.items():
        owner, path, role, is_kohya = _split_key(key, base)
        if owner != target:
            continue
        if is_kohya:
            module = kohya.get(_strip_text_model(path, "_") if text else path)
        else:
            module = dotted.get(_strip_text_model(path, ".") if text else path)
        if module is None:
            raise LoraKeyError(f"LoRA key {key!r} matches no layer of the {target} of this {base} model")
        layer = layers.setdefault(module, _Layer())
        layer.parts[role] = tensor
        layer.keys.append(key)
    for module, layer in layers.items():
        try:
            layer.kind = lycoris.kind_of(layer.parts)
            layer.scale = lycoris.scale_of(layer.kind, layer.parts)
        except ValueError as exc:
            raise LoraKeyError(f"LoRA keys {layer.keys} for {target} layer {module!r}: the layer {exc}") from None
    return layers


def _params(module: torch.nn.Module, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The module's ``weight`` and ``bias`` (when it has one), as float32 copies or, on ``meta``, their shapes."""
    params = {"weight": module.weight}
    if isinstance(getattr(module, "bias", None), torch.Tensor):
        params["bias"] = module.bias
    if device == "meta":  # a GGUF weight's logical shape is its quant_shape
        return {name: torch.empty(getattr(p, "quant_shape", p.shape), device="meta") for name, p in params.items()}
    return {name: dequantized({name: p.detach()})[name].float() for name, p in params.items()}


def _check_shape(layer: _Layer, module: torch.nn.Module, name: str, target: str) -> None:
    """Reject factors that do not combine or cannot be reshaped onto the module's parameters: a dry run of the
    maths on meta tensors (shapes only), before any weight is touched.

    Reshaping by element count covers linear layers, 1x1 convs, and kohya's 3x3 convs (down k x k, up 1x1), and lets
    a linear-shaped LoRA patch a 1x1 conv (SD1's proj_in/proj_out) or the reverse.
    """
    try:
        lycoris.param_deltas(layer.kind, layer.parts, layer.scale, _params(module, "meta"))
    except ValueError as exc:
        shapes = ", ".join(f"{role} {tuple(t.shape)}" for role, t in layer.parts.items() if t.ndim)
        raise LoraKeyError(f"LoRA keys {layer.keys} ({shapes}) do not fit {target} layer {name!r} of shape "
                           f"{tuple(module.weight.shape)}: the layer {exc}") from None


@contextmanager
def apply_loras(
    model: torch.nn.Module,
    loras: list[tuple[LoraWeights, float]],
    *,
    target: Target,
    base: str,
) -> Iterator[list[str]]:
    """Patch ``model`` (the ``target`` part of a ``base`` model) with ``(lora tensors, weight)`` pairs for the block.

    Yields the names of the patched modules. Keys and shapes are checked before anything is touched, so a bad LoRA
    raises ``LoraKeyError`` with the model unchanged. Each parameter gets the float32 sum of its deltas in one add,
    one module at a time (peak extra memory: one layer); only touched parameters are copied, to CPU since VRAM is
    the scarce resource, and copied back on exit. A DoRA layer's update depends on the weight it patches, so it
    sees the weight as the LoRAs listed before it left it (InvokeAI applies them in that order too).
    """
    if target not in _OWNERS:
        raise ValueError(f"unknown LoRA target {target!r}; expected one of {_OWNERS}")
    modules = dict(model.named_modules())
    resolved = [(_resolve(model, lora, target, base), float(weight)) for lora, weight in loras]
    per_module: dict[str, list[tuple[_Layer, float]]] = {}
    for layers, weight in resolved:
        for name, layer in layers.items():
            _check_shape(layer, modules[name], name, target)
            if weight != 0.0:
                per_module.setdefault(name, []).append((layer, weight))
    originals: dict[tuple[str, str], torch.Tensor] = {}
    sidecars: list[torch.utils.hooks.RemovableHandle] = []
    try:
        with torch.no_grad():
            for name, parts in per_module.items():
                if is_quantized(modules[name].weight):
                    sidecars.append(_sidecar(modules[name], parts))
                else:
                    _patch_module(modules[name], name, parts, originals)
        yield sorted(per_module)
    finally:
        for handle in sidecars:
            handle.remove()
        with torch.no_grad():
            for (name, param_name), original in originals.items():
                getattr(modules[name], param_name).copy_(original)


def _summed_deltas(current: dict[str, torch.Tensor], layers: list[tuple[_Layer, float]]) -> dict[str, torch.Tensor]:
    """The float32 sum of the weighted updates ``layers`` make to parameters ``current``."""
    deltas: dict[str, torch.Tensor] = {}
    for layer, weight in layers:
        view = {p: current[p] + deltas[p] if p in deltas else current[p] for p in current} \
            if layer.kind == "dora" else current
        for param_name, delta in lycoris.param_deltas(layer.kind, layer.parts, layer.scale, view).items():
            if param_name in deltas:
                deltas[param_name].add_(delta, alpha=weight)
            else:
                deltas[param_name] = delta.mul_(weight) if weight != 1.0 else delta
    return deltas


def _patch_module(module: torch.nn.Module, name: str, layers: list[tuple[_Layer, float]],
                  originals: dict[tuple[str, str], torch.Tensor]) -> None:
    """Add the weighted updates of ``layers`` to ``module``'s parameters, saving each touched one to ``originals``
    (on CPU) first."""
    current = _params(module)  # float32; DoRA reads the weight as updated by the layers before it
    deltas = _summed_deltas(current, layers)
    for param_name, delta in deltas.items():
        param = getattr(module, param_name)
        originals[name, param_name] = param.detach().to("cpu", copy=True)
        param.copy_(current[param_name].add_(delta).to(param.dtype))


def _low_rank(module: torch.nn.Module, layers: list[tuple[_Layer, float]]) -> Optional[list[tuple[torch.Tensor,
                                                                                                 torch.Tensor]]]:
    """The ``(down, weighted up)`` factor pairs of ``layers`` when all are plain linear LoRA layers (no DoRA, mid,
    LyCORIS or bias), each checked to fit ``module`` on meta tensors; else None."""
    pairs = []
    for layer, weight in layers:
        parts = layer.parts
        if layer.kind != "lora" or set(parts) - {"up", "down", "alpha", "row_index"} \
                or parts["up"].ndim != 2 or parts["down"].ndim != 2:
            return None
        lycoris.param_deltas(layer.kind, parts, layer.scale, _params(module, "meta"))  # raises when it does not fit
        up = parts["up"].float()
        if "row_index" in parts:
            up = up.index_select(0, parts["row_index"].long())
        pairs.append((parts["down"].float(), up * (weight * layer.scale)))
    return pairs


def _sidecar(module: torch.nn.Module, layers: list[tuple[_Layer, float]]) -> torch.utils.hooks.RemovableHandle:
    """A quantized (GGUF) linear layer's LoRA update as a sidecar, as InvokeAI applies LoRAs to quantized layers:
    its weights stay as they are and the update's own linear map (and bias) is added to the layer's output until
    the returned hook is removed. Plain LoRA layers run as their two low-rank factors (so a LoRA over a whole
    quantized model costs its own size, not the model's); other kinds as their whole update, worked out once from
    the dequantized weight (DoRA reads it)."""
    compute = getattr(module, "compute_dtype", None) or torch.float32
    pairs = _low_rank(module, layers)
    if pairs is not None:
        device = module.weight.device
        factors = [(down.to(device, compute), up.to(device, compute)) for down, up in pairs]

        def add_low_rank(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            inputs = args[0].to(compute)
            for down, up in factors:
                output = output + torch.nn.functional.linear(
                    torch.nn.functional.linear(inputs, down.to(inputs.device)), up.to(inputs.device)).to(output.dtype)
            return output

        return module.register_forward_hook(add_low_rank)
    deltas = _summed_deltas(_params(module), layers)
    weight = deltas["weight"].to(compute)
    bias = deltas["bias"].to(compute) if "bias" in deltas else None

    def add_update(_module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        inputs = args[0]
        update = torch.nn.functional.linear(inputs.to(compute), weight.to(inputs.device),
                                            None if bias is None else bias.to(inputs.device))
        return output + update.to(output.dtype)

    return module.register_forward_hook(add_update)

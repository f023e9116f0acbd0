"""FLUX.1 Control LoRAs (Black Forest Labs' Canny and Depth LoRAs): structural control by a LoRA that also widens the
transformer's input, so each image token carries the control image's VAE latents (64 more channels) beside its own.

A file is BFL's format (InvokeAI's ``is_state_dict_likely_flux_control``): BFL layer names with ``lora_A.weight``,
``lora_B.weight`` and ``lora_B.bias`` on every patched layer, ``img_in``'s ``lora_A`` taking 128 input channels, and
full ``.scale`` weights for the attention's query/key RMS norms. On load it becomes the state dict diffusers'
``_convert_bfl_flux_control_lora_to_diffusers`` gives (``transformer.<layer>.lora_A.weight`` ..., norms as
``transformer.<...>.norm_q.weight``), which `control_lora_applied` applies to the cached transformer for one node:

* ``x_embedder`` is swapped for a 128-input copy: the original weights on the first 64 inputs, zeros on the rest,
  plus ``weight * lora_B @ lora_A`` on all of it (InvokeAI pads and patches; diffusers expands, then adds the LoRA);
* every other layer gets ``weight * lora_B @ lora_A`` (the shared patcher) and ``weight * lora_B.bias``;
* the norm scales are set as they are, whatever the weight (InvokeAI and BFL ignore it there).

Everything is put back on exit, bit for bit, exceptions included. A weight of 0 patches nothing but the widening
(with no LoRA delta the control channels meet zero weights), where InvokeAI would skip the patch and then fail on
the 128-channel input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import torch

__all__ = ["CONTROL_IN_CHANNELS", "ControlLoRAError", "control_lora_applied", "control_lora_condition",
           "is_flux_control_lora", "load_control_lora", "to_diffusers_control_lora"]

CONTROL_IN_CHANNELS = 128  # 64 for the image's packed latents, 64 for the control image's
_KEY = re.compile(r"(\w+\.)+(lora_A\.weight|lora_B\.weight|lora_B\.bias|scale)")
_PARTS = ("lora_A.weight", "lora_B.weight", "lora_B.bias")
_DOUBLE_NORM = re.compile(r"double_blocks\.(\d+)\.(img|txt)_attn\.norm\.(query|key)_norm\.scale")
_SINGLE_NORM = re.compile(r"single_blocks\.(\d+)\.norm\.(query|key)_norm\.scale")
_X_EMBEDDER = "transformer.x_embedder"


class ControlLoRAError(ValueError):
    """A FLUX Control LoRA that cannot be read or does not fit the transformer (the model manager names the model
    when loading raises it; ``flux_denoise`` names its field)."""


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def is_flux_control_lora(state: Mapping[str, Any]) -> bool:
    """Whether tensors (or their shapes) look like a BFL FLUX Control LoRA: InvokeAI's test, except that ``img_in``'s
    output width must match its bias rather than be FLUX.1's 3,072 (so narrow test models are recognised)."""
    keys = [k for k in state if isinstance(k, str)]
    if not keys or not all(_KEY.match(k) for k in keys):
        return False
    parts = [state.get(f"img_in.{part}") for part in _PARTS]
    if any(p is None for p in parts):
        return False
    down, up, bias = (_shape(p) for p in parts)
    return len(down) == 2 and down[1] == CONTROL_IN_CHANNELS and len(up) == 2 and len(bias) == 1 and \
        up[0] == bias[0] and up[1] == down[0]


def _norm_name(key: str) -> str | None:
    """The diffusers parameter a BFL norm scale sets, or None for another key."""
    if m := _DOUBLE_NORM.fullmatch(key):
        index, stream, which = m.groups()
        added = "added_" if stream == "txt" else ""
        return f"transformer.transformer_blocks.{index}.attn.norm_{added}{which[0]}.weight"
    if m := _SINGLE_NORM.fullmatch(key):
        index, which = m.groups()
        return f"transformer.single_transformer_blocks.{index}.attn.norm_{which[0]}.weight"
    return None


def to_diffusers_control_lora(state: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """A BFL Control LoRA under diffusers' names (fused layers split, the final modulation's halves swapped), as
    diffusers' converter names it. Raises ControlLoRAError naming the key that does not fit."""
    from invokeai_provider.models.flux.lora_conversion import split_bfl_rows

    if not is_flux_control_lora(state):
        raise ControlLoRAError("not a FLUX Control LoRA in BFL's format (img_in.lora_A.weight taking 128 channels, "
                               "lora_A/lora_B/lora_B.bias and norm .scale keys)")
    grouped: dict[str, dict[str, "torch.Tensor"]] = {}
    out: dict[str, "torch.Tensor"] = {}
    for key, tensor in state.items():
        if key.endswith(".scale"):
            name = _norm_name(key)
            if name is None:
                raise ControlLoRAError(f"Control LoRA key {key!r} is not a FLUX query/key norm scale")
            out[name] = tensor
            continue
        part = next(p for p in _PARTS if key.endswith("." + p))
        grouped.setdefault(key[: -len(part) - 1], {})[part] = tensor
    for layer, parts in grouped.items():
        missing = [p for p in _PARTS[:2] if p not in parts]
        if missing:
            raise ControlLoRAError(f"Control LoRA layer {layer!r} lacks {', '.join(missing)}")
        down = parts["lora_A.weight"]
        try:
            ups = split_bfl_rows(layer, parts["lora_B.weight"], down.shape[1])
            biases = split_bfl_rows(layer, parts["lora_B.bias"], down.shape[1]) if "lora_B.bias" in parts else {}
        except KeyError:
            raise ControlLoRAError(f"Control LoRA layer {layer!r} is not a FLUX layer a LoRA can patch") from None
        except ValueError as exc:
            raise ControlLoRAError(f"Control LoRA: {exc}") from None
        for target, up in ups.items():
            out[f"transformer.{target}.lora_A.weight"] = down
            out[f"transformer.{target}.lora_B.weight"] = up
            if target in biases:
                out[f"transformer.{target}.lora_B.bias"] = biases[target]
    return out


def load_control_lora(path: Union[str, Path]) -> dict[str, "torch.Tensor"]:
    """A Control LoRA file, converted for `control_lora_applied` (what the model manager caches)."""
    from invokeai_provider.models.patches.lora import load_lora_file

    return to_diffusers_control_lora(load_lora_file(path))


def control_lora_condition(vae: Any, image: Any, width: int, height: int) -> "torch.Tensor":
    """The control image as the transformer's extra channels, ``(1, tokens, 64)``, for the denoising job's
    ``channel_condition``: as InvokeAI prepares it, resized to ``width`` x ``height`` (bicubic, on 8-bit RGB),
    scaled to [-1, 1], VAE-encoded with a sample seeded 0, packed. ``image``: a PIL image, or a tensor
    ``([1,] 3, h, w)`` in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    from invokeai_provider.models.flux import sampling
    from invokeai_provider.models.flux import vae as flux_vae

    if width % 16 or height % 16:
        raise ControlLoRAError(f"a FLUX image of {width}x{height}: width and height must be multiples of 16")
    if isinstance(image, torch.Tensor):
        pixels = image[0] if image.ndim == 4 else image
        array = (pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        image = Image.fromarray(array if array.shape[2] != 1 else array[:, :, 0])
    resized = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized).copy()).float() / 127.5 - 1.0
    return sampling.pack(flux_vae.encode_seeded(vae, pixels.permute(2, 0, 1)[None]))


def _split(lora_state: Mapping[str, "torch.Tensor"]) -> tuple[dict[str, "torch.Tensor"], dict[str, "torch.Tensor"],
                                                               dict[str, "torch.Tensor"], dict[str, "torch.Tensor"]]:
    """(x_embedder's parts, the other layers' LoRA matrices, their LoRA biases by layer, parameters to set)."""
    x_embedder: dict[str, "torch.Tensor"] = {}
    matrices: dict[str, "torch.Tensor"] = {}
    biases: dict[str, "torch.Tensor"] = {}
    values: dict[str, "torch.Tensor"] = {}
    for key, tensor in lora_state.items():
        if not key.startswith("transformer."):
            raise ControlLoRAError(f"Control LoRA key {key!r} is not a transformer key (load the file with "
                                   "load_control_lora)")
        if key.startswith(_X_EMBEDDER + ".lora_"):
            x_embedder[key.removeprefix(_X_EMBEDDER + ".")] = tensor
        elif key.endswith(".lora_B.bias"):
            biases[key.removesuffix(".lora_B.bias").removeprefix("transformer.")] = tensor
        elif key.endswith((".lora_A.weight", ".lora_B.weight")):
            matrices[key] = tensor
        else:
            values[key.removeprefix("transformer.")] = tensor
    return x_embedder, matrices, biases, values


def _checked(transformer: Any, x_embedder: dict[str, "torch.Tensor"], biases: dict[str, "torch.Tensor"],
             values: dict[str, "torch.Tensor"]) -> None:
    """Raises ControlLoRAError, before anything is touched, for parts that do not fit the transformer."""
    old = transformer.x_embedder
    missing = [p for p in _PARTS if p not in x_embedder]
    if missing:
        raise ControlLoRAError(f"the Control LoRA has no x_embedder {', '.join(missing)}")
    down, up, bias = (x_embedder[p] for p in _PARTS)
    if down.ndim != 2 or up.shape != (old.out_features, down.shape[0]) or bias.shape != (old.out_features,) or \
            down.shape[1] <= old.in_features:
        raise ControlLoRAError(f"the Control LoRA's x_embedder (lora_A {tuple(down.shape)}, lora_B {tuple(up.shape)})"
                               f" does not widen this transformer's {old.in_features} -> {old.out_features} input")
    modules = dict(transformer.named_modules())
    for layer, tensor in biases.items():
        own = getattr(modules.get(layer), "bias", None)
        if own is None or own.shape != tensor.shape:
            raise ControlLoRAError(f"the Control LoRA's bias for {layer!r} {tuple(tensor.shape)} fits no bias of "
                                   "this transformer")
    params = dict(transformer.named_parameters())
    for name, tensor in values.items():
        if name not in params or params[name].shape != tensor.shape:
            raise ControlLoRAError(f"the Control LoRA's {name!r} {tuple(tensor.shape)} fits no parameter of this "
                                   "transformer")


def _widened(old: Any, parts: dict[str, "torch.Tensor"], weight: float) -> Any:
    """A new ``x_embedder`` taking the LoRA's input width: the old weights first, zeros after, plus the LoRA."""
    import torch

    down, up, bias = (parts[p] for p in _PARTS)
    device, dtype = old.weight.device, old.weight.dtype
    new = torch.nn.Linear(down.shape[1], old.out_features, bias=old.bias is not None, device=device, dtype=dtype)
    new.requires_grad_(old.weight.requires_grad)
    matrix = torch.zeros(new.weight.shape, dtype=torch.float32, device=device)
    matrix[:, : old.in_features] = old.weight.float()
    if weight != 0.0:
        matrix += weight * (up.to(device, torch.float32) @ down.to(device, torch.float32))
    new.weight.copy_(matrix.to(dtype))
    if old.bias is not None:
        shift = weight * bias.to(device, torch.float32) if weight != 0.0 else 0.0
        new.bias.copy_((old.bias.float() + shift).to(dtype))
    return new


@contextmanager
def control_lora_applied(transformer: Any, lora_state: Mapping[str, "torch.Tensor"], weight: float) -> Iterator[Any]:
    """The cached diffusers ``FluxTransformer2DModel`` with the Control LoRA (as `load_control_lora` gives it) at
    ``weight`` for the block: ``x_embedder`` takes 128 channels (``config.in_channels`` says so), the other layers
    patched. Enter it inside any ordinary LoRAs' `apply_loras` (InvokeAI applies the Control LoRA last). On exit the
    original module, config and weights are back, bit for bit, exceptions included. Yields the transformer."""
    import torch

    from invokeai_provider.models.patches.lora import LoraKeyError, apply_loras

    x_embedder, matrices, biases, values = _split(lora_state)
    _checked(transformer, x_embedder, biases, values)
    weight = float(weight)
    patching = apply_loras(transformer, [(matrices, weight)], target="transformer", base="flux")
    try:
        patching.__enter__()  # checks every matrix against its layer before touching any
    except LoraKeyError as exc:
        raise ControlLoRAError(f"the Control LoRA does not fit this transformer: {exc}") from None
    original_module, original_config = transformer.x_embedder, transformer._internal_dict
    saved: dict[str, "torch.Tensor"] = {}
    try:
        with torch.no_grad():
            if weight != 0.0:
                _patch_in_place(transformer, biases, values, weight, saved)
            transformer.x_embedder = _widened(original_module, x_embedder, weight)
        transformer.register_to_config(in_channels=transformer.x_embedder.in_features)
        yield transformer
    finally:
        transformer.x_embedder = original_module
        transformer._internal_dict = original_config
        with torch.no_grad():
            for name, original in saved.items():
                transformer.get_parameter(name).copy_(original)
        patching.__exit__(None, None, None)


def _patch_in_place(transformer: Any, biases: dict[str, "torch.Tensor"], values: dict[str, "torch.Tensor"],
                    weight: float, saved: dict[str, "torch.Tensor"]) -> None:
    """Adds ``weight`` times the LoRA biases and sets the norm scales, saving each original (on the CPU) first."""
    import torch

    for name, tensor in values.items():
        param = transformer.get_parameter(name)
        saved[name] = param.detach().to("cpu", copy=True)
        param.copy_(tensor.to(param.device, param.dtype))
    for layer, tensor in biases.items():
        own = transformer.get_submodule(layer).bias
        saved[f"{layer}.bias"] = own.detach().to("cpu", copy=True)
        own.copy_((own.float() + weight * tensor.to(own.device, torch.float32)).to(own.dtype))

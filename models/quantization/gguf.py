"""GGUF-quantized models, kept quantized in memory and dequantized one layer at a time as they compute (as InvokeAI
runs them).

The weights are read with diffusers' GGUF reader: a quantized tensor becomes diffusers' ``GGUFParameter`` (the raw
blocks and their GGML type), an F32/F16 tensor a plain tensor. Diffusion transformers load through diffusers'
``from_single_file`` with ``GGUFQuantizationConfig`` (its name converters then work on the quantized blocks, and
its ``GGUFLinear`` layers dequantize in pure torch, so CPU works), offline: the architecture is read from the tensor
shapes by the family's loader and handed over as a local config folder. Text encoders (transformers models) get the
same ``GGUFLinear`` layers in place of their ``nn.Linear`` where the file's weight is quantized.

The quantization types are checked from the file's header before any weight is read, so an unsupported one (the
IQ* types) is refused by name.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from invokeai_provider.errors import InvokeAIProviderError

__all__ = ["GGUFError", "check_quant_types", "gguf_shapes", "is_quantized", "load_diffusers_model",
           "load_quantized_module", "quantized_modules", "read_gguf"]

# GGML types kept as plain tensors by the reader
UNQUANTIZED = ("F32", "F16")


class GGUFError(InvokeAIProviderError):
    """A GGUF file that cannot be loaded; the message says which file and why."""


def supported_types() -> list[str]:
    """Names of the GGML types this loader reads: the float ones and those diffusers dequantizes."""
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES

    return [*UNQUANTIZED, *(t.name for t in SUPPORTED_GGUF_QUANT_TYPES)]


def check_quant_types(path: Path, tensors: dict[str, tuple[tuple[int, ...], int]]) -> None:
    """Refuses a file holding a GGML type that cannot be dequantized here, naming the tensor and the type
    (``tensors``: name -> (shape, GGML type) from the header)."""
    import gguf

    supported = set(supported_types())
    for name, (_, kind) in tensors.items():
        try:
            type_name = gguf.GGMLQuantizationType(kind).name
        except ValueError:
            type_name = f"unknown GGML type {kind}"
        if type_name not in supported:
            raise GGUFError(f"{path.name}: tensor {name!r} is quantized as {type_name}, which this loader cannot "
                            f"dequantize (supported: {', '.join(sorted(supported))})")


def read_gguf(path: Path) -> dict[str, Any]:
    """All tensors of a GGUF file: quantized ones as diffusers' ``GGUFParameter``, F32/F16 ones as tensors."""
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    from invokeai_provider.models.model_manager.probe import ProbeError
    from invokeai_provider.models.model_manager.probe_parts import gguf_tensors

    try:
        check_quant_types(path, gguf_tensors(path))
    except ProbeError as exc:
        raise GGUFError(str(exc)) from None
    return load_gguf_checkpoint(str(path))


def is_quantized(tensor: Any) -> bool:
    """Whether ``tensor`` holds GGUF blocks (a ``GGUFParameter``) rather than plain values."""
    return getattr(tensor, "quant_type", None) is not None


def gguf_shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The logical shape of each tensor (a quantized tensor's shape is its byte layout's)."""
    return {key: tuple(getattr(value, "quant_shape", value.shape)) for key, value in state.items()}


def shape_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """Meta tensors of the logical shapes: what a name converter and a config reader can run on without the
    weights."""
    import torch

    return {key: torch.empty(shape, device="meta") for key, shape in gguf_shapes(state).items()}


def quantized_modules(model: Any) -> list[str]:
    """Names of the modules whose weight is kept quantized (GGUF blocks)."""
    return [name for name, module in model.named_modules() if is_quantized(getattr(module, "weight", None))]


def _meta_left(model: Any) -> list[str]:
    return [name for name, value in [*model.named_parameters(), *model.named_buffers()] if value.is_meta]


def load_diffusers_model(model_class: Any, state: dict[str, Any], config: dict[str, Any], compute_dtype: Any,
                         where: str) -> Any:
    """A diffusers model from GGUF tensors (original names; diffusers' single-file converter for ``model_class``
    renames them) and its architecture ``config``, with its linear layers kept quantized and computing in
    ``compute_dtype``. No hub access: the config goes in as a local folder."""
    from diffusers import GGUFQuantizationConfig

    # only layers' weights can run quantized: anything else (a pad token) is dequantized once
    state = {key: value if key.endswith(".weight") else dequantized({key: value}, compute_dtype)[key]
             for key, value in state.items()}
    with tempfile.TemporaryDirectory(prefix="invokeai-gguf-config-") as folder:
        (Path(folder) / "config.json").write_text(json.dumps({"_class_name": model_class.__name__, **config}))
        try:
            model = model_class.from_single_file(
                state, config=folder, quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype),
                torch_dtype=compute_dtype, local_files_only=True)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise GGUFError(f"{where}: the GGUF tensors do not fit {model_class.__name__}: {exc}") from None
    missing = _meta_left(model)
    if missing:
        raise GGUFError(f"{where}: the GGUF file has no weights for {len(missing)} tensors of "
                        f"{model_class.__name__} ({', '.join(missing[:4])})")
    return model.eval()


def load_quantized_module(build: Callable[[], Any], state: dict[str, Any], compute_dtype: Any, where: str,
                          keep_dequantized: Iterable[str] = ()) -> Any:
    """A torch module built on the meta device by ``build``, whose ``nn.Linear`` layers with a quantized weight in
    ``state`` (its own names) become diffusers' ``GGUFLinear`` (dequantized per call, in ``compute_dtype``). Other
    quantized tensors (an embedding table) and layers named by a suffix in ``keep_dequantized`` (those whose callers
    read the weight's dtype) are dequantized once, in ``compute_dtype``."""
    import torch
    from accelerate import init_empty_weights
    from diffusers.quantizers.gguf.utils import GGUFLinear

    keep = tuple(keep_dequantized)
    plain, kept = {}, {}
    with init_empty_weights():
        model = build()
    modules = dict(model.named_modules())
    for key, value in state.items():
        owner, _, param = key.rpartition(".")
        module = modules.get(owner)
        if is_quantized(value) and param == "weight" and isinstance(module, torch.nn.Linear) \
                and not owner.endswith(keep):
            kept[owner] = value
        else:
            plain[key] = dequantized({key: value}, compute_dtype)[key]
    for owner, weight in kept.items():
        linear = modules[owner]
        with init_empty_weights():
            replacement = GGUFLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                     compute_dtype=compute_dtype).requires_grad_(False)
        parent, _, child = owner.rpartition(".")
        setattr(model.get_submodule(parent), child, replacement)
        replacement._parameters["weight"] = weight  # its byte shape is not the shape load_state_dict checks
    try:
        missing, unexpected = model.load_state_dict(plain, strict=False, assign=True)
    except RuntimeError as exc:
        raise GGUFError(f"{where}: the GGUF tensors do not fit {type(model).__name__}: {exc}") from None
    missing = [key for key in missing if key.removesuffix(".weight") not in kept]
    if missing or unexpected:
        raise GGUFError(f"{where}: the GGUF tensors do not fit {type(model).__name__} (missing {missing[:4]}, "
                        f"unexpected {unexpected[:4]})")
    return model.eval()


def dequantized(state: dict[str, Any], dtype: Optional[Any] = None) -> dict[str, Any]:
    """Every tensor of ``state`` as plain values (in ``dtype`` when given)."""
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    out = {key: dequantize_gguf_tensor(value) if is_quantized(value) else value for key, value in state.items()}
    return {key: value.to(dtype) for key, value in out.items()} if dtype is not None else out

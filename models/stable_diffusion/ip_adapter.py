"""SD1.x/SD2/SDXL IP-Adapters (Tencent AI Lab's format), as InvokeAI's ``ip_adapter`` and ``denoise_latents`` use them.

An IP-Adapter has an image projection (a CLIP vision encoding of the image prompt to a few context tokens) and,
for every cross-attention layer of the UNet, a key and a value projection of those tokens (``N.to_k_ip``,
``N.to_v_ip``: ``N`` counts the UNet's attention processors in order, so cross-attentions are the odd ones). Three
projections exist and InvokeAI runs all three: the plain adapter (``proj``: CLIP ``image_embeds`` to 4 tokens), Plus
and Plus-Face (a perceiver resampler over the encoder's penultimate hidden states), and Full (an MLP over them).
The projections are diffusers' modules (``ImageProjection``, ``IPAdapterPlusImageProjection``,
``IPAdapterFullImageProjection``), their weights renamed by diffusers' own converter.

Two file layouts are read: InvokeAI's folder (``ip_adapter.bin`` holding ``{"image_proj": ..., "ip_adapter": ...}``
and ``image_encoder.txt`` naming the CLIP vision model) and the original single file (``.safetensors`` with
``image_proj.``/``ip_adapter.`` prefixes, or a ``.bin`` with the two dicts). Pickles are read with torch's
``weights_only`` unpickler, which builds tensors and containers and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

INVOKEAI_WEIGHTS = "ip_adapter.bin"
INVOKEAI_ENCODER_FILE = "image_encoder.txt"
PARTS = ("image_proj", "ip_adapter")
FIRST_KEY = "1.to_k_ip.weight"  # the first cross-attention's key projection: its input width is the UNet's context
# the projection kinds, by the tensor that identifies each (InvokeAI's build_ip_adapter order)
KIND_KEYS = (("plain", "proj.weight"), ("plus", "proj_in.weight"), ("full", "proj.0.weight"))
# the encoder output each kind reads: the projected image_embeds, or the penultimate hidden states
READS_HIDDEN_STATES = {"plain": False, "plus": True, "full": True}
CONTEXT_BASE = {768: "sd-1", 1024: "sd-2", 2048: "sdxl"}


class IPAdapterError(ValueError):
    """An IP-Adapter file or image prompt that cannot be used; the message says why."""


def split_state(tensors: Mapping[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """A flat state dict (``image_proj.*``, ``ip_adapter.*``) as the two parts; other keys are refused."""
    parts: dict[str, dict[str, Any]] = {part: {} for part in PARTS}
    for key, value in tensors.items():
        part, _, rest = key.partition(".")
        if part not in parts or not rest:
            raise IPAdapterError(f"{name}: unexpected IP-Adapter tensor {key!r} (expected image_proj.* and "
                                 "ip_adapter.* only)")
        parts[part][rest] = value
    return parts


def ip_adapter_kind(image_proj_keys: Iterable[str], name: str = "IP-Adapter") -> str:
    """``plain``, ``plus`` or ``full``, by the projection's tensors; FaceID and other projections are refused."""
    keys = set(image_proj_keys)
    for kind, key in KIND_KEYS:
        if key in keys:
            return kind
    raise IPAdapterError(f"{name}: unrecognised IP-Adapter image projection (expected proj.weight, proj_in.weight "
                         "or proj.0.weight; FaceID adapters are not supported)")


def ip_adapter_base(shapes: Mapping[str, tuple[int, ...]], name: str = "IP-Adapter") -> str:
    """The SD base an IP-Adapter is for, by the context width of its first key projection (InvokeAI's probe)."""
    shape = shapes.get(f"ip_adapter.{FIRST_KEY}")
    width = shape[-1] if shape else None
    if width not in CONTEXT_BASE:
        raise IPAdapterError(f"{name}: IP-Adapter context width {width} matches no SD base "
                             f"({', '.join(f'{w} {b}' for w, b in CONTEXT_BASE.items())})")
    return CONTEXT_BASE[width]


def is_ip_adapter_state(keys: Iterable[str]) -> bool:
    """Tencent's layout: image projection tensors and per-layer ``to_k_ip`` weights under the two prefixes."""
    keys = set(keys)
    return f"ip_adapter.{FIRST_KEY}" in keys and any(k.startswith("image_proj.") for k in keys)


def read_state(path: Path) -> dict[str, dict[str, Any]]:
    """The two parts of an IP-Adapter, from InvokeAI's folder or an original single file."""
    import torch

    path = Path(path)
    source = path / INVOKEAI_WEIGHTS if path.is_dir() else path
    if not source.is_file():
        raise IPAdapterError(f"{path}: no {INVOKEAI_WEIGHTS} (InvokeAI's IP-Adapter folder)")
    if source.suffix == ".safetensors":
        from safetensors.torch import load_file

        return split_state(load_file(str(source)), path.name)
    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle is the same error to the user
        raise IPAdapterError(f"{source}: cannot be read as an IP-Adapter state dict ({type(exc).__name__}: "
                             f"{exc})") from None
    if isinstance(data, dict) and all(isinstance(data.get(part), dict) for part in PARTS):
        return {part: dict(data[part]) for part in PARTS}
    if isinstance(data, dict):
        return split_state(data, path.name)
    raise IPAdapterError(f"{source}: not an IP-Adapter state dict (expected image_proj and ip_adapter)")


def encoder_model_id(path: Path) -> Optional[str]:
    """The CLIP vision model id InvokeAI's folder names in ``image_encoder.txt`` (None for a single file)."""
    text_file = Path(path) / INVOKEAI_ENCODER_FILE
    if not Path(path).is_dir() or not text_file.is_file():
        return None
    return text_file.read_text().strip() or None


def _image_projection(state: dict[str, Any]) -> Any:
    """The image projection as diffusers' module, its weights renamed by diffusers' converter (which reads only the
    state dict, so it is called without a UNet)."""
    from diffusers.loaders.unet import UNet2DConditionLoadersMixin

    return UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(None, state,
                                                                                 low_cpu_mem_usage=False)


def load_ip_adapter(path: Path, dtype: "torch.dtype") -> Any:
    """An IP-Adapter as a ``ModuleDict``: ``image_proj`` (diffusers' projection) and ``layers`` (per attention
    processor index, a ``ModuleDict`` with ``to_k_ip`` and ``to_v_ip``); ``kind`` says which encoder output it reads."""
    import torch

    state = read_state(path)
    kind = ip_adapter_kind(state["image_proj"], Path(path).name)
    layers: dict[str, Any] = {}
    for key, tensor in state["ip_adapter"].items():
        index, _, rest = key.partition(".")
        if rest not in ("to_k_ip.weight", "to_v_ip.weight") or not index.isdigit():
            raise IPAdapterError(f"{Path(path).name}: unexpected IP-Adapter tensor ip_adapter.{key}")
        layer = layers.setdefault(str(int(index)), torch.nn.ModuleDict())
        linear = torch.nn.Linear(tensor.shape[1], tensor.shape[0], bias=False)
        linear.weight = torch.nn.Parameter(tensor, requires_grad=False)
        layer[rest.partition(".")[0]] = linear
    if not layers:
        raise IPAdapterError(f"{Path(path).name}: the IP-Adapter has no attention weights")
    model = torch.nn.ModuleDict({"image_proj": _image_projection(state["image_proj"]),
                                 "layers": torch.nn.ModuleDict(layers)})
    model.kind = kind
    return model.to(dtype=dtype).eval().requires_grad_(False)


@dataclass
class ImagePrompt:
    """An IP-Adapter's image tokens: ``cond`` for the image prompt(s), ``uncond`` for the CFG half, each
    ``(images, tokens, width)``."""

    cond: "torch.Tensor"
    uncond: "torch.Tensor"


def image_prompt(adapter: Any, encoder: Any, images: list["Image"]) -> ImagePrompt:
    """The image prompt's tokens, as InvokeAI computes them: the plain adapter projects CLIP ``image_embeds`` (the
    CFG half projects zeros); Plus and Full read the penultimate hidden states (the CFG half those of a zero image).
    The images go through transformers' default CLIP image processor."""
    import torch
    from transformers import CLIPImageProcessor

    pixels = CLIPImageProcessor()(images=[image.convert("RGB") for image in images], return_tensors="pt").pixel_values
    pixels = pixels.to(device=encoder.device, dtype=encoder.dtype)
    projection = adapter["image_proj"]
    dtype = next(projection.parameters()).dtype
    with torch.no_grad():
        try:
            if READS_HIDDEN_STATES[adapter.kind]:
                cond = encoder(pixels, output_hidden_states=True).hidden_states[-2]
                uncond = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
            else:
                cond = encoder(pixels).image_embeds
                uncond = torch.zeros_like(cond)
            cond, uncond = projection(cond.to(dtype)), projection(uncond.to(dtype))
        except RuntimeError as exc:
            raise IPAdapterError(f"the CLIP vision model does not fit this IP-Adapter ({exc})") from None
    return ImagePrompt(cond=cond.float().cpu(), uncond=uncond.float().cpu())

"""FLUX IP-Adapters (XLabs' format), as InvokeAI's ``flux_ip_adapter`` and ``flux_denoise`` use them.

An XLabs file holds an image projection (``ip_adapter_proj_model.proj``/``.norm``: a CLIP ``image_embeds`` vector to
a few 4,096-wide tokens) and, per double block, a key and a value projection of those tokens
(``double_blocks.N.processor.ip_adapter_double_stream_{k,v}_proj``). In each double block the image stream's query
(after its RMS norm, before the rotary embedding) attends to those keys and values, and the result, times the
adapter's weight at the step, is added to the block's image output after its MLP. That is what diffusers'
``FluxIPAdapterAttnProcessor`` computes, so the adapter is loaded into diffusers' pieces (``ImageProjection`` and
``Linear`` layers) and run by that processor, installed on the double blocks for the span of a denoise
(`ip_adapters_applied`) and taken off afterwards.

InvokeAI's rules kept here: the weight is 0 outside ``floor(begin * steps)``..``ceil(end * steps)`` (inclusive), a
list gives one weight per step, and a weight under 1e-6 (so any negative one) leaves the block untouched; the
negative (CFG) prediction gets the same adapter with the embeddings of a black image.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence, Union

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

PROJ = "ip_adapter_proj_model."
BLOCK_KEY = "double_blocks.{}.processor.ip_adapter_double_stream_{}_proj.{}"
# InvokeAI's test for an XLabs FLUX IP-Adapter: all of these are present
XLABS_KEYS = frozenset({*(BLOCK_KEY.format(0, kv, p) for kv in "kv" for p in ("weight", "bias")),
                        *(f"{PROJ}{layer}.{p}" for layer in ("proj", "norm") for p in ("weight", "bias"))})
MIN_WEIGHT = 1e-6  # InvokeAI skips an adapter whose weight at the step is below this


class FluxIPAdapterError(ValueError):
    """An IP-Adapter file, image prompt or setting FLUX cannot use; the message says why."""


def is_xlabs_ip_adapter(keys: Iterable[str]) -> bool:
    """InvokeAI's detection: the projection's and the first double block's tensors are all there."""
    return XLABS_KEYS.issubset(set(keys))


def load_ip_adapter(path: Path, dtype: "torch.dtype") -> Any:
    """An XLabs file as a ``ModuleDict``: ``image_proj`` (diffusers' ``ImageProjection``; its token count is the
    projection's rows over the context width, InvokeAI's reading) and ``to_k_ip``/``to_v_ip`` (one ``Linear`` per
    double block, the names diffusers' processor gives them)."""
    import torch
    from diffusers.models.embeddings import ImageProjection
    from safetensors.torch import load_file

    name = Path(path).name
    state = load_file(str(path))
    if not is_xlabs_ip_adapter(state):
        raise FluxIPAdapterError(f"{name}: not an XLabs FLUX IP-Adapter (expected {', '.join(sorted(XLABS_KEYS))})")
    blocks = 0
    while BLOCK_KEY.format(blocks, "k", "weight") in state:
        blocks += 1
    hidden, context = state[BLOCK_KEY.format(0, "k", "weight")].shape
    rows, clip_width = state[f"{PROJ}proj.weight"].shape
    tokens = rows // context
    if tokens < 1 or tokens * context != rows or tuple(state[f"{PROJ}norm.weight"].shape) != (context,):
        raise FluxIPAdapterError(f"{name}: an image projection of {rows}x{clip_width} with a norm of "
                                 f"{tuple(state[f'{PROJ}norm.weight'].shape)} does not make {context}-wide tokens")
    known = {f"{PROJ}{layer}.{p}" for layer in ("proj", "norm") for p in ("weight", "bias")}
    known |= {BLOCK_KEY.format(i, kv, p) for i in range(blocks) for kv in "kv" for p in ("weight", "bias")}
    unexpected = sorted(set(state) - known)
    if unexpected:
        raise FluxIPAdapterError(f"{name}: unexpected tensors for an XLabs IP-Adapter: {', '.join(unexpected[:5])}")

    def linears(kv: str) -> "torch.nn.ModuleList":
        layers = torch.nn.ModuleList(torch.nn.Linear(context, hidden, device="meta") for _ in range(blocks))
        layers.load_state_dict({f"{i}.{p}": state[BLOCK_KEY.format(i, kv, p)].to(dtype)
                                for i in range(blocks) for p in ("weight", "bias")}, assign=True)
        return layers

    with torch.device("meta"):
        projection = ImageProjection(image_embed_dim=clip_width, cross_attention_dim=context,
                                     num_image_text_embeds=tokens)
    projection.load_state_dict({"image_embeds.weight": state[f"{PROJ}proj.weight"].to(dtype),
                                "image_embeds.bias": state[f"{PROJ}proj.bias"].to(dtype),
                                "norm.weight": state[f"{PROJ}norm.weight"].to(dtype),
                                "norm.bias": state[f"{PROJ}norm.bias"].to(dtype)}, assign=True)
    return torch.nn.ModuleDict({"image_proj": projection, "to_k_ip": linears("k"), "to_v_ip": linears("v")}).eval()


def clip_width(adapter: Any) -> int:
    """The CLIP ``image_embeds`` width the adapter's projection takes (768 for ViT-L)."""
    return adapter["image_proj"].image_embeds.in_features


def single_image(images: Any) -> Any:
    """An IP-Adapter field's one image: InvokeAI's FLUX IP-Adapter takes exactly one."""
    listed = images if isinstance(images, list) else [images]
    if len(listed) != 1:
        raise FluxIPAdapterError(f"FLUX IP-Adapter only supports a single image prompt (received {len(listed)})")
    return listed[0]


@dataclass
class FluxIPAdapter:
    """One IP-Adapter of a denoise: the loaded adapter (`load_ip_adapter`), the image prompt's CLIP embeddings and
    a black image's (for the negative prediction; `clip_vision.ip_adapter_embeds` makes both), and when and how much
    it acts."""

    adapter: Any
    image_embeds: "torch.Tensor"  # (1, clip width)
    negative_image_embeds: "torch.Tensor"
    weight: Union[float, list[float]] = 1.0
    begin_step_percent: float = 0.0
    end_step_percent: float = 1.0

    def weight_at(self, step: int, total: int) -> float:
        """InvokeAI's rule: the weight (a list's weight of the step) from floor(begin * steps) to ceil(end * steps),
        inclusive; 0 outside."""
        from invokeai_provider.models.image_util.control_image import step_weight

        if isinstance(self.weight, list) and step >= len(self.weight):
            raise FluxIPAdapterError(f"IP-Adapter weights: {len(self.weight)} given, none for step {step} of {total}")
        return step_weight(self.weight, self.begin_step_percent, self.end_step_percent, step, total)


def prepare(adapter: Any, encoder: Any, image: "Image", weight: Union[float, list[float]] = 1.0,
            begin_step_percent: float = 0.0, end_step_percent: float = 1.0) -> FluxIPAdapter:
    """A `FluxIPAdapter` from a loaded adapter and CLIP vision encoder and the image prompt (InvokeAI's positive
    and black-image embeddings), refusing an encoder whose embeddings the adapter cannot take."""
    from invokeai_provider.models.image_encoders.clip_vision import ip_adapter_embeds

    positive, negative = ip_adapter_embeds(encoder, image)
    if positive.shape[-1] != clip_width(adapter):
        raise FluxIPAdapterError(f"the image encoder gives {positive.shape[-1]}-wide embeddings; the IP-Adapter takes "
                                 f"{clip_width(adapter)} (ViT-L's are 768)")
    return FluxIPAdapter(adapter, positive, negative, weight, begin_step_percent, end_step_percent)


class StepHook:
    """What a denoise passes the transformer at each step while `ip_adapters_applied` holds."""

    def __init__(self, adapters: Sequence[FluxIPAdapter], processors: list[Any], positive: list["torch.Tensor"],
                 negative: list["torch.Tensor"]) -> None:
        self._adapters = list(adapters)
        self._processors = processors
        self._positive = positive
        self._negative = negative

    def scales(self, step: int, total: int) -> list[float]:
        """Each adapter's weight at the step as applied: 0 where InvokeAI would skip it (under 1e-6)."""
        return [w if w >= MIN_WEIGHT else 0.0 for w in (a.weight_at(step, total) for a in self._adapters)]

    def kwargs(self, step: int, total: int, negative: bool = False) -> dict[str, Any]:
        """``joint_attention_kwargs`` for the transformer's call at ``step`` of ``total`` (the positive or the
        negative prediction); sets the step's weights on the installed processors. Empty without adapters."""
        if not self._adapters:
            return {}
        scales = self.scales(step, total)
        for processor in self._processors:
            processor.scale = list(scales)
        return {"ip_hidden_states": list(self._negative if negative else self._positive)}


def _on(adapter: Any, device: "torch.device", dtype: "torch.dtype") -> Any:
    """The adapter on the transformer's device and dtype; a copy when it is elsewhere, so the caller's (cached)
    adapter is left as it was."""
    parameter = next(adapter.parameters())
    if parameter.device == device and parameter.dtype == dtype:
        return adapter
    return copy.deepcopy(adapter).to(device=device, dtype=dtype)


def _check(transformer: Any, adapter: Any, index: int) -> None:
    blocks = len(transformer.transformer_blocks)
    layer = adapter["to_k_ip"][0]
    context, inner = transformer.config.joint_attention_dim, transformer.inner_dim
    if len(adapter["to_k_ip"]) != blocks or layer.in_features != context or layer.out_features != inner:
        raise FluxIPAdapterError(f"IP-Adapter {index}: made for {len(adapter['to_k_ip'])} double blocks of width "
                                 f"{layer.out_features} with {layer.in_features}-wide context; this transformer has "
                                 f"{blocks} of width {inner} with {context}")


@contextmanager
def ip_adapters_applied(transformer: Any, adapters: Sequence[FluxIPAdapter]) -> Iterator[StepHook]:
    """Installs the adapters' IP attention (diffusers' ``FluxIPAdapterAttnProcessor``, one per double block, all
    adapters in it) for the block and puts the transformer's own processors back afterwards; its weights are never
    touched. The image prompts are projected to tokens once, in the transformer's dtype (as InvokeAI does)."""
    import torch
    from diffusers.models.transformers.transformer_flux import FluxIPAdapterAttnProcessor

    if not adapters:
        yield StepHook([], [], [], [])
        return
    device, dtype = transformer.device, transformer.dtype
    for index, item in enumerate(adapters):
        _check(transformer, item.adapter, index)
    modules = [_on(item.adapter, device, dtype) for item in adapters]
    with torch.no_grad():
        positive = [m["image_proj"](a.image_embeds.to(device=device, dtype=dtype)) for m, a in zip(modules, adapters)]
        negative = [m["image_proj"](a.negative_image_embeds.to(device=device, dtype=dtype))
                    for m, a in zip(modules, adapters)]
    tokens = [m["image_proj"].num_image_text_embeds for m in modules]
    blocks = list(transformer.transformer_blocks)
    originals = [block.attn.processor for block in blocks]
    processors = []
    try:
        for index, block in enumerate(blocks):
            processor = FluxIPAdapterAttnProcessor(transformer.inner_dim, transformer.config.joint_attention_dim,
                                                   num_tokens=tokens, scale=[1.0] * len(modules), device="meta")
            processor.to_k_ip = torch.nn.ModuleList(m["to_k_ip"][index] for m in modules)
            processor.to_v_ip = torch.nn.ModuleList(m["to_v_ip"][index] for m in modules)
            for setting in ("_attention_backend", "_parallel_config"):  # run attention as the block's own did
                setattr(processor, setting, getattr(originals[index], setting, None))
            block.attn.set_processor(processor)
            processors.append(processor)
        yield StepHook(adapters, processors, positive, negative)
    finally:
        for block, original in zip(blocks, originals):
            block.attn.set_processor(original)

"""What InvokeAI adds to the UNet's cross-attention: IP-Adapters and regional prompts.

Both act inside the ``attn2`` layers, so for the span of a denoise those layers get `CrossAttentionProcessor`
(`cross_attention_patched`) and get their own processors back afterwards; the UNet's weights are not touched.

- IP-Adapters: the layer's query also attends to each adapter's image tokens through the adapter's ``to_k_ip`` and
  ``to_v_ip`` for that layer, and the result, times the adapter's weight at the step and its mask at the layer's
  resolution, is added to the text attention's output. An adapter acts only in the layers its ``target_blocks`` name
  (InvokeAI's methods: ``full`` everywhere, ``style``/``composition`` in chosen blocks); ``style_precise`` feeds
  the image tokens to the unconditional half and nothing to the conditional one in its composition blocks.
- Regional prompts: the conditionings' embeddings are joined along the tokens, and each region's tokens are hidden
  (a -10000 score) from the pixels outside its mask.

Masks come at the latent size and are max-pooled by 2 (ceil) to each layer's size, as the UNet downsamples: a
small region survives at the coarsest layers. The unconditional and conditional halves of a CFG batch each have their
own regions.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

if TYPE_CHECKING:
    import torch

    from invokeai_provider.models.stable_diffusion.ip_adapter import ImagePrompt

HIDDEN_SCORE = -10000.0  # InvokeAI's score for tokens a pixel may not attend to
STYLE_PRECISE_NEGATIVE = ("down_blocks.2.attentions.1", "down_blocks.2", "mid_block")


class CrossAttentionError(ValueError):
    """An IP-Adapter or regional prompt that does not fit the UNet or the generation."""


def latent_mask(mask: Optional["torch.Tensor"], height: int, width: int) -> "torch.Tensor":
    """A region mask (``(1, h, w)`` or ``(h, w)``, bool or 0..1) as ``(1, 1, height, width)`` floats by nearest
    resizing; none is everywhere."""
    import torch

    if mask is None:
        return torch.ones((1, 1, height, width))
    mask = mask.float()
    while mask.ndim < 4:
        mask = mask.unsqueeze(0)
    return torch.nn.functional.interpolate(mask[:, :1], size=(height, width), mode="nearest")


class _Pyramid:
    """Masks ``(1, n, h, w)`` at every size the UNet's layers see, keyed by ``h * w``."""

    def __init__(self, masks: "torch.Tensor") -> None:
        import torch

        self._levels: dict[int, "torch.Tensor"] = {}
        level = masks
        while True:
            self._levels.setdefault(level.shape[-2] * level.shape[-1], level)
            if level.shape[-2] == 1 and level.shape[-1] == 1:
                break
            level = torch.nn.functional.max_pool2d(level, kernel_size=2, stride=2, ceil_mode=True)

    def at(self, query_length: int) -> "torch.Tensor":
        try:
            return self._levels[query_length]
        except KeyError:
            raise CrossAttentionError(f"no mask level for a layer of {query_length} pixels") from None

    def to(self, device: Any, dtype: Any) -> "_Pyramid":
        for key, level in self._levels.items():
            self._levels[key] = level.to(device=device, dtype=dtype)
        return self


@dataclass
class TextRegions:
    """One half's regional prompts: each prompt's token range in the joined embeddings and its latent-size mask."""

    ranges: list[tuple[int, int]]
    masks: "torch.Tensor"  # (1, prompts, h, w)


@dataclass
class JoinedConditioning:
    """Several conditionings as one: embeddings joined along the tokens, SDXL's pooled embeddings and time ids taken
    from an unmasked prompt where there is one (else the last), and the regions when any prompt has a mask."""

    tensors: dict[str, "torch.Tensor"]
    regions: Optional[TextRegions]


def join_conditionings(conditionings: Sequence[dict[str, "torch.Tensor"]],
                       masks: Sequence[Optional["torch.Tensor"]], height: int, width: int) -> JoinedConditioning:
    """InvokeAI's concatenation of regional text conditionings for one CFG half."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    for conditioning, mask in zip(conditionings, masks):
        for name in ("pooled_embeds", "add_time_ids"):
            if name in conditioning and (name not in tensors or mask is None):
                tensors[name] = conditioning[name]
    tensors["embeds"] = torch.cat([c["embeds"] for c in conditionings], dim=1)
    if all(mask is None for mask in masks):
        return JoinedConditioning(tensors, None)
    ranges, start = [], 0
    for conditioning in conditionings:
        length = conditioning["embeds"].shape[1]
        ranges.append((start, start + length))
        start += length
    region_masks = torch.cat([latent_mask(mask, height, width) for mask in masks], dim=1)
    return JoinedConditioning(tensors, TextRegions(ranges, region_masks))


@dataclass
class IPAdapterUse:
    """One IP-Adapter as a denoise applies it: its loaded model (set when the UNet opens), image tokens, weight
    (one, or one per step), step range, blocks and latent-size mask."""

    prompt: "ImagePrompt"
    weight: Union[float, list[float]]
    begin_step_percent: float
    end_step_percent: float
    target_blocks: list[str]
    method: str
    mask: "torch.Tensor"  # (1, 1, h, w)
    model: Any = None

    def acts_in(self, layer_name: str) -> tuple[bool, bool]:
        """Whether the adapter acts in the layer, and whether it acts there negatively (``style_precise``)."""
        for block in self.target_blocks:
            if block in layer_name:
                return True, self.method == "style_precise" and block in STYLE_PRECISE_NEGATIVE
        return False, False


@dataclass
class CrossAttentionState:
    """What the patched layers read during one item's UNet passes; ``set_step`` before each pass."""

    adapters: list[IPAdapterUse] = field(default_factory=list)
    regions: Optional[tuple[Optional[TextRegions], Optional[TextRegions]]] = None  # (uncond, cond)
    scales: list[float] = field(default_factory=list)
    _tokens: list["torch.Tensor"] = field(default_factory=list)
    _ip_masks: Optional[_Pyramid] = None
    _region_masks: list[Optional[_Pyramid]] = field(default_factory=list)
    _bias: dict[tuple[int, int], "torch.Tensor"] = field(default_factory=dict)
    _text_lengths: tuple[int, int] = (0, 0)

    @property
    def active(self) -> bool:
        return bool(self.adapters) or self.regions is not None

    def start(self, device: Any, dtype: Any, text_lengths: tuple[int, int], height: int, width: int) -> None:
        """Moves the tokens and masks to the UNet; ``text_lengths`` are the two halves' unpadded token counts."""
        import torch

        self._tokens = [torch.cat([a.prompt.uncond.flatten(0, 1)[None], a.prompt.cond.flatten(0, 1)[None]])
                        .to(device=device, dtype=dtype) for a in self.adapters]
        if self.adapters:
            self._ip_masks = _Pyramid(torch.cat([a.mask for a in self.adapters], dim=1)).to(device, dtype)
        self._text_lengths = text_lengths
        if self.regions is not None:
            self._region_masks = []
            for half, regions in enumerate(self.regions):
                if regions is None:  # an unregioned half: one prompt over the whole image
                    regions = TextRegions([(0, text_lengths[half])], torch.ones((1, 1, height, width)))
                    self.regions = tuple(regions if n == half else r for n, r in enumerate(self.regions))
                self._region_masks.append(_Pyramid(regions.masks).to(device, dtype))
        self._bias = {}

    def set_step(self, index: int, total: int) -> None:
        from invokeai_provider.models.image_util.control_image import step_weight

        self.scales = [step_weight(a.weight, a.begin_step_percent, a.end_step_percent, index, total)
                       for a in self.adapters]

    def tokens(self, number: int, negative: bool) -> "torch.Tensor":
        import torch

        tokens = self._tokens[number]
        return torch.cat([tokens[1:], torch.zeros_like(tokens[:1])]) if negative else tokens

    def ip_mask(self, number: int, query_length: int) -> "torch.Tensor":
        """``(query_length, 1)``: the adapter's mask at the layer's size."""
        return self._ip_masks.at(query_length)[0, number].reshape(-1, 1)

    def text_bias(self, query_length: int, key_length: int) -> "torch.Tensor":
        """``(2, query_length, key_length)`` attention scores hiding each region's tokens outside its mask."""
        import torch

        cached = self._bias.get((query_length, key_length))
        if cached is not None:
            return cached
        pyramid = self._region_masks[0].at(query_length)
        bias = torch.zeros((2, query_length, key_length), device=pyramid.device, dtype=pyramid.dtype)
        for half, regions in enumerate(self.regions):
            masks = self._region_masks[half].at(query_length)[0]
            for prompt, (start, end) in enumerate(regions.ranges):
                inside = masks[prompt].reshape(-1, 1) > 0.5
                bias[half, :, start:end] = torch.where(inside, 0.0, HIDDEN_SCORE).to(bias.dtype)
        self._bias[(query_length, key_length)] = bias
        return bias


class CrossAttentionProcessor:
    """A UNet ``attn2`` layer with IP-Adapters and regional prompts (scaled dot-product attention, as diffusers'
    default processor computes it, plus those two)."""

    def __init__(self, state: CrossAttentionState, layers: list[tuple[Any, bool, bool]]) -> None:
        self.state = state
        self.layers = layers  # per adapter: its to_k_ip/to_v_ip here, whether it acts, whether negatively

    def __call__(self, attn: Any, hidden_states: "torch.Tensor", encoder_hidden_states: Optional["torch.Tensor"] = None,
                 attention_mask: Optional["torch.Tensor"] = None, temb: Optional["torch.Tensor"] = None,
                 *args: Any, **kwargs: Any) -> "torch.Tensor":
        import torch.nn.functional as F

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        batch, query_length, _ = hidden_states.shape
        key_length = encoder_hidden_states.shape[1]
        if self.state.regions is not None:
            bias = self.state.text_bias(query_length, key_length)
            attention_mask = bias if attention_mask is None else bias + attention_mask
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads

        def heads(tensor: "torch.Tensor") -> "torch.Tensor":
            return tensor.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        def merged(tensor: "torch.Tensor") -> "torch.Tensor":
            return tensor.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)

        query = heads(query)
        output = merged(F.scaled_dot_product_attention(query, heads(key), heads(value), attn_mask=attention_mask,
                                                       dropout_p=0.0, is_causal=False))
        for number, (weights, acts, negative) in enumerate(self.layers):
            scale = self.state.scales[number]
            if not acts or scale == 0:
                continue
            tokens = self.state.tokens(number, negative)
            image = merged(F.scaled_dot_product_attention(query, heads(weights.to_k_ip(tokens)),
                                                          heads(weights.to_v_ip(tokens)), dropout_p=0.0,
                                                          is_causal=False))
            output = output + scale * image * self.state.ip_mask(number, query_length)
        output = attn.to_out[1](attn.to_out[0](output))
        if spatial:
            output = output.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            output = output + residual
        return output / attn.rescale_output_factor


@contextmanager
def cross_attention_patched(unet: Any, state: CrossAttentionState) -> Iterator[None]:
    """The UNet's ``attn2`` layers run `CrossAttentionProcessor` for the block (nothing changes when the state has
    neither adapters nor regions); their own processors come back afterwards."""
    if not state.active:
        yield
        return
    original = dict(unet.attn_processors)
    modules = dict(unet.named_modules())
    patched = {}
    for index, name in enumerate(original):
        if not name.endswith("attn2.processor"):
            patched[name] = original[name]
            continue
        attention = modules[name[:-len(".processor")]]
        layers = []
        for adapter in state.adapters:
            weights = adapter.model["layers"][str(index)] if str(index) in adapter.model["layers"] else None
            if weights is None or weights.to_k_ip.in_features != attention.to_k.in_features \
                    or weights.to_k_ip.out_features != attention.to_k.out_features:
                raise CrossAttentionError(f"the IP-Adapter does not fit this UNet (no fitting weights for its "
                                          f"attention layer {index}, {name[:-len('.processor')]})")
            layers.append((weights, *adapter.acts_in(name)))
        patched[name] = CrossAttentionProcessor(state, layers)
    unet.set_attn_processor(dict(patched))
    try:
        yield
    finally:
        unet.set_attn_processor(dict(original))

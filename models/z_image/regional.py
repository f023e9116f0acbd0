"""Z-Image's regional prompts, with InvokeAI's semantics (its z_image_denoise 1.6.0; no diffusers pipeline has them).

The prompts' embeddings are joined along the tokens; one boolean attention mask over the transformer's single-stream
sequence ``[image tokens, text tokens]`` then confines them: a masked prompt's tokens and its region's image tokens
see each other, unmasked (global) prompts see only the background (the image no region covers; none when the regions
cover it all), every prompt's tokens see themselves, and every image token sees every other image token (which keeps
the regions one picture). Image tokens outside all masks with no global prompt see no text. Without any mask there is
no attention mask, so unmasked prompts in a list are just joined.

Region masks go to the 2x2-patch token grid (``h/16 x w/16``) nearest-neighbour and are made 0/1 at 0.5. The mask
applies to the even main layers of the conditioned pass only (the odd ones and the negative pass run unmasked), and
in the transformer's padded layout the real tokens of those layers do not see the padding tokens, as in InvokeAI.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional

from invokeai_provider.models.z_image.sampling import SIZE_MULTIPLE

if TYPE_CHECKING:
    import torch


def region_tokens(mask: "torch.Tensor", height: int, width: int) -> "torch.Tensor":
    """A prompt's mask (bool or float, ``(1, H, W)`` or ``(H, W)``, 1 where the prompt applies) for an image of
    ``height`` x ``width`` pixels: ``(tokens,)`` of 0.0/1.0 in the transformer's row-major token order."""
    from invokeai_provider.models.flux2.regional import region_mask

    return (region_mask(mask, height // SIZE_MULTIPLE, width // SIZE_MULTIPLE) > 0.5).float()


def attention_mask(lengths: list[int], masks: list[Optional["torch.Tensor"]],
                   image_tokens: int) -> Optional["torch.Tensor"]:
    """The boolean ``(S, S)`` mask over ``[image tokens, text tokens]`` (S = image + text tokens, True = attend) for
    prompts of ``lengths`` tokens, joined in order, with their `region_tokens` (None for a global prompt); None when
    no prompt has a mask.

    The text rules are FLUX.2's (`invokeai_provider.models.flux2.regional`), whose mask is over ``[text, image]``:
    reordered here, with the image tokens free to see one another."""
    import torch

    from invokeai_provider.models.flux2.regional import attention_mask as text_first_mask

    text_first = text_first_mask(lengths, masks, image_tokens)
    if text_first is None:
        return None
    text = sum(lengths)
    order = torch.cat([torch.arange(text, text + image_tokens), torch.arange(text)])
    mask = text_first[order][:, order]
    mask[:image_tokens, :image_tokens] = True
    return mask


def padded(length: int) -> int:
    """A token block's length in the transformer's sequence: padded up to its multiple (diffusers' SEQ_MULTI_OF)."""
    from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF

    return length + (-length) % SEQ_MULTI_OF


def sequence_mask(mask: "torch.Tensor", image_tokens: int) -> "torch.Tensor":
    """`attention_mask`'s mask laid out as the transformer's unified sequence is: ``[image, image padding, text,
    text padding]``, ``(1, 1, L, L)``. Real tokens see only what the mask allows (no padding); padding tokens see
    everything, as they do without a mask."""
    import torch

    text = mask.shape[0] - image_tokens
    image_len, text_len = padded(image_tokens), padded(text)
    total = image_len + text_len
    real = torch.cat([torch.arange(image_tokens), torch.arange(image_len, image_len + text)])
    full = torch.ones(total, total, dtype=torch.bool)
    full[real] = False
    full[real[:, None], real[None, :]] = mask.bool()
    return full[None, None]


@contextmanager
def regional_attention(transformer: Any, mask: Optional["torch.Tensor"], image_tokens: int
                       ) -> Iterator[Any]:
    """For a block: a context manager factory, ``with applied(): transformer(...)``, under which the transformer's even
    main layers take `sequence_mask` of ``mask`` instead of their own (forward pre-hooks, removed after the block).
    With ``mask`` None, ``applied()`` changes nothing."""
    state = {"on": False}
    hooks = []
    if mask is not None:
        full = sequence_mask(mask, image_tokens).to(transformer.device)

        def swap(module: Any, args: tuple[Any, ...]) -> Optional[tuple[Any, ...]]:
            if not state["on"]:
                return None
            if len(args) < 2 or args[0].shape[1] != full.shape[-1]:
                raise ValueError(f"regional prompts: a main layer took {tuple(args[0].shape)} without its mask "
                                 f"as the second argument, or not the {full.shape[-1]} tokens the mask was built for")
            return (args[0], full, *args[2:])

        hooks = [layer.register_forward_pre_hook(swap) for layer in transformer.layers[::2]]

    @contextmanager
    def applied() -> Iterator[None]:
        state["on"] = mask is not None
        try:
            yield
        finally:
            state["on"] = False

    try:
        yield applied
    finally:
        for hook in hooks:
            hook.remove()

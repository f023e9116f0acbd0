"""Z-Image regional prompts (`invokeai_provider.models.z_image.regional`): the attention mask for a tiny case against
a hand-computed one, the mask's layout in the transformer's padded sequence, region masks on the token grid, and the
mask's effect on a tiny transformer through the denoising loop.

No diffusers pipeline has Z-Image regional prompts, so the reference is InvokeAI's z_image_denoise 1.6.0 semantics as
read from its source: prompts joined in order, order ``[image, text]``; a masked prompt and its region see each other,
a global prompt only the background, image tokens all image tokens; the mask on the even main layers of the
conditioned pass only; real tokens not seeing padding there.
"""

from __future__ import annotations

import pytest
import torch

from invokeai_provider.models.z_image import regional
from invokeai_provider.models.z_image.denoise_loop import ZImageDenoiseJob, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_attention_mask_of_a_region_and_a_global_prompt() -> None:
    """A 2x2 token image; prompt A (2 tokens) on the left column, a global prompt G (1 token), which then covers the
    right column (the background). Rows attend to columns; order ``[i0 i1 i2 i3 | a0 a1 | g0]``."""
    left = torch.tensor([1.0, 0.0, 1.0, 0.0])  # row-major tokens: top-left, top-right, bottom-left, bottom-right
    expected = torch.tensor([
        [1, 1, 1, 1, 1, 1, 0],  # i0 (left): every image token, A
        [1, 1, 1, 1, 0, 0, 1],  # i1 (right, background): every image token, G
        [1, 1, 1, 1, 1, 1, 0],  # i2
        [1, 1, 1, 1, 0, 0, 1],  # i3
        [1, 0, 1, 0, 1, 1, 0],  # a0: its region, itself
        [1, 0, 1, 0, 1, 1, 0],  # a1
        [0, 1, 0, 1, 0, 0, 1],  # g0: the background, itself
    ], dtype=torch.bool)
    assert torch.equal(regional.attention_mask([2, 1], [left, None], 4), expected)


def test_regions_covering_everything_leave_a_global_prompt_no_image_and_uncovered_tokens_no_text() -> None:
    left, right = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mask = regional.attention_mask([1, 1, 1], [left, right, None], 2)  # [i0 i1 | a | b | g]
    assert mask[4, :2].tolist() == [False, False] and mask[:2, 4].tolist() == [False, False]  # g: no image
    assert mask[4, 4] and mask[2, 0] and not mask[2, 1] and mask[3, 1] and not mask[3, 0]
    only_left = regional.attention_mask([1], [left], 2)  # [i0 i1 | a]: i1 is in no region and there is no global
    assert only_left[1].tolist() == [True, True, False] and only_left[0].tolist() == [True, True, True]


def test_unmasked_prompts_get_no_mask() -> None:
    assert regional.attention_mask([3, 2], [None, None], 4) is None


def test_region_masks_go_to_the_token_grid_nearest_and_at_half() -> None:
    """A 64x32 image is a 4x2 token grid; the mask is nearest-resized and 0/1 at 0.5 (bool masks as they are)."""
    mask = torch.zeros(1, 64, 32)
    mask[:, :32, :16] = 0.6  # top-left quarter, over the threshold
    mask[:, 32:, 16:] = 0.4  # bottom-right quarter, under it
    assert regional.region_tokens(mask, 64, 32).tolist() == [1, 0, 1, 0, 0, 0, 0, 0]
    assert regional.region_tokens(torch.ones(16, 8, dtype=torch.bool), 64, 32).tolist() == [1.0] * 8


def test_the_mask_in_the_transformers_padded_sequence() -> None:
    """4 image and 3 text tokens are each padded to 32: real tokens keep the mask among themselves and see no
    padding; padding tokens see everything, as without a mask."""
    compact = regional.attention_mask([2, 1], [torch.tensor([1.0, 0.0, 1.0, 0.0]), None], 4)
    full = regional.sequence_mask(compact, 4)[0, 0]
    assert full.shape == (64, 64)
    real = [0, 1, 2, 3, 32, 33, 34]
    assert torch.equal(full[real][:, real], compact)
    padding = [i for i in range(64) if i not in real]
    assert not full[real][:, padding].any() and full[padding].all()


# --- through the loop, on a tiny transformer ------------------------------------------------------------------------

H, W = 4, 8  # latents: a 2x4 token grid, left half = token columns 0-1, latent columns 0-3
LEFT = torch.tensor([1.0, 1.0, 0.0, 0.0] * 2)
RIGHT = 1 - LEFT


def tiny_transformer(layers: int) -> torch.nn.Module:
    from invokeai_provider.models.testing.tiny_z_image import _transformer

    return _transformer(5, layers=layers)


def prompt(seed: int, tokens: int = 5) -> torch.Tensor:
    from invokeai_provider.models.testing.tiny_z_image import QWEN3_WIDTH

    return torch.randn(tokens, QWEN3_WIDTH, generator=torch.Generator().manual_seed(seed))


def one_step(transformer: torch.nn.Module, prompts: list[torch.Tensor], masks: list, size: tuple[int, int] = (H, W),
             **job) -> torch.Tensor:
    """One Euler step from seeded noise of latent ``size`` (a second step would spread a region's effect through the
    image tokens)."""
    noise = torch.randn(1, 16, *size, generator=torch.Generator().manual_seed(1))
    mask = regional.attention_mask([p.shape[0] for p in prompts], masks, (size[0] // 2) * (size[1] // 2))
    return run(transformer, ZImageDenoiseJob(sigmas=[1.0, 0.5], positive=torch.cat(prompts), noise=noise,
                                             regional=mask, **job))


LEFT_HALF = (slice(None), slice(None), slice(None), slice(0, W // 2))
RIGHT_HALF = (slice(None), slice(None), slice(None), slice(W // 2, None))


def test_a_region_decides_which_image_tokens_see_its_prompt() -> None:
    """Prompt A on the left, B on the right, against B covering nothing: with one (masked) main layer the left
    half's step is exactly the same, the right half's is not. (Another right *prompt* would still reach the left
    half: the caption refiner attends over all the prompts' tokens, unmasked in InvokeAI too.) Without masks, both
    prompts reach the left half."""
    transformer = tiny_transformer(1)
    prompts = [prompt(1), prompt(2)]
    both = one_step(transformer, prompts, [LEFT, RIGHT])
    b_nowhere = one_step(transformer, prompts, [LEFT, torch.zeros(8)])
    assert torch.equal(both[LEFT_HALF], b_nowhere[LEFT_HALF])
    assert not torch.allclose(both[RIGHT_HALF], b_nowhere[RIGHT_HALF], atol=1e-4)
    plain = one_step(transformer, prompts, [None, None])
    assert not torch.allclose(both[LEFT_HALF], plain[LEFT_HALF], atol=1e-4)


def test_the_mask_goes_to_the_even_main_layers_of_the_conditioned_pass() -> None:
    """Recorded at the attention modules: with CFG, per step the conditioned pass gives main layers 0 and 2 (of
    three) the regional mask; layer 1, the refiners and the negative pass get none (a batch of one has no padding
    mask). After the loop the hooks are gone."""
    transformer = tiny_transformer(3)
    seen: list[tuple[str, int, bool]] = []
    for group in ("layers", "noise_refiner", "context_refiner"):
        for index, layer in enumerate(getattr(transformer, group)):
            layer.attention.register_forward_pre_hook(
                lambda module, args, kwargs, g=group, i=index:
                seen.append((g, i, kwargs.get("attention_mask") is not None)), with_kwargs=True)
    prompts = [prompt(1), prompt(2)]
    one_step(transformer, prompts, [LEFT, RIGHT], negative=prompt(3), guidance_scale=2.0)
    main = [(i, masked) for g, i, masked in seen if g == "layers"]
    assert main == [(0, True), (1, False), (2, True), (0, False), (1, False), (2, False)]
    assert not any(masked for g, _, masked in seen if g != "layers")
    assert all(not layer._forward_pre_hooks for layer in transformer.layers)


def test_the_negative_pass_runs_unmasked() -> None:
    """CFG with the joined prompts as the negative: the unconditioned prediction is the unmasked one, so the step is
    2 * (masked step) - (unmasked step) (one Euler step is linear in the prediction)."""
    transformer = tiny_transformer(1)
    prompts = [prompt(1), prompt(2)]
    masked = one_step(transformer, prompts, [LEFT, RIGHT])
    plain = one_step(transformer, prompts, [None, None])
    guided = one_step(transformer, prompts, [LEFT, RIGHT], negative=torch.cat(prompts), guidance_scale=2.0)
    assert not torch.allclose(masked, plain, atol=1e-4)
    torch.testing.assert_close(guided, 2 * masked - plain, atol=1e-5, rtol=0)


def test_an_all_ones_region_without_padding_is_the_plain_prompt() -> None:
    """With 32 prompt tokens and 32 image tokens (no padding to hide), one region over the whole image gives the
    plain prompt's step (measured max difference 0 or float rounding; tolerance 1e-6)."""
    transformer = tiny_transformer(3)
    text = [prompt(4, tokens=32)]
    whole = one_step(transformer, text, [torch.ones(32)], size=(8, 16))  # 4x8 = 32 tokens
    plain = one_step(transformer, text, [None], size=(8, 16))
    print("all-ones region vs plain, max difference:", (whole - plain).abs().max().item())
    torch.testing.assert_close(whole, plain, atol=1e-6, rtol=0)


def test_a_mask_that_does_not_fit_the_prompt_is_refused() -> None:
    transformer = tiny_transformer(1)
    noise = torch.randn(1, 16, H, W)
    with pytest.raises(ValueError, match=r"regional mask is \(10, 10\); 8 image and 5 prompt tokens need \(13, 13\)"):
        run(transformer, ZImageDenoiseJob(sigmas=[1.0, 0.5], positive=prompt(1), noise=noise,
                                          regional=torch.ones(10, 10, dtype=torch.bool)))


def test_the_mask_also_applies_on_controlnet_steps() -> None:
    """A deliberate difference from InvokeAI, whose ControlNet pass runs its own forward without the regional mask:
    here the ControlNet's hints and the regions combine, so emptying the right region still changes the step."""
    from invokeai_provider.models.testing.tiny_z_image import _controlnet
    from invokeai_provider.models.z_image.control import ZImageControl

    transformer = tiny_transformer(3)
    latents = torch.randn(16, 1, H, W, generator=torch.Generator().manual_seed(2))
    control = ZImageControl(model=_controlnet(5, 16), latents=latents, scale=0.75)
    prompts = [prompt(1), prompt(2)]
    both = one_step(transformer, prompts, [LEFT, RIGHT], control=control)
    right_empty = one_step(transformer, prompts, [LEFT, torch.zeros(8)], control=control)
    without_control = one_step(transformer, prompts, [LEFT, RIGHT])
    assert not torch.allclose(both, without_control, atol=1e-4)  # the ControlNet acted
    assert not torch.allclose(both[RIGHT_HALF], right_empty[RIGHT_HALF], atol=1e-4)

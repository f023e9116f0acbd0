"""FLUX.1 steered by images, against diffusers' own pipelines with the same tiny weights, prompt, noise and steps:
inpainting (FluxInpaintPipeline), FLUX Fill (FluxFillPipeline) and Kontext (FluxKontextPipeline); and each
ingredient has teeth (leaving it out gives another image)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from invokeai_provider.models.flux import denoise_loop, image_conditioning, sampling, vae
from invokeai_provider.models.flux.text_encoding import FluxConditioning, encode_clip, encode_t5
from invokeai_provider.models.testing.tiny_flux import MAX_SEQ_LEN, flux_components

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a lighthouse in a storm, oil painting"
HEIGHT, WIDTH, STEPS, GUIDANCE = 64, 48, 4, 3.5
TOLERANCE = 1e-3  # of the full [0, 1] range; what is left is float32 summation order


def conditioning(parts: dict[str, Any], variant: str) -> FluxConditioning:
    return FluxConditioning(
        t5_embeds=encode_t5(parts["tokenizer_2"], parts["text_encoder_2"], PROMPT, MAX_SEQ_LEN[variant]),
        clip_embeds=encode_clip(parts["tokenizer"], parts["text_encoder"], PROMPT))


def ours(parts: dict[str, Any], variant: str, noise: torch.Tensor, **job: Any) -> torch.Tensor:
    timesteps = sampling.schedule(STEPS, (HEIGHT // 16) * (WIDTH // 16), shift=variant != "schnell")
    latents = denoise_loop.run(parts["transformer"], denoise_loop.FluxDenoiseJob(
        noise=noise, positive=conditioning(parts, variant), timesteps=timesteps, height=HEIGHT, width=WIDTH,
        guidance=GUIDANCE, **job))
    return (vae.decode(parts["vae"], latents) / 2 + 0.5).clamp(0, 1)


def picture(seed: int, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """A smooth random picture in [0, 1] (a VAE of random weights makes any input an image)."""
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def region() -> torch.Tensor:
    """(1, 1, H, W), 1 in a block-aligned rectangle: the region to regenerate or fill."""
    mask = torch.zeros(1, 1, HEIGHT, WIDTH)
    mask[..., 16:48, 16:32] = 1.0
    return mask


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return flux_components("dev", seed=7)


def test_inpainting_gives_flux_inpaint_pipelines_image(dev: dict[str, Any]) -> None:
    from diffusers import FluxInpaintPipeline

    image = picture(1)
    noise = sampling.noise(3, HEIGHT, WIDTH)
    init = vae.encode(dev["vae"], image * 2 - 1, generator=torch.Generator().manual_seed(0))
    regenerate = torch.nn.functional.interpolate(region(), size=(HEIGHT // 8, WIDTH // 8), mode="bilinear",
                                                 align_corners=False)
    mine = ours(dev, "dev", noise, init_latents=init, inpaint_mask=regenerate)
    pipe = FluxInpaintPipeline(**dev)
    reference = pipe(PROMPT, image=image, mask_image=region(), height=HEIGHT, width=WIDTH, strength=1.0,
                     num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=noise,
                     generator=torch.Generator().manual_seed(0), max_sequence_length=512, output_type="pt").images
    difference = (mine - reference).abs().max().item()
    assert difference < TOLERANCE, f"inpainting differs from FluxInpaintPipeline by {difference:.2e}"
    unmasked = ours(dev, "dev", noise, init_latents=init)
    assert (unmasked - reference).abs().max().item() > 10 * TOLERANCE  # without the mask: another image
    kept = (vae.decode(dev["vae"], init) / 2 + 0.5).clamp(0, 1)
    outside = region().expand_as(mine) == 0
    assert (mine - kept)[outside].abs().max() < (mine - kept)[~outside].abs().max()  # kept where it should be


def test_fill_gives_flux_fill_pipelines_image() -> None:
    from diffusers import FluxFillPipeline

    parts = flux_components("fill", seed=8)
    image, mask = picture(2), region()
    noise = sampling.noise(4, HEIGHT, WIDTH)
    condition = image_conditioning.fill_condition(parts["vae"], image * 2 - 1, mask[:, 0].bool())
    assert condition.shape == (1, (HEIGHT // 16) * (WIDTH // 16), 320)
    mine = ours(parts, "fill", noise, channel_condition=condition)
    pipe = FluxFillPipeline(**parts)
    reference = pipe(PROMPT, image=image, mask_image=mask, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
                     guidance_scale=GUIDANCE, latents=sampling.pack(noise), generator=torch.Generator().manual_seed(0),
                     max_sequence_length=512, output_type="pt").images
    difference = (mine - reference).abs().max().item()
    assert difference < TOLERANCE, f"FLUX Fill differs from FluxFillPipeline by {difference:.2e}"
    no_mask = image_conditioning.fill_condition(parts["vae"], image * 2 - 1, torch.zeros_like(mask[:, 0]).bool())
    assert (ours(parts, "fill", noise, channel_condition=no_mask) - reference).abs().max().item() > 10 * TOLERANCE


def test_kontext_gives_flux_kontext_pipelines_image(dev: dict[str, Any]) -> None:
    from diffusers import FluxKontextPipeline

    reference_image = picture(5, 32, 48)  # another size than the output: its own positions
    noise = sampling.noise(6, HEIGHT, WIDTH)
    tokens, ids = image_conditioning.kontext_references(dev["vae"], [reference_image * 2 - 1])
    assert tokens.shape == (1, 6, 64) and ids[:, 0].eq(1).all() and ids[-1].tolist() == [1.0, 1.0, 2.0]
    mine = ours(dev, "dev", noise, reference_tokens=tokens, reference_ids=ids)
    pipe = FluxKontextPipeline(**dev)
    reference = pipe(image=reference_image, prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
                     guidance_scale=GUIDANCE, latents=sampling.pack(noise), max_sequence_length=512,
                     max_area=HEIGHT * WIDTH, _auto_resize=False, output_type="pt").images
    difference = (mine - reference).abs().max().item()
    assert difference < TOLERANCE, f"Kontext differs from FluxKontextPipeline by {difference:.2e}"
    # a tiny random transformer leans on the reference only a little, but leaving it out fails the tolerance
    assert (ours(dev, "dev", noise) - reference).abs().max().item() > 3 * TOLERANCE


def test_a_second_kontext_image_goes_beside_or_below() -> None:
    """InvokeAI's canvas rule: the next reference goes where the canvas stays closer to square."""
    class Identity:  # latents of 1/8 the size, so the rule sees the shapes it would
        config = type("C", (), {"scaling_factor": 1.0, "shift_factor": 0.0})()
        device, dtype = torch.device("cpu"), torch.float32

        def encode(self, image: torch.Tensor) -> Any:
            latents = torch.zeros(1, 16, image.shape[2] // 8, image.shape[3] // 8)
            return type("Out", (), {"latent_dist": type("D", (), {"mode": lambda self: latents})()})()

    wide = torch.zeros(1, 3, 16, 48)  # 2x6 latents: stacking keeps the canvas nearer square
    _, ids = image_conditioning.kontext_references(Identity(), [wide, wide])
    assert ids[3:, 1].min().item() == 1 and ids[3:, 2].min().item() == 0  # the second is below the first
    tall = torch.zeros(1, 3, 48, 16)
    _, ids = image_conditioning.kontext_references(Identity(), [tall, tall])
    assert ids[3:, 1].min().item() == 0 and ids[3:, 2].min().item() == 1  # beside
    odd = torch.zeros(1, 3, 24, 16)  # 3x2 latents: wrapped to 4x2
    tokens, ids = image_conditioning.kontext_references(Identity(), [odd])
    assert tokens.shape == (1, 2, 64) and ids.shape == (2, 3)

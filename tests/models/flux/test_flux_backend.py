"""FLUX.1's backend against diffusers' own FluxPipeline with the same tiny weights, prompt, noise, size and steps:
the same image (dev with guidance, schnell without), and a deterministic but wrong schedule is caught."""

from __future__ import annotations

from typing import Any

import pytest

from invokeai_provider.models.flux import denoise_loop, sampling, vae
from invokeai_provider.models.flux.text_encoding import FluxConditioning, encode_clip, encode_t5
from invokeai_provider.models.testing.tiny_flux import MAX_SEQ_LEN, flux_components

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = "a lighthouse in a storm, oil painting"
HEIGHT, WIDTH, STEPS, GUIDANCE = 64, 48, 4, 3.5


@pytest.fixture(scope="module", params=["dev", "schnell"])
def model(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, flux_components(request.param, seed=3)


def ours(variant: str, parts: dict[str, Any], noise: Any, *, shift: bool | None = None) -> Any:
    conditioning = FluxConditioning(
        t5_embeds=encode_t5(parts["tokenizer_2"], parts["text_encoder_2"], PROMPT, MAX_SEQ_LEN[variant]),
        clip_embeds=encode_clip(parts["tokenizer"], parts["text_encoder"], PROMPT))
    tokens = (HEIGHT // 16) * (WIDTH // 16)
    timesteps = sampling.schedule(STEPS, tokens, shift=variant == "dev" if shift is None else shift)
    latents = denoise_loop.run(parts["transformer"], denoise_loop.FluxDenoiseJob(
        noise=noise, positive=conditioning, timesteps=timesteps, height=HEIGHT, width=WIDTH, guidance=GUIDANCE))
    return (vae.decode(parts["vae"], latents) / 2 + 0.5).clamp(0, 1)


def theirs(variant: str, parts: dict[str, Any], noise: Any) -> Any:
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**parts)
    return pipe(PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                latents=sampling.pack(noise), max_sequence_length=MAX_SEQ_LEN[variant], output_type="pt").images


def test_text_to_image_gives_flux_pipelines_image(model: tuple[str, dict[str, Any]]) -> None:
    variant, parts = model
    noise = sampling.noise(42, HEIGHT, WIDTH)
    mine, reference = ours(variant, parts, noise), theirs(variant, parts, noise)
    assert mine.shape == reference.shape == (1, 3, HEIGHT, WIDTH)
    difference = (mine - reference).abs().max().item()
    assert difference < 1e-3, f"{variant}: differs from FluxPipeline by {difference:.2e} (tolerance 1e-3 of full range)"
    assert reference.std().item() > 0.01  # an image, not a flat field


def test_the_dev_schedule_shift_matters(model: tuple[str, dict[str, Any]]) -> None:
    """The parity test has teeth: dev without its resolution-dependent shift gives another image."""
    variant, parts = model
    if variant != "dev":
        pytest.skip("schnell does not shift")
    noise = sampling.noise(42, HEIGHT, WIDTH)
    unshifted = ours(variant, parts, noise, shift=False)
    assert (unshifted - theirs(variant, parts, noise)).abs().max().item() > 1e-2


def test_invokeai_noise_schedule_and_packing() -> None:
    import torch

    first, again = sampling.noise(7, 64, 48), sampling.noise(7, 64, 48)
    assert first.shape == (1, 16, 8, 6) and torch.equal(first, again)
    assert not torch.equal(first, sampling.noise(8, 64, 48))
    assert torch.equal(sampling.unpack(sampling.pack(first), 64, 48), first)
    assert sampling.schedule(4, 12, shift=False) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    shifted = sampling.schedule(4, 4096, shift=True)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and shifted[2] > 0.5  # dev spends more steps near noise
    assert sampling.clip_schedule([1.0, 0.75, 0.5, 0.25, 0.0], 0.5, 1.0) == [0.5, 0.25, 0.0]
    assert sampling.clip_schedule([1.0, 0.75, 0.5, 0.25, 0.0], 0.4, 1.0) == [0.6, 0.5, 0.25, 0.0]
    ids = sampling.image_ids(64, 48)
    assert ids.shape == (12, 3) and ids[5].tolist() == [0.0, 1.0, 2.0]


def test_image_to_image_gives_flux_img2img_pipelines_image() -> None:
    """Starting half way (InvokeAI's denoising_start 0.5, diffusers' strength 0.5) from an encoded image; schnell's
    unshifted schedule puts 0.5 on a step, where InvokeAI's fractional clipping and diffusers' agree."""
    import torch
    from diffusers import FluxImg2ImgPipeline

    parts = flux_components("schnell", seed=5)
    generator = torch.Generator().manual_seed(11)
    picture = torch.rand(1, 3, HEIGHT, WIDTH, generator=generator) * 2 - 1
    init = vae.encode(parts["vae"], picture)  # the mode: no sampling, as both sides take it
    # diffusers draws its own noise when it mixes the image in (latents= would skip the image): draw it its way
    noise = torch.randn(1, 16, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(9))
    conditioning = FluxConditioning(
        t5_embeds=encode_t5(parts["tokenizer_2"], parts["text_encoder_2"], PROMPT, MAX_SEQ_LEN["schnell"]),
        clip_embeds=encode_clip(parts["tokenizer"], parts["text_encoder"], PROMPT))
    timesteps = sampling.clip_schedule(sampling.schedule(STEPS, (HEIGHT // 16) * (WIDTH // 16), shift=False), 0.5, 1.0)
    latents = denoise_loop.run(parts["transformer"], denoise_loop.FluxDenoiseJob(
        noise=noise, positive=conditioning, timesteps=timesteps, height=HEIGHT, width=WIDTH, init_latents=init))
    mine = (vae.decode(parts["vae"], latents) / 2 + 0.5).clamp(0, 1)

    pipe = FluxImg2ImgPipeline(**parts)

    class Mode:  # diffusers samples the posterior with the generator; both sides take the mode here
        def __init__(self, dist: Any) -> None:
            self.mode = dist.mode

        def sample(self, generator: Any = None) -> Any:
            return self.mode()

    encode = pipe.vae.encode
    pipe.vae.encode = lambda x, *a, **k: type("Out", (), {"latent_dist": Mode(encode(x).latent_dist)})()
    reference = pipe(PROMPT, image=(picture / 2 + 0.5), height=HEIGHT, width=WIDTH, strength=0.5,
                     num_inference_steps=STEPS, generator=torch.Generator().manual_seed(9),
                     max_sequence_length=MAX_SEQ_LEN["schnell"], output_type="pt").images
    difference = (mine - reference).abs().max().item()
    assert difference < 1e-3, f"image-to-image differs from FluxImg2ImgPipeline by {difference:.2e}"
    assert (mine - (picture / 2 + 0.5)).abs().max().item() > 0.05  # denoised, not the input handed back

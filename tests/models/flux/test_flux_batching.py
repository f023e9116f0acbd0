"""Several FLUX jobs through the transformer at once (the GPU runtime's batches): each gets the latents it gets
alone, with its own image-to-image start, inpainting and true CFG; a job canceled mid-way leaves the others be;
jobs that differ in what a pass shares are refused."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from invokeai_provider.models.flux import denoise_loop, sampling
from invokeai_provider.models.flux.text_encoding import FluxConditioning, encode_clip, encode_t5
from invokeai_provider.models.testing.tiny_flux import MAX_SEQ_LEN, flux_components

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEIGHT, WIDTH, STEPS = 32, 48, 3


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return flux_components("dev", seed=21)


def conditioning(parts: dict[str, Any], prompt: str) -> FluxConditioning:
    return FluxConditioning(t5_embeds=encode_t5(parts["tokenizer_2"], parts["text_encoder_2"], prompt,
                                                MAX_SEQ_LEN["dev"]),
                            clip_embeds=encode_clip(parts["tokenizer"], parts["text_encoder"], prompt))


def jobs(parts: dict[str, Any]) -> list[denoise_loop.FluxDenoiseJob]:
    """Three jobs: plain, image-to-image with inpainting, and with a different prompt; all with true CFG."""
    timesteps = sampling.clip_schedule(sampling.schedule(STEPS, 6, shift=True), 0.3, 1.0)
    negative = conditioning(parts, "blurry")
    init = torch.randn(1, 16, 4, 6, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 4, 6)
    mask[..., :, :3] = 1.0
    common = dict(timesteps=timesteps, height=HEIGHT, width=WIDTH, guidance=3.5, negative=negative,
                  cfg_scale=[2.0] * (len(timesteps) - 1), init_latents=init)
    return [denoise_loop.FluxDenoiseJob(noise=sampling.noise(seed, HEIGHT, WIDTH),
                                        positive=conditioning(parts, prompt), inpaint_mask=inpaint, **common)
            for seed, prompt, inpaint in ((1, "a fox", None), (2, "a fox", mask), (3, "a cat on a roof", None))]


def test_a_batch_gives_each_job_its_own_latents(dev: dict[str, Any]) -> None:
    alone = [denoise_loop.run(dev["transformer"], job) for job in jobs(dev)]
    together = denoise_loop.run_batch(dev["transformer"], jobs(dev))
    for single, batched in zip(alone, together):
        torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)
    assert (alone[0] - alone[2]).abs().max() > 0.1  # the prompts made a difference


def test_a_job_canceled_mid_batch_stops_and_the_others_finish(dev: dict[str, Any]) -> None:
    class Canceled(Exception):
        pass

    def cancel_at_one(step: int, total: int) -> None:
        if step == 1:
            raise Canceled

    steps: list[int] = []
    outcomes = denoise_loop.run_batch(dev["transformer"], jobs(dev),
                                      [None, cancel_at_one, lambda step, total: steps.append(step)])
    total = len(jobs(dev)[0].timesteps) - 1
    assert total >= 2 and isinstance(outcomes[1], Canceled) and steps == list(range(1, total + 1))
    torch.testing.assert_close(outcomes[2], denoise_loop.run(dev["transformer"], jobs(dev)[2]), rtol=0, atol=1e-5)


def test_jobs_that_cannot_share_a_pass_are_refused(dev: dict[str, Any]) -> None:
    first, second, _ = jobs(dev)
    second.guidance = 5.0
    with pytest.raises(ValueError, match="share their batch signature"):
        denoise_loop.run_batch(dev["transformer"], [first, second])

"""InvokeAI's other FLUX samplers: Heun (diffusers' FlowMatchHeunDiscreteScheduler, two passes per step) and LCM
(FlowMatchLCMScheduler, fresh noise at each step), over their own schedules as InvokeAI runs them."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from invokeai_provider.models.flux import denoise_loop, sampling
from invokeai_provider.models.flux.text_encoding import FluxConditioning, encode_clip, encode_t5
from invokeai_provider.models.testing.tiny_flux import flux_components

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEIGHT, WIDTH = 32, 48


@pytest.fixture(scope="module")
def schnell() -> tuple[dict[str, Any], FluxConditioning]:
    parts = flux_components("schnell", seed=3)
    conditioning = FluxConditioning(
        t5_embeds=encode_t5(parts["tokenizer_2"], parts["text_encoder_2"], "a fox", 256),
        clip_embeds=encode_clip(parts["tokenizer"], parts["text_encoder"], "a fox"))
    return parts, conditioning


def denoised(model: tuple[dict[str, Any], FluxConditioning], scheduler: str, steps: int, *, seed: int = 1,
             timesteps: list[float] | None = None, on_step: Any = None) -> torch.Tensor:
    parts, conditioning = model
    job = denoise_loop.FluxDenoiseJob(
        noise=sampling.noise(1, HEIGHT, WIDTH), positive=conditioning, height=HEIGHT, width=WIDTH,
        timesteps=timesteps or sampling.schedule(steps, 6, shift=False), scheduler=scheduler, seed=seed)
    return denoise_loop.run(parts["transformer"], job, on_step=on_step)


def test_heun_is_second_order(schnell: tuple[dict[str, Any], FluxConditioning]) -> None:
    """Against a 512-step Euler solution of the same flow, 4 Heun steps land far closer than 4 Euler steps (a Heun
    path that skipped its correction would be no better than Euler)."""
    fine = denoised(schnell, "euler", 512, timesteps=torch.linspace(1, 0, 513).tolist())
    euler = (denoised(schnell, "euler", 4) - fine).abs().max().item()
    heun = (denoised(schnell, "heun", 4) - fine).abs().max().item()
    assert heun < euler / 2, f"Heun error {heun:.3f}, Euler error {euler:.3f}"


def test_heun_reports_user_steps(schnell: tuple[dict[str, Any], FluxConditioning]) -> None:
    steps: list[tuple[int, int]] = []
    denoised(schnell, "heun", 4, on_step=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # one per step, after its second pass, as InvokeAI reports


def test_lcm_draws_its_step_noise_from_the_seed(schnell: tuple[dict[str, Any], FluxConditioning]) -> None:
    first, again = denoised(schnell, "lcm", 4, seed=5), denoised(schnell, "lcm", 4, seed=5)
    assert torch.equal(first, again)
    assert (first - denoised(schnell, "lcm", 4, seed=6)).abs().max() > 1e-2
    assert (first - denoised(schnell, "euler", 4)).abs().max() > 1e-2


def test_diffusers_samplers_run_alone() -> None:
    job = denoise_loop.FluxDenoiseJob(noise=torch.zeros(1), positive=FluxConditioning(torch.zeros(1, 2, 3),
                                                                                       torch.zeros(1, 3)),
                                      timesteps=[1.0, 0.0], height=16, width=16, scheduler="heun")
    assert denoise_loop.batch_signature(job)["alone"] == id(job)
    with pytest.raises(ValueError, match="FLUX scheduler 'dpm'"):
        sampling.flow_scheduler("dpm", 4)

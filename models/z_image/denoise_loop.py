"""Z-Image's denoising loop (InvokeAI's ``z_image_denoise``) over diffusers' ``ZImageTransformer2DModel``: Euler steps
of the flow-matching ODE along `sampling.sigmas`, an optional CFG with a negative prompt, image-to-image by starting
part way with the image's latents mixed into the noise, inpainting (after each step the kept region is put back on
the image's own noise trajectory), a ControlNet's hints added after the transformer's layers and regional prompts
(`regional`: the positive pass's even main layers take the prompts' attention mask).

The transformer takes a list of ``(16, 1, h/8, w/8)`` latents, the timestep as ``1 - sigma`` and a list of prompt
embeddings; its prediction is negated to give the flow's velocity. ``heun`` and ``lcm`` step with diffusers'
schedulers over their own unshifted schedules, as InvokeAI's do (LCM's step noise seeded by ``seed``). Latents stay
in float32 between steps (InvokeAI keeps them in the transformer's dtype); the transformer runs in its own dtype.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from invokeai_provider.models.z_image.control import ZImageControl, borrowing
from invokeai_provider.models.z_image.regional import regional_attention

if TYPE_CHECKING:
    import torch


@dataclass
class ZImageDenoiseJob:
    """One image's denoising: what it starts from, the sigmas to run (clipped for image-to-image) and guidance."""

    sigmas: list[float]
    positive: "torch.Tensor"  # (tokens, width) prompt embeddings
    noise: Optional["torch.Tensor"] = None  # (1, 16, h/8, w/8); None only for image-to-image without added noise
    negative: Optional["torch.Tensor"] = None
    guidance_scale: float = 1.0  # CFG when > 1 and a negative is set: uncond + scale * (cond - uncond)
    init_latents: Optional["torch.Tensor"] = None  # image-to-image: the image's latents
    add_noise: bool = True  # image-to-image: start from the image noised to the first sigma, else as it is
    # inpainting: (1, 1, h/8, w/8), 1 where the image is regenerated, 0 where kept; needs init_latents and noise
    inpaint_mask: Optional["torch.Tensor"] = None
    scheduler: str = "euler"
    seed: int = 0  # LCM's step noise
    control: Optional[ZImageControl] = None
    # regional prompts: `regional.attention_mask` over [image, positive text] tokens (True = attend); None = none
    regional: Optional["torch.Tensor"] = None


def start_latents(job: ZImageDenoiseJob) -> "torch.Tensor":
    """The latents the first step takes: noise; the image's latents noised to the first sigma; or them as they are."""
    if job.init_latents is None:
        if job.noise is None:
            raise ValueError("text-to-image needs noise")
        return job.noise.float()
    if not job.add_noise:
        return job.init_latents.float()
    first = job.sigmas[0]
    return first * job.noise.float() + (1.0 - first) * job.init_latents.float()


def run(transformer: Any, job: ZImageDenoiseJob, *, on_step: Optional[Callable[[int, int], None]] = None
        ) -> "torch.Tensor":
    """The denoised latents ``(1, 16, h/8, w/8)`` in float32. ``on_step(step, total)`` after each user-facing step
    (it may raise to cancel)."""
    import torch

    from invokeai_provider.models.flux.denoise_loop import _keep_unmasked  # the same rectified-flow merge

    device, dtype = transformer.device, transformer.dtype
    latents = start_latents(job).to(device)
    total = len(job.sigmas) - 1
    if total <= 0:
        return latents
    keep = None
    if job.inpaint_mask is not None:
        if job.init_latents is None or job.noise is None:
            raise ValueError("inpainting needs the image's latents and noise")
        keep = tuple(t.to(device=device, dtype=torch.float32) for t in (job.inpaint_mask, job.init_latents,
                                                                          job.noise))
    embeds = {sign: None if e is None else e.to(device=device, dtype=dtype)
              for sign, e in (("positive", job.positive), ("negative", job.negative))}
    cfg = job.negative is not None and abs(job.guidance_scale - 1.0) > 1e-9

    with ExitStack() as stack:
        controlnet = control_input = None
        if job.control is not None:
            controlnet = stack.enter_context(borrowing(job.control.model, transformer))
            control_input = [job.control.latents.to(device=device, dtype=dtype)]
        image_tokens = (latents.shape[-2] // 2) * (latents.shape[-1] // 2)
        expected = image_tokens + job.positive.shape[0]
        if job.regional is not None and tuple(job.regional.shape) != (expected, expected):
            raise ValueError(f"the regional mask is {tuple(job.regional.shape)}; {image_tokens} image and "
                             f"{job.positive.shape[0]} prompt tokens need ({expected}, {expected})")
        regional = stack.enter_context(regional_attention(transformer, job.regional, image_tokens))

        def predict(sign: str, sigma: float, step: int) -> "torch.Tensor":
            x = list(latents.to(dtype).unsqueeze(2).unbind(0))
            t = torch.tensor([1.0 - sigma], device=device, dtype=dtype)
            samples = None
            if controlnet is not None and job.control.applies(step, total):
                samples = controlnet(x, t, [embeds[sign]], control_input, conditioning_scale=job.control.scale)
            with torch.no_grad(), regional() if sign == "positive" else nullcontext():
                out = transformer(x, t, [embeds[sign]], controlnet_block_samples=samples, return_dict=False)[0]
            return -torch.stack([o.float() for o in out]).squeeze(2)

        def velocity(sigma: float, step: int) -> "torch.Tensor":
            cond = predict("positive", sigma, step)
            if not cfg:
                return cond
            uncond = predict("negative", sigma, step)
            return uncond + job.guidance_scale * (cond - uncond)

        with torch.no_grad():
            if job.scheduler == "euler":
                for step in range(total):
                    current, following = job.sigmas[step], job.sigmas[step + 1]
                    latents = latents + (following - current) * velocity(current, step)
                    if keep is not None:
                        latents = _keep_unmasked(latents, *keep, following)
                    if on_step is not None:
                        on_step(step + 1, total)
            else:
                latents = _scheduled(job, latents, total, velocity, keep, on_step)
    return latents


def _scheduled(job: ZImageDenoiseJob, latents: "torch.Tensor", total: int,
               velocity: Callable[[float, int], "torch.Tensor"], keep: Optional[tuple[Any, ...]],
               on_step: Optional[Callable[[int, int], None]]) -> "torch.Tensor":
    """InvokeAI's path for ``heun`` and ``lcm``: diffusers' scheduler over ``total`` steps of its own schedule (Heun
    takes two passes a step and reports after the second)."""
    import torch

    from invokeai_provider.models.flux.denoise_loop import _keep_unmasked
    from invokeai_provider.models.flux.sampling import flow_scheduler

    scheduler = flow_scheduler(job.scheduler, total, latents.device)
    heun = hasattr(scheduler, "state_in_first_order")
    extra = {"generator": torch.Generator("cpu").manual_seed(job.seed)} if job.scheduler == "lcm" else {}
    user_step = 0
    for index, timestep in enumerate(scheduler.timesteps):
        sigma = float(timestep) / scheduler.config.num_train_timesteps
        second = heun and not scheduler.state_in_first_order
        latents = scheduler.step(velocity(sigma, user_step), timestep, latents, **extra).prev_sample.float()
        following = float(scheduler.sigmas[index + 1]) if index + 1 < len(scheduler.sigmas) else 0.0
        if keep is not None:
            latents = _keep_unmasked(latents, *keep, following)
        last = index == len(scheduler.timesteps) - 1
        if heun and not second and not last:
            continue
        user_step = total if last else user_step + 1  # Heun's last step has no second pass
        if on_step is not None and user_step <= total:
            on_step(user_step, total)
    return latents

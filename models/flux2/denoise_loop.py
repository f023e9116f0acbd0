"""FLUX.2 Klein's denoising loop (InvokeAI's ``flux2_denoise``) over diffusers' ``Flux2Transformer2DModel``.

Two paths, as InvokeAI splits them:

- text-to-image (no denoise mask, ``denoising_start`` 0): diffusers' flow-matching scheduler steps (Euler or LCM with
  Klein's exponential shift at the fixed mu of 2.02, or Heun's static shift) over the linear sigmas;
- image-to-image and inpainting: plain Euler steps along the linear sigmas clipped to ``denoising_start`` /
  ``denoising_end``, unshifted, starting from the image's latents mixed with the noise at the first sigma (or the
  latents as given without ``add_noise``); with a mask, the kept region is put back on the image's own noise
  trajectory after every step.

The transformer works on latents normalized by the VAE's batch-norm statistics: image latents (and the noise mixed
into them) are normalized before the loop, pure noise is taken as already normalized, and the result is
denormalized. True CFG runs a second pass with the negative prompt when ``cfg_scale`` is not 1. Reference images
(`reference_images`) ride along as extra tokens whose predictions are dropped; regional prompts (`regional`) mask
the positive pass's attention.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from invokeai_provider.models.flux2 import sampling

if TYPE_CHECKING:
    import torch


@dataclass
class Flux2DenoiseJob:
    """One image's denoising, prepared by the node: every tensor on the CPU, in float32 or its own dtype."""

    height: int
    width: int
    timesteps: list[float]  # `sampling.linear_schedule`, clipped to the node's start and end
    positive: "torch.Tensor"  # (1, text tokens, 3 * width): the prompts joined (regional prompts side by side)
    noise: Optional["torch.Tensor"] = None  # (1, 32, h, w); None when it is never used
    init_latents: Optional["torch.Tensor"] = None  # image-to-image: the image's latents (not normalized)
    add_noise: bool = True
    negative: Optional["torch.Tensor"] = None
    cfg_scale: float = 1.0
    guidance: float = 4.0  # ignored by Klein (no guidance embedder)
    scheduler: str = "euler"
    use_scheduler: bool = True  # InvokeAI's text-to-image path; False: Euler on the clipped linear sigmas
    inpaint_mask: Optional["torch.Tensor"] = None  # (1, 1, h, w): 1 where regenerated (the denoise mask inverted)
    bn: Optional[tuple["torch.Tensor", "torch.Tensor"]] = None  # the VAE's batch-norm mean and std (128,)
    reference_tokens: Optional["torch.Tensor"] = None  # (1, n, 128), normalized
    reference_ids: Optional["torch.Tensor"] = None  # (n, 4)
    attention_mask: Optional["torch.Tensor"] = None  # regional prompts: (text + image tokens)^2, True = attend
    seed: int = 0  # LCM's step noise
    extras: dict[str, Any] = field(default_factory=dict)


def start_latents(job: Flux2DenoiseJob) -> "torch.Tensor":
    """The latents the loop starts from, before packing: noise, or the image's latents (noised to the first sigma
    when ``add_noise``)."""
    if job.init_latents is None:
        return job.noise
    if job.add_noise:
        start = job.timesteps[0]
        return start * job.noise + (1.0 - start) * job.init_latents
    return job.init_latents


def run(transformer: Any, job: Flux2DenoiseJob, *,
        on_step: Optional[Callable[[int, int], None]] = None) -> "torch.Tensor":
    """The denoised latents ``(1, 32, h, w)`` in float32. ``on_step(step, total)`` after each step (it may raise to
    cancel)."""
    import torch

    device, dtype = transformer.device, transformer.dtype
    latents = start_latents(job).to(device=device, dtype=dtype)
    if len(job.timesteps) <= 1:
        return latents.float().cpu()
    h, w = latents.shape[-2:]
    tokens = sampling.pack(latents)
    init = noise = mask = None
    if job.init_latents is not None:
        init = sampling.pack(job.init_latents.to(device=device, dtype=dtype))
        noise = sampling.pack(job.noise.to(device=device, dtype=dtype)) if job.noise is not None else None
        if job.bn is not None:  # the image's latents (and their noise) into the transformer's normalized space
            init = sampling.bn_normalize(init, job.bn)
            noise = sampling.bn_normalize(noise, job.bn) if noise is not None else None
            tokens = sampling.bn_normalize(tokens, job.bn)
    if job.inpaint_mask is not None:
        if init is None or noise is None:
            raise ValueError("inpainting needs the image's latents and noise")
        mask = sampling.pack(job.inpaint_mask.to(device=device, dtype=dtype).expand(1, sampling.LATENT_CHANNELS, h, w))

    count = tokens.shape[1]
    img_ids = sampling.image_ids(h, w, device=device)
    if job.reference_ids is not None:
        img_ids = torch.cat([img_ids, job.reference_ids.to(device)])
    references = job.reference_tokens.to(device=device, dtype=dtype) if job.reference_tokens is not None else None
    positive = job.positive.to(device=device, dtype=dtype)
    negative = job.negative.to(device=device, dtype=dtype) if job.negative is not None else None
    attention = None
    if job.attention_mask is not None and references is None:  # InvokeAI drops regional masks with references
        additive = torch.zeros(job.attention_mask.shape, dtype=dtype, device=device)
        additive.masked_fill_(~job.attention_mask.to(device), float("-inf"))
        attention = {"attention_mask": additive[None, None]}
    guidance = torch.full((1,), job.guidance, device=device, dtype=dtype)

    def predict(x: "torch.Tensor", t_curr: float) -> "torch.Tensor":
        hidden = torch.cat([x, references], dim=1) if references is not None else x
        t = torch.full((1,), t_curr, device=device, dtype=dtype)

        def one(text: "torch.Tensor", kwargs: Optional[dict[str, Any]]) -> "torch.Tensor":
            return transformer(hidden_states=hidden, encoder_hidden_states=text, timestep=t,
                               img_ids=img_ids[None], txt_ids=sampling.text_ids(text.shape[1], device)[None],
                               guidance=guidance, joint_attention_kwargs=kwargs, return_dict=False)[0][:, :count]

        prediction = one(positive, attention)
        if not math.isclose(job.cfg_scale, 1.0):
            if negative is None:
                raise ValueError("a negative conditioning is needed when cfg_scale is not 1.0")
            unconditional = one(negative, None)
            prediction = unconditional + job.cfg_scale * (prediction - unconditional)
        return prediction

    def keep(x: "torch.Tensor", t_prev: float) -> "torch.Tensor":
        if mask is None:
            return x
        from invokeai_provider.models.flux.denoise_loop import _keep_unmasked

        return _keep_unmasked(x, mask, init, noise, t_prev)

    total = len(job.timesteps) - 1
    with torch.no_grad():
        if job.use_scheduler:
            tokens = _scheduled(tokens, job, total, predict, keep, on_step, device)
        else:
            for step, (t_curr, t_prev) in enumerate(zip(job.timesteps[:-1], job.timesteps[1:])):
                tokens = keep(tokens + (t_prev - t_curr) * predict(tokens, t_curr), t_prev)
                if on_step is not None:
                    on_step(step + 1, total)
    if job.bn is not None:
        tokens = sampling.bn_denormalize(tokens, job.bn)
    return sampling.unpack(tokens.float(), job.height, job.width).cpu()


def _scheduled(tokens: "torch.Tensor", job: Flux2DenoiseJob, total: int,
               predict: Callable[["torch.Tensor", float], "torch.Tensor"],
               keep: Callable[["torch.Tensor", float], "torch.Tensor"],
               on_step: Optional[Callable[[int, int], None]], device: Any) -> "torch.Tensor":
    """InvokeAI's text-to-image path: diffusers' scheduler over the (unclipped-to-zero) linear sigmas, shifted by
    ``MU`` where it takes sigmas, else its own ``total`` steps (Heun: two passes per step, progress after the
    second)."""
    import torch

    scheduler = sampling.scheduler_for(job.scheduler)
    sigmas = [float(s) for s in job.timesteps[:-1]]
    parameters = inspect.signature(scheduler.set_timesteps).parameters
    if "sigmas" in parameters:
        scheduler.set_timesteps(sigmas=sigmas, mu=sampling.MU, device=device)
    else:
        extra = {"mu": sampling.MU} if "mu" in parameters else {}
        scheduler.set_timesteps(num_inference_steps=len(sigmas), device=device, **extra)
    heun = hasattr(scheduler, "state_in_first_order")
    step_noise = {"generator": torch.Generator("cpu").manual_seed(job.seed)} if job.scheduler == "lcm" else {}
    user_step = 0
    for index, timestep in enumerate(scheduler.timesteps):
        t_curr = timestep.item() / scheduler.config.num_train_timesteps
        first_order = scheduler.state_in_first_order if heun else True
        prediction = predict(tokens, t_curr)
        tokens = scheduler.step(model_output=prediction, timestep=timestep, sample=tokens, **step_noise).prev_sample
        t_prev = scheduler.sigmas[index + 1].item() if index + 1 < len(scheduler.sigmas) else 0.0
        tokens = keep(tokens, t_prev)
        if heun and first_order:
            continue
        user_step += 1
        if on_step is not None and user_step <= total:
            on_step(user_step, total)
    return tokens

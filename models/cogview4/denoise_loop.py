"""CogView4's denoising loop (InvokeAI's ``cogview4_denoise``) over diffusers' ``CogView4Transformer2DModel``: Euler
steps of the flow-matching ODE along the shifted sigmas of `sampling.schedule`, with classifier-free guidance (a
conditional and an unconditional pass per step, as InvokeAI and ``CogView4Pipeline`` run them), image-to-image by
starting part way with the image's latents mixed into the noise, and inpainting (after each step the kept region
is put back on the image's own noise trajectory)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import torch


@dataclass
class CogView4DenoiseJob:
    """One image's denoising: noise, conditionings, the schedule (``timesteps`` and their ``sigmas``, one more than
    the steps) and a CFG scale per step."""

    noise: "torch.Tensor"  # (1, 16, h/8, w/8)
    positive: "torch.Tensor"  # GLM embeddings (1, tokens, width)
    negative: "torch.Tensor"
    timesteps: list[float]
    sigmas: list[float]
    cfg_scale: list[float]
    height: int
    width: int
    init_latents: Optional["torch.Tensor"] = None  # image-to-image: the image's latents
    # inpainting: (1, 1, h/8, w/8), 1 where the image is regenerated and 0 where it is kept
    inpaint_mask: Optional["torch.Tensor"] = None


def start_latents(job: CogView4DenoiseJob) -> "torch.Tensor":
    """Pure noise, or the image's latents noised to the first sigma (image-to-image)."""
    if job.init_latents is None:
        return job.noise
    first = job.sigmas[0]
    return first * job.noise + (1.0 - first) * job.init_latents


def run(transformer: Any, job: CogView4DenoiseJob, *,
        on_step: Optional[Callable[[int, int], None]] = None) -> "torch.Tensor":
    """The denoised latents, in float32 on the CPU. Latents stay in the transformer's dtype between steps and each
    Euler update is made in float32 (InvokeAI's order of casts)."""
    import torch

    from invokeai_provider.models.flux.denoise_loop import _keep_unmasked  # InvokeAI's rectified-flow inpainting

    device, dtype = transformer.device, transformer.dtype
    latents = start_latents(job).to(device=device, dtype=dtype)
    total = len(job.timesteps) - 1
    if total < 1:  # nothing to denoise: the (noised) input as it is
        return latents.float().cpu()
    positive = job.positive.to(device=device, dtype=dtype)
    negative = job.negative.to(device=device, dtype=dtype)
    size = torch.tensor([(job.height, job.width)], dtype=dtype, device=device)
    crop = torch.tensor([(0, 0)], dtype=dtype, device=device)
    init = noise = mask = None
    if job.inpaint_mask is not None:
        if job.init_latents is None:
            raise ValueError("inpainting needs the image's latents (init_latents)")
        init, noise = (t.to(device=device, dtype=dtype) for t in (job.init_latents, job.noise))
        mask = job.inpaint_mask.to(device=device, dtype=dtype)

    def predict(embeds: "torch.Tensor", timestep: "torch.Tensor") -> "torch.Tensor":
        return transformer(hidden_states=latents, encoder_hidden_states=embeds, timestep=timestep,
                           original_size=size, target_size=size, crop_coords=crop, return_dict=False)[0]

    with torch.no_grad():
        for step in range(total):
            timestep = torch.tensor([job.timesteps[step] * 1000], device=device).expand(latents.shape[0])
            conditional = predict(positive, timestep)
            unconditional = predict(negative, timestep)
            prediction = unconditional + job.cfg_scale[step] * (conditional - unconditional)
            sigma, sigma_next = job.sigmas[step], job.sigmas[step + 1]
            latents = (latents.float() + (sigma_next - sigma) * prediction.float()).to(dtype)
            if mask is not None:
                latents = _keep_unmasked(latents, mask, init, noise, sigma_next)
            if on_step is not None:
                on_step(step + 1, total)
    return latents.float().cpu()

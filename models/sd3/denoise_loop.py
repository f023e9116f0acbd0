"""The SD3 denoising loop of InvokeAI's ``sd3_denoise``: Euler steps of a rectified flow from the first timestep to
the last, classifier-free guidance at every step (negative and positive in one batch), and for inpainting the kept
region put back on the image's noised trajectory after each step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import torch


@dataclass
class SD3DenoiseJob:
    """Everything the loop needs; tensors on the CPU in float32 (moved to the transformer's device and dtype)."""

    noise: "torch.Tensor"  # (1, 16, h/8, w/8)
    timesteps: list[float]  # from 1 (noise) towards 0 (image), already clipped
    prompt_embeds: "torch.Tensor"  # (2, tokens, joint_attention_dim): negative, positive
    pooled_embeds: "torch.Tensor"  # (2, pooled_projection_dim)
    cfg_scale: list[float]  # one per step
    init_latents: Optional["torch.Tensor"] = None  # image-to-image
    inpaint_mask: Optional["torch.Tensor"] = None  # (1, 1, h/8, w/8), 1 where regenerated


def start_latents(job: SD3DenoiseJob) -> "torch.Tensor":
    """The noise, or the image's latents noised to the first timestep (image-to-image)."""
    if job.init_latents is None:
        return job.noise.clone()
    t_0 = job.timesteps[0]
    return t_0 * job.noise + (1.0 - t_0) * job.init_latents


def run(transformer: Any, job: SD3DenoiseJob, *, on_step: Optional[Callable[[int, int], None]] = None
        ) -> "torch.Tensor":
    """The denoised latents (float32, CPU)."""
    import torch

    from invokeai_provider.models.flux.denoise_loop import _keep_unmasked

    device, dtype = transformer.device, transformer.dtype
    latents = start_latents(job).to(device=device, dtype=dtype)
    if len(job.timesteps) <= 1:  # no step: the noised latents as they are (InvokeAI's short-circuit)
        return latents.float().cpu()
    embeds = job.prompt_embeds.to(device=device, dtype=dtype)
    pooled = job.pooled_embeds.to(device=device, dtype=dtype)
    mask = init = noise = None
    if job.inpaint_mask is not None:
        if job.init_latents is None:
            raise ValueError("inpainting needs the image's latents (init_latents)")
        mask = job.inpaint_mask.to(device=device, dtype=dtype)
        init, noise = job.init_latents.to(device=device, dtype=dtype), job.noise.to(device=device, dtype=dtype)
    total = len(job.timesteps) - 1
    for step, (t_curr, t_prev) in enumerate(zip(job.timesteps[:-1], job.timesteps[1:])):
        batch = torch.cat([latents, latents])
        timestep = torch.tensor([t_curr * 1000], device=device).expand(batch.shape[0])
        with torch.no_grad():
            prediction = transformer(hidden_states=batch, timestep=timestep, encoder_hidden_states=embeds,
                                     pooled_projections=pooled, joint_attention_kwargs=None, return_dict=False)[0]
        uncond, cond = prediction.chunk(2)
        guided = uncond + job.cfg_scale[step] * (cond - uncond)
        latents = (latents.float() + (t_prev - t_curr) * guided.float()).to(dtype)
        if mask is not None:
            latents = _keep_unmasked(latents, mask, init, noise, t_prev)
        if on_step is not None:
            on_step(step + 1, total)
    return latents.float().cpu()

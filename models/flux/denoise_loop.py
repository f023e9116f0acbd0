"""FLUX.1's denoising loop (InvokeAI's ``flux_denoise``) over diffusers' ``FluxTransformer2DModel``: Euler steps of
the flow-matching ODE along a schedule from `sampling`, dev's distilled guidance, an optional true CFG with a
negative conditioning, image-to-image by starting part way with the image's latents mixed into the noise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from invokeai_provider.models.flux import sampling
from invokeai_provider.models.flux.text_encoding import FluxConditioning

if TYPE_CHECKING:
    import torch


@dataclass
class FluxDenoiseJob:
    """One image's denoising: its noise and conditioning, the timesteps to run (``steps + 1`` values from
    `sampling.schedule`, clipped for image-to-image) and the guidance."""

    noise: "torch.Tensor"  # (1, 16, 2*ceil(h/16), 2*ceil(w/16))
    positive: FluxConditioning
    timesteps: list[float]
    height: int
    width: int
    guidance: float = 4.0  # dev's distilled guidance; ignored by a transformer without a guidance embedder
    negative: Optional[FluxConditioning] = None
    cfg_scale: list[float] = field(default_factory=lambda: [1.0])  # per step (true CFG where > 1 and negative set)
    init_latents: Optional["torch.Tensor"] = None  # image-to-image: the image's latents


def run(transformer: Any, job: FluxDenoiseJob, *, on_step: Optional[Callable[[int, int], None]] = None
        ) -> "torch.Tensor":
    """The denoised latents ``(1, 16, 2*ceil(h/16), 2*ceil(w/16))``. ``on_step(step, total)`` after each step (it may
    raise to cancel)."""
    import torch

    device, dtype = transformer.device, transformer.dtype
    timesteps = job.timesteps
    latents = job.noise.to(device=device, dtype=dtype)
    if job.init_latents is not None:  # start part way: t of noise, 1 - t of the image
        start = timesteps[0]
        latents = start * latents + (1.0 - start) * job.init_latents.to(device=device, dtype=dtype)
    tokens = sampling.pack(latents)
    img_ids = sampling.image_ids(job.height, job.width, device=device, dtype=dtype)
    guidance = (torch.full((tokens.shape[0],), job.guidance, device=device, dtype=dtype)
                if transformer.config.guidance_embeds else None)
    total = len(timesteps) - 1

    def predict(conditioning: FluxConditioning, t: "torch.Tensor") -> "torch.Tensor":
        t5 = conditioning.t5_embeds.to(device=device, dtype=dtype)
        txt_ids = torch.zeros(t5.shape[1], 3, device=device, dtype=dtype)
        return transformer(hidden_states=tokens, timestep=t, guidance=guidance,
                           pooled_projections=conditioning.clip_embeds.to(device=device, dtype=dtype),
                           encoder_hidden_states=t5, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]

    with torch.no_grad():
        for step, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
            t = torch.full((tokens.shape[0],), t_curr, device=device, dtype=dtype)
            prediction = predict(job.positive, t)
            scale = job.cfg_scale[min(step, len(job.cfg_scale) - 1)]
            if job.negative is not None and scale != 1.0:
                negative = predict(job.negative, t)
                prediction = negative + scale * (prediction - negative)
            tokens = tokens + (t_prev - t_curr) * prediction
            if on_step is not None:
                on_step(step + 1, total)
    return sampling.unpack(tokens.float(), job.height, job.width)

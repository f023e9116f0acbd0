"""FLUX.1's denoising loop (InvokeAI's ``flux_denoise``) over diffusers' ``FluxTransformer2DModel``: Euler steps of
the flow-matching ODE along a schedule from `sampling`, dev's distilled guidance, an optional true CFG with a
negative conditioning, image-to-image by starting part way with the image's latents mixed into the noise.

Three ways an image steers the transformer, as InvokeAI's loop has them: inpainting (after each step, the region to
keep is put back on the image's own noise trajectory), FLUX Fill (the masked image's latents and the mask ride along
each token as extra channels) and Kontext (reference images' tokens follow the image's, with position ids of index 1,
and their predictions are dropped)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from invokeai_provider.models.flux import sampling
from invokeai_provider.models.flux.controlnet import FluxControl, control_residuals
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
    add_noise: bool = True  # image-to-image: start from the image noised to the first timestep, else as it is
    # inpainting: (1, 1 or 16, h, w) in latent space, 1 where the image is regenerated and 0 where it is kept (the
    # inverse of a denoise mask); needs init_latents
    inpaint_mask: Optional["torch.Tensor"] = None
    channel_condition: Optional["torch.Tensor"] = None  # FLUX Fill: (1, tokens, 320) appended to each token
    reference_tokens: Optional["torch.Tensor"] = None  # Kontext: (1, n, 64) after the image's tokens
    reference_ids: Optional["torch.Tensor"] = None  # and their (n, 3) position ids
    controls: list[FluxControl] = field(default_factory=list)  # ControlNets, their residuals summed


def run(transformer: Any, job: FluxDenoiseJob, *, on_step: Optional[Callable[[int, int], None]] = None
        ) -> "torch.Tensor":
    """The denoised latents ``(1, 16, 2*ceil(h/16), 2*ceil(w/16))``. ``on_step(step, total)`` after each step (it may
    raise to cancel)."""
    import torch

    device, dtype = transformer.device, transformer.dtype
    timesteps = job.timesteps
    noise = job.noise.to(device=device, dtype=dtype)
    init = job.init_latents.to(device=device, dtype=dtype) if job.init_latents is not None else None
    latents = noise
    if init is not None:  # start part way: t of noise, 1 - t of the image
        start = timesteps[0]
        latents = start * noise + (1.0 - start) * init if job.add_noise else init
    tokens = sampling.pack(latents)
    count = tokens.shape[1]
    img_ids = sampling.image_ids(job.height, job.width, device=device, dtype=dtype)
    keep: Optional[tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]] = None
    if job.inpaint_mask is not None:
        if init is None:
            raise ValueError("inpainting needs the image's latents (init_latents)")
        mask = job.inpaint_mask.to(device=device, dtype=dtype).expand_as(init)
        keep = (sampling.pack(mask), sampling.pack(init), sampling.pack(noise))
    extra = job.channel_condition.to(device=device, dtype=dtype) if job.channel_condition is not None else None
    reference = job.reference_tokens.to(device=device, dtype=dtype) if job.reference_tokens is not None else None
    ids = img_ids if reference is None else torch.cat([img_ids, job.reference_ids.to(device=device, dtype=dtype)])
    guidance = (torch.full((tokens.shape[0],), job.guidance, device=device, dtype=dtype)
                if transformer.config.guidance_embeds else None)
    total = len(timesteps) - 1

    blocks = (len(transformer.transformer_blocks), len(transformer.single_transformer_blocks))

    def predict(conditioning: FluxConditioning, t: "torch.Tensor", step: Optional[int] = None) -> "torch.Tensor":
        t5 = conditioning.t5_embeds.to(device=device, dtype=dtype)
        clip = conditioning.clip_embeds.to(device=device, dtype=dtype)
        txt_ids = torch.zeros(t5.shape[1], 3, device=device, dtype=dtype)
        double = single = None
        if step is not None and job.controls:
            double, single = control_residuals(job.controls, step, total, tokens=tokens, timestep=t,
                                               guidance=job.guidance, t5=t5, clip=clip, txt_ids=txt_ids,
                                               img_ids=img_ids, blocks=blocks)
        hidden = tokens if extra is None else torch.cat([tokens, extra], dim=-1)
        if reference is not None:
            hidden = torch.cat([hidden, reference], dim=1)
            # the ControlNets steer the image's own tokens, not Kontext's (InvokeAI fails on a shape mismatch here)
            double, single = (_pad_tokens(r, reference.shape[1]) for r in (double, single))
        return transformer(hidden_states=hidden, timestep=t, guidance=guidance, pooled_projections=clip,
                           encoder_hidden_states=t5, txt_ids=txt_ids, img_ids=ids, controlnet_block_samples=double,
                           controlnet_single_block_samples=single, return_dict=False)[0][:, :count]

    with torch.no_grad():
        for step, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
            t = torch.full((tokens.shape[0],), t_curr, device=device, dtype=dtype)
            prediction = predict(job.positive, t, step)  # the ControlNets act on the positive prediction only
            scale = job.cfg_scale[min(step, len(job.cfg_scale) - 1)]
            if job.negative is not None and scale != 1.0:
                negative = predict(job.negative, t)
                prediction = negative + scale * (prediction - negative)
            tokens = tokens + (t_prev - t_curr) * prediction
            if keep is not None:
                tokens = _keep_unmasked(tokens, *keep, t_prev)
            if on_step is not None:
                on_step(step + 1, total)
    return sampling.unpack(tokens.float(), job.height, job.width)


def _keep_unmasked(tokens: "torch.Tensor", mask: "torch.Tensor", init: "torch.Tensor", noise: "torch.Tensor",
                   t_prev: float) -> "torch.Tensor":
    """InvokeAI's rectified-flow inpainting step: where the mask is below the next timestep (all of the kept region;
    a gradient mask's soft edge joins the regenerated part as the steps go), the tokens become the image's latents
    noised to that timestep."""
    import torch

    regenerate = torch.where(mask >= t_prev + 1e-4, 1.0, 0.0).to(tokens.dtype)
    return tokens * regenerate + (noise * t_prev + (1.0 - t_prev) * init) * (1.0 - regenerate)


def _pad_tokens(residuals: Optional[list["torch.Tensor"]], extra: int) -> Optional[list["torch.Tensor"]]:
    """ControlNet residuals with zeros appended for ``extra`` more tokens."""
    import torch.nn.functional as F

    return None if residuals is None else [F.pad(r, (0, 0, 0, extra)) for r in residuals]

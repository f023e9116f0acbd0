"""FLUX.1's denoising loop (InvokeAI's ``flux_denoise``) over diffusers' ``FluxTransformer2DModel``: Euler steps of
the flow-matching ODE along a schedule from `sampling`, dev's distilled guidance, an optional true CFG with a
negative conditioning, image-to-image by starting part way with the image's latents mixed into the noise.

Three ways an image steers the transformer, as InvokeAI's loop has them: inpainting (after each step, the region to
keep is put back on the image's own noise trajectory), FLUX Fill (the masked image's latents and the mask ride along
each token as extra channels) and Kontext (reference images' tokens follow the image's, with position ids of index 1,
and their predictions are dropped)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from invokeai_provider.models.flux import sampling
from invokeai_provider.models.flux.controlnet import FluxControl, control_residuals
from invokeai_provider.models.flux.ip_adapter import FluxIPAdapter, ip_adapters_applied
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
    ip_adapters: list[FluxIPAdapter] = field(default_factory=list)  # XLabs IP-Adapters, in the double blocks
    scheduler: str = "euler"  # InvokeAI's FLUX samplers: euler (this loop's steps), heun and lcm (diffusers')
    seed: int = 0  # LCM's step noise


Outcome = Any  # a job's latents, or the exception that stopped it


def batch_signature(job: FluxDenoiseJob) -> dict[str, Any]:
    """What jobs must share to go through the transformer together: size, timesteps, guidance, CFG schedule,
    conditioning and extra-token shapes, Kontext positions. ControlNets, IP-Adapters and the diffusers samplers
    (their state is one image's) make a job run alone."""
    def shape(tensor: Optional["torch.Tensor"]) -> Optional[list[int]]:
        return None if tensor is None else list(tensor.shape)

    negative = job.negative
    return {"size": [job.height, job.width], "timesteps": [float(t) for t in job.timesteps],
            "guidance": float(job.guidance), "cfg": [float(c) for c in job.cfg_scale],
            "positive": [shape(job.positive.t5_embeds), shape(job.positive.clip_embeds)],
            "negative": None if negative is None else [shape(negative.t5_embeds), shape(negative.clip_embeds)],
            "extra": shape(job.channel_condition), "reference": shape(job.reference_tokens),
            "reference_ids": None if job.reference_ids is None else job.reference_ids.tolist(),
            "scheduler": job.scheduler,
            "alone": id(job) if job.controls or job.ip_adapters or job.scheduler != "euler" else None}


class _Image:
    """One job's state on the transformer's device during a batched run."""

    def __init__(self, job: FluxDenoiseJob, device: Any, dtype: Any) -> None:
        self.job = job
        noise = job.noise.to(device=device, dtype=dtype)
        init = job.init_latents.to(device=device, dtype=dtype) if job.init_latents is not None else None
        latents = noise
        if init is not None:  # start part way: t of noise, 1 - t of the image
            start = job.timesteps[0]
            latents = start * noise + (1.0 - start) * init if job.add_noise else init
        self.tokens = sampling.pack(latents)
        self.keep: Optional[tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]] = None
        if job.inpaint_mask is not None:
            if init is None:
                raise ValueError("inpainting needs the image's latents (init_latents)")
            mask = job.inpaint_mask.to(device=device, dtype=dtype).expand_as(init)
            self.keep = (sampling.pack(mask), sampling.pack(init), sampling.pack(noise))

        def moved(tensor: Optional["torch.Tensor"]) -> Optional["torch.Tensor"]:
            return None if tensor is None else tensor.to(device=device, dtype=dtype)

        self.extra, self.reference = moved(job.channel_condition), moved(job.reference_tokens)
        self.conditioning = {
            sign: None if c is None else (moved(c.t5_embeds), moved(c.clip_embeds))
            for sign, c in (("positive", job.positive), ("negative", job.negative))}
        self.outcome: Optional[Outcome] = None


def run(transformer: Any, job: FluxDenoiseJob, *, on_step: Optional[Callable[[int, int], None]] = None
        ) -> "torch.Tensor":
    """The denoised latents ``(1, 16, 2*ceil(h/16), 2*ceil(w/16))``. ``on_step(step, total)`` after each step (it may
    raise to cancel)."""
    [outcome] = run_batch(transformer, [job], [on_step])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def run_batch(transformer: Any, jobs: list[FluxDenoiseJob],
              on_steps: Optional[list[Optional[Callable[[int, int], None]]]] = None) -> list[Outcome]:
    """Denoises jobs of one `batch_signature` together, each transformer pass taking all of them; each job gets its
    latents, or the exception its ``on_step`` raised (a canceled run: the others carry on)."""
    import torch

    if len({json_key(batch_signature(job)) for job in jobs}) != 1:
        raise ValueError("jobs of a batch must share their batch signature")
    on_steps = on_steps or [None] * len(jobs)
    first = jobs[0]
    device, dtype = transformer.device, transformer.dtype
    total = len(first.timesteps) - 1
    images = [_Image(job, device, dtype) for job in jobs]
    count = images[0].tokens.shape[1]
    img_ids = sampling.image_ids(first.height, first.width, device=device, dtype=dtype)
    ids = img_ids if first.reference_ids is None else torch.cat([img_ids, first.reference_ids.to(device, dtype)])
    blocks = (len(transformer.transformer_blocks), len(transformer.single_transformer_blocks))
    use_guidance = bool(transformer.config.guidance_embeds)

    fixed: dict[tuple[Any, ...], tuple["torch.Tensor", ...]] = {}  # per (sign, active images): built once

    def constants(active: list[_Image], sign: str) -> tuple["torch.Tensor", ...]:
        """What does not change between steps while the same images run: conditioning, extra tokens, ids."""
        key = (sign, *map(id, active))
        if key not in fixed:
            t5 = torch.cat([image.conditioning[sign][0] for image in active])
            fixed[key] = (t5, torch.cat([image.conditioning[sign][1] for image in active]),
                          torch.zeros(t5.shape[1], 3, device=device, dtype=dtype),
                          torch.cat([image.extra for image in active]) if first.channel_condition is not None
                          else None,
                          torch.cat([image.reference for image in active]) if first.reference_tokens is not None
                          else None)
        return fixed[key]

    def predict(active: list[_Image], sign: str, t_curr: float, step: int, ip: Any) -> "torch.Tensor":
        tokens = torch.cat([image.tokens for image in active])
        t5, clip, txt_ids, extra_tokens, references = constants(active, sign)
        t = torch.full((len(active),), t_curr, device=device, dtype=dtype)
        double = single = None
        if sign == "positive" and first.controls:  # the ControlNets act on the positive prediction only
            double, single = control_residuals(first.controls, step, total, tokens=tokens, timestep=t,
                                               guidance=first.guidance, t5=t5, clip=clip, txt_ids=txt_ids,
                                               img_ids=img_ids, blocks=blocks)
        hidden = tokens if extra_tokens is None else torch.cat([tokens, extra_tokens], dim=-1)
        if references is not None:
            hidden = torch.cat([hidden, references], dim=1)
            # the ControlNets steer the image's own tokens, not Kontext's (InvokeAI fails on a shape mismatch here)
            extra = first.reference_tokens.shape[1]
            double, single = (_pad_tokens(r, extra) for r in (double, single))
        guidance = torch.full((len(active),), first.guidance, device=device, dtype=dtype) if use_guidance else None
        return transformer(hidden_states=hidden, timestep=t, guidance=guidance, pooled_projections=clip,
                           encoder_hidden_states=t5, txt_ids=txt_ids, img_ids=ids, controlnet_block_samples=double,
                           controlnet_single_block_samples=single,
                           joint_attention_kwargs=ip.kwargs(step, total, negative=sign == "negative") or None,
                           return_dict=False)[0][:, :count]

    with torch.no_grad(), ip_adapters_applied(transformer, first.ip_adapters) as ip:
        if first.scheduler != "euler":  # such jobs run alone (batch_signature)
            [image] = images
            _scheduled_steps(image, sampling.flow_scheduler(first.scheduler, total, device), on_steps[0],
                             lambda sign, t, step: predict([image], sign, t, step, ip))
        else:
            _euler_steps(images, first, on_steps, lambda active, sign, t, step: predict(active, sign, t, step, ip))
    return [image.outcome if image.outcome is not None else
            sampling.unpack(image.tokens.float(), image.job.height, image.job.width) for image in images]


@dataclass(eq=False)
class FluxDenoiseItem:
    """One ``flux_denoise`` node's job, prepared without touching the transformer, so that it can wait for other
    nodes' jobs of its run to share the transformer's passes (the GPU runtime's device scheduler batches items of
    equal `batch_key`). ``open_transformer`` enters the node's transformer (loaded, LoRA-patched, its ControlNets
    loaded into the job) and yields it; a batch runs under its first item's."""

    job: FluxDenoiseJob
    context: Any  # the node's InvocationContext: cancel checks
    open_transformer: Callable[[], AbstractContextManager[Any]]
    transformer_spec: dict[str, Any]  # the transformer field as the node got it (model and LoRAs)
    on_step: Optional[Callable[[int, int], None]] = None
    alone: bool = False  # ControlNets: never batched

    def batch_key(self) -> str:
        return json_key({"transformer": self.transformer_spec, "alone": id(self) if self.alone else None,
                         **batch_signature(self.job)})


def run_items(items: list[FluxDenoiseItem]) -> list[Outcome]:
    """The runner of a batch of items of one key: each gets its latents or the exception that stopped it."""
    from invokeai_provider.core.context import canceled_outcomes

    outcomes: dict[int, Outcome] = dict(canceled_outcomes([item.context for item in items]))
    active = [n for n in range(len(items)) if n not in outcomes]
    if active:
        with items[active[0]].open_transformer() as transformer:
            results = run_batch(transformer, [items[n].job for n in active], [items[n].on_step for n in active])
        outcomes.update(zip(active, results))
    return [outcomes[n] for n in range(len(items))]


def _euler_steps(images: list[_Image], job: FluxDenoiseJob, on_steps: list[Optional[Callable[[int, int], None]]],
                 predict: Callable[[list[_Image], str, float, int], "torch.Tensor"]) -> None:
    """The jobs' Euler steps along their (shared) schedule, every pass taking the images still running."""
    timesteps, total = job.timesteps, len(job.timesteps) - 1
    for step, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        active = [image for image in images if image.outcome is None]
        if not active:
            break
        prediction = predict(active, "positive", t_curr, step)
        scale = job.cfg_scale[min(step, len(job.cfg_scale) - 1)]
        if job.negative is not None and scale != 1.0:
            negative = predict(active, "negative", t_curr, step)
            prediction = negative + scale * (prediction - negative)
        for image, part in zip(active, prediction.split(1)):
            image.tokens = image.tokens + (t_prev - t_curr) * part
            if image.keep is not None:
                image.tokens = _keep_unmasked(image.tokens, *image.keep, t_prev)
        for image, on_step in zip(images, on_steps):
            if image.outcome is None and on_step is not None:
                try:
                    on_step(step + 1, total)
                except BaseException as exc:  # noqa: BLE001 - this job's own outcome
                    image.outcome = exc


def _scheduled_steps(image: _Image, scheduler: Any, on_step: Optional[Callable[[int, int], None]],
                     predict: Callable[[str, float, int], "torch.Tensor"]) -> None:
    """InvokeAI's path for its other FLUX samplers: diffusers' scheduler steps over its own schedule (``steps``
    user-facing steps; Heun takes two passes for each, and reports progress after the second). CFG, ControlNets,
    IP-Adapters and inpainting act per user step as on the Euler path."""
    import torch

    job = image.job
    total = len(job.timesteps) - 1
    heun = hasattr(scheduler, "state_in_first_order")
    step_noise = {"generator": torch.Generator("cpu").manual_seed(job.seed)} if job.scheduler == "lcm" else {}
    user_step = 0
    for index, timestep in enumerate(scheduler.timesteps):
        t_curr = float(timestep) / scheduler.config.num_train_timesteps
        first_order = scheduler.state_in_first_order if heun else False
        prediction = predict("positive", t_curr, user_step)
        scale = job.cfg_scale[min(user_step, len(job.cfg_scale) - 1)]
        if job.negative is not None and scale != 1.0:
            negative = predict("negative", t_curr, user_step)
            prediction = negative + scale * (prediction - negative)
        image.tokens = scheduler.step(prediction, timestep, image.tokens, **step_noise).prev_sample
        t_prev = float(scheduler.sigmas[index + 1]) if index + 1 < len(scheduler.sigmas) else 0.0
        if image.keep is not None:
            image.tokens = _keep_unmasked(image.tokens, *image.keep, t_prev)
        last = index == len(scheduler.timesteps) - 1
        if first_order and not last:
            continue
        # Heun's last step has no second pass (its next sigma is 0): it completes the schedule all the same
        user_step = total if last else user_step + 1
        if on_step is not None and user_step <= total:
            try:
                on_step(user_step, total)
            except BaseException as exc:  # noqa: BLE001 - this job's own outcome
                image.outcome = exc
                return


def json_key(signature: dict[str, Any]) -> str:
    import json

    return json.dumps(signature, sort_keys=True)


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

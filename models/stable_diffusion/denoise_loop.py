"""The sampling loop of ``denoise_latents``, for one item or for several denoised together.

Every item keeps its own scheduler, noise, step generator, guidance and mask; only the UNet's forward
pass takes the items' inputs in one batch. So an item comes out the same whether it ran alone or beside
others (up to the rounding of batched kernels), and ``run_denoise([item])`` is exactly the unbatched
path. The GPU runtime batches the denoise nodes of concurrent tasks through this. An item with ControlNets runs
alone, their residuals added to the UNet's blocks (`invokeai_provider.models.stable_diffusion.controlnet`), as does
one with T2I-Adapters, their features added inside its down blocks (`.t2i_adapter`), and one with IP-Adapters or
regional prompts, which its UNet's cross-attention layers read (`.cross_attention`).
"""

from __future__ import annotations

import inspect
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from invokeai_provider.models.stable_diffusion.controlnet import SDControl, control_residuals
from invokeai_provider.models.stable_diffusion.cross_attention import CrossAttentionState
from invokeai_provider.models.stable_diffusion.t2i_adapter import SDAdapter, adapter_residuals

if TYPE_CHECKING:
    import torch

    from invokeai_provider.core.context import InvocationContext

Outcome = Union["torch.Tensor", BaseException]


@dataclass(eq=False)
class DenoiseItem:
    """One denoise_latents node's sampling job, prepared without touching the UNet.

    ``open_unet`` enters the node's UNet (loaded, LoRA-patched, seamless, FreeU, no-grad) and yields it; a
    batch runs under its first item's, which is why items only batch when ``batch_key`` is equal.
    """

    node_id: str
    context: "InvocationContext"
    open_unet: Callable[[], AbstractContextManager[Any]]
    unet_spec: dict[str, Any]
    scheduler: Any
    timesteps: "torch.Tensor"
    init_timestep: "torch.Tensor"
    orig_latents: "torch.Tensor"
    noise: Optional["torch.Tensor"]
    seed: int
    positive: dict[str, "torch.Tensor"]
    negative: dict[str, "torch.Tensor"]
    cfg: list[float]
    cfg_rescale_multiplier: float = 0.0
    mask: Optional["torch.Tensor"] = None
    masked_latents: Optional["torch.Tensor"] = None
    gradient: bool = False
    # ControlNets, loaded into the item by ``open_unet``; an item with ControlNets runs alone
    controls: list[SDControl] = field(default_factory=list)
    adapters: list[SDAdapter] = field(default_factory=list)  # T2I-Adapters, their features computed once
    # IP-Adapters and regional prompts, read by the UNet's patched cross-attention layers
    attention: CrossAttentionState = field(default_factory=CrossAttentionState)
    has_controls: bool = False  # ControlNets, T2I-Adapters, IP-Adapters or regions: the item runs alone
    # set by start(), on the UNet's device
    latents: Any = field(default=None, repr=False)
    _embeds: Any = field(default=None, repr=False)
    _encoder_mask: Any = field(default=None, repr=False)  # (2, tokens): 0 on the padding of the shorter half
    _added: dict[str, Any] = field(default_factory=dict, repr=False)
    _extra_channels: Any = field(default=None, repr=False)
    _inpainting_unet: bool = False
    _step_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def runs_no_step(self) -> bool:
        """denoising_start at (or past) the end of the schedule: the latents come back unchanged."""
        return self.init_timestep.shape[0] == 0

    def batch_key(self) -> str:
        """Items with equal keys can share UNet passes: the same UNet as patched, the same latent and
        conditioning shapes, and the same timesteps (so every pass is at one t for all of them)."""
        shapes = {name: list(tensor.shape) for cond in (self.positive, self.negative) for name, tensor in cond.items()}
        return json.dumps({"unet": self.unet_spec, "latents": list(self.orig_latents.shape), "conditioning": shapes,
                           "timesteps": [float(t) for t in self.timesteps],
                           "alone": id(self) if self.has_controls else None}, sort_keys=True)

    def start(self, unet: Any, device: Any, dtype: Any) -> None:
        import torch

        self.orig_latents = self.orig_latents.to(device=device, dtype=torch.float32)
        noised = self.noise is not None
        if not noised:
            # InvokeAI: latents without noise are already noised (the SDXL refiner's), and start as they are; a mask
            # still blends in noise, made from the seed
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            self.noise = torch.randn(self.orig_latents.shape, generator=generator, dtype=torch.float32)
        self.noise = self.noise.to(device=device, dtype=torch.float32)
        self.latents = self.scheduler.add_noise(self.orig_latents, self.noise, self.init_timestep.expand(
            self.orig_latents.shape[0])) if noised else self.orig_latents.clone()
        self._inpainting_unet = unet.config.in_channels == 9
        if self.mask is not None:
            self.mask = self.mask.to(device)
        if self._inpainting_unet:
            mask = self.mask if self.mask is not None else torch.ones_like(self.orig_latents[:, :1])
            masked = self.masked_latents if self.masked_latents is not None else torch.where(
                mask < 0.5, 0.0, self.orig_latents)
            # the inpainting UNet takes 1 - mask (InvokeAI's mask keeps where it is 1)
            self._extra_channels = torch.cat([1 - mask, masked.to(device=device, dtype=torch.float32)], 1)
        halves = [self.negative["embeds"], self.positive["embeds"]]
        lengths = (halves[0].shape[1], halves[1].shape[1])
        if lengths[0] != lengths[1]:  # regional prompts, say: the shorter half is padded and its padding hidden
            longest = max(lengths)
            halves = [torch.nn.functional.pad(h, (0, 0, 0, longest - h.shape[1])) for h in halves]
            self._encoder_mask = torch.stack([torch.arange(longest) < n for n in lengths]).to(device=device,
                                                                                             dtype=dtype)
        self._embeds = torch.cat(halves).to(device=device, dtype=dtype)
        self.attention.start(device, dtype, lengths, *self.orig_latents.shape[-2:])
        if "pooled_embeds" in self.positive:
            self._added = {
                "text_embeds": torch.cat([self.negative["pooled_embeds"], self.positive["pooled_embeds"]]).to(device, dtype),
                "time_ids": torch.cat([self.negative["add_time_ids"], self.positive["add_time_ids"]]).to(device, dtype)}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            self._step_kwargs = {"generator": torch.Generator(device="cpu").manual_seed(self.seed ^ 0xFFFFFFFF)}

    def model_input(self, t: "torch.Tensor") -> "torch.Tensor":
        """This step's UNet input: unconditional and conditional halves (and the inpainting channels)."""
        import torch

        if self.mask is not None and not self._inpainting_unet:
            noised = self.scheduler.add_noise(self.orig_latents, self.noise, t.expand(1))
            if self.gradient:  # a gradient mask keeps a pixel until the schedule has come down past its value
                train_steps = self.scheduler.config.num_train_timesteps
                self.latents = torch.where(self.mask < 1 - t.item() / train_steps, self.latents, noised)
            else:
                self.latents = torch.lerp(self.latents, noised, self.mask)
        model_input = self.scheduler.scale_model_input(torch.cat([self.latents] * 2), t)
        if self._inpainting_unet:
            model_input = torch.cat([model_input, torch.cat([self._extra_channels] * 2)], dim=1)
        return model_input

    def step(self, index: int, t: "torch.Tensor", prediction: "torch.Tensor") -> None:
        """Guidance and the scheduler step for this item's slice of the UNet output; then progress, which
        raises CanceledError when this item's run was canceled."""
        uncond, cond = prediction.chunk(2)
        scale = self.cfg[index] if len(self.cfg) > 1 else self.cfg[0]
        guided = uncond + scale * (cond - uncond)
        if self.cfg_rescale_multiplier > 0:
            std_cond = cond.std(dim=list(range(1, cond.ndim)), keepdim=True)
            std_guided = guided.std(dim=list(range(1, guided.ndim)), keepdim=True)
            rescaled = guided * (std_cond / std_guided)
            guided = self.cfg_rescale_multiplier * rescaled + (1 - self.cfg_rescale_multiplier) * guided
        self.latents = self.scheduler.step(guided, t, self.latents, **self._step_kwargs).prev_sample
        total = len(self.timesteps)
        self.context.util.signal_progress(f"Denoising step {index + 1}/{total}", (index + 1) / total,
                                          step=index + 1, total_steps=total)

    def finish(self) -> "torch.Tensor":
        import torch

        latents = self.latents
        if self.mask is not None and not self._inpainting_unet:
            if self.gradient:
                latents = torch.where(self.mask < 1, latents, self.orig_latents)
            else:
                latents = torch.lerp(latents, self.orig_latents, self.mask)
        return latents.detach().to("cpu")


def run_denoise(items: list[DenoiseItem]) -> list[Outcome]:
    """Denoises items of one ``batch_key`` together; each gets its latents, or the exception that stopped it
    (its run was canceled, say: the others carry on). A failing UNet pass raises for all of them."""
    import torch

    from invokeai_provider.core.context import canceled_outcomes

    outcomes: dict[int, Outcome] = dict(canceled_outcomes([item.context for item in items]))
    active = [n for n in range(len(items)) if n not in outcomes]
    if not active:
        return [outcomes[n] for n in range(len(items))]
    with items[active[0]].open_unet() as unet:
        device, dtype = unet.device, unet.dtype  # diffusers walks every module for these: once per batch
        for number in active:
            items[number].start(unet, device, dtype)
        conditioning = _batched_conditioning([items[n] for n in active])
        for index, t in enumerate(items[active[0]].timesteps):
            inputs = [items[n].model_input(t) for n in active]
            embeds, added, encoder_mask = conditioning
            sample = torch.cat(inputs).to(dtype)
            down = mid = intrablock = None
            first = items[active[0]]
            if first.controls:  # such an item runs alone
                down, mid = control_residuals(first.controls, index, len(first.timesteps), model_input=sample,
                                              timestep=t, embeds=embeds, added=added)
            if first.adapters:
                intrablock = adapter_residuals(first.adapters, index, len(first.timesteps))
            if first.attention.active:  # such an item runs alone too
                first.attention.set_step(index, len(first.timesteps))
            prediction = unet(sample, t, encoder_hidden_states=embeds, added_cond_kwargs=added or None,
                              encoder_attention_mask=encoder_mask,
                              down_block_additional_residuals=down, mid_block_additional_residual=mid,
                              down_intrablock_additional_residuals=intrablock).sample.float()
            for number, part in zip(active, prediction.split([len(x) for x in inputs])):
                try:
                    items[number].step(index, t, part)
                except BaseException as exc:  # noqa: BLE001 - the item's own outcome
                    outcomes[number] = exc
            still = [n for n in active if n not in outcomes]
            if not still:
                break
            if len(still) != len(active):
                conditioning = _batched_conditioning([items[n] for n in still])
            active = still
        for number in active:
            outcomes[number] = items[number].finish()
    return [outcomes[n] for n in range(len(items))]


def _batched_conditioning(items: list[DenoiseItem]
                          ) -> tuple["torch.Tensor", dict[str, "torch.Tensor"], Optional["torch.Tensor"]]:
    """The items' text embeddings in the order of their UNet inputs (uncond, cond of each item in turn), and the
    padding mask when a half was padded."""
    import torch

    embeds = torch.cat([item._embeds for item in items])
    added = {name: torch.cat([item._added[name] for item in items]) for name in items[0]._added}
    mask = None
    if any(item._encoder_mask is not None for item in items):
        mask = torch.cat([item._encoder_mask if item._encoder_mask is not None
                          else torch.ones(item._embeds.shape[:2], device=embeds.device, dtype=embeds.dtype)
                          for item in items])
    return embeds, added, mask


def denoise_alone(item: DenoiseItem) -> "torch.Tensor":
    [outcome] = run_denoise([item])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome

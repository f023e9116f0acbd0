"""InvokeAI's ``tiled_multi_diffusion_denoise_latents``: SD1/SD2/SDXL denoising tile by tile, the tiles blended at
every step (Multi-Diffusion), for refining large images such as tiled upscales.

Type string, fields, version and output follow InvokeAI's tiled_multi_diffusion_denoise_latents.py. The tiles are
InvokeAI's "min overlap" tiles computed in latent space; each tile is a ``denoise_latents`` item of its own and
:mod:`invokeai_provider.models.stable_diffusion.multi_diffusion` runs and blends them. As in InvokeAI, the UNet gets
its LoRAs only (no seamless or FreeU), ControlNets see their control image cropped to the tile, and there are no
masks, IP-Adapters or T2I-Adapters. torch is imported inside ``invoke()``.
"""

from __future__ import annotations

import copy
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

from pydantic import field_validator

from invokeai_provider.core.fields import LATENT_SCALE_FACTOR, ConditioningField, ControlField, LatentsField, UNetField
from invokeai_provider.core.invocation import BaseInvocation, Input, InputField, invocation
from invokeai_provider.core.taxonomy import ModelType
from invokeai_provider.errors import field_error
from invokeai_provider.operators.core.primitives import LatentsOutput
from invokeai_provider.operators.sd.common import LATENTS_DESCRIPTION, GenerationError, lora_patched, model_service
from invokeai_provider.operators.sd.model_fields import SCHEDULER_DESCRIPTION, SCHEDULER_NAME_VALUES, UNET_DESCRIPTION

if TYPE_CHECKING:
    import torch

    from invokeai_provider.core.context import InvocationContext
    from invokeai_provider.models.image_util.tiling import Tile
    from invokeai_provider.models.stable_diffusion.denoise_loop import DenoiseItem


def _not_batched() -> Any:
    raise RuntimeError("a multi-diffusion tile runs in the multi-diffusion loop, not batched with other denoises")


@invocation("tiled_multi_diffusion_denoise_latents", title="Tiled Multi-Diffusion Denoise - SD1.5, SDXL",
            tags=["upscale", "denoise"], category="latents", version="1.0.1", gpu=True)
class TiledMultiDiffusionDenoiseLatents(BaseInvocation):
    """Tiled Multi-Diffusion denoising: denoise_latents over overlapping tiles blended at every step, for global
    refinement of large images (tiled upscaling); no masks, IP-Adapters or T2I-Adapters."""

    positive_conditioning: ConditioningField = InputField(description="Positive conditioning tensor",
                                                          input=Input.Connection)
    negative_conditioning: ConditioningField = InputField(description="Negative conditioning tensor",
                                                          input=Input.Connection)
    noise: Optional[LatentsField] = InputField(default=None, description="Noise tensor", input=Input.Connection)
    latents: Optional[LatentsField] = InputField(default=None, description=LATENTS_DESCRIPTION,
                                                 input=Input.Connection)
    tile_height: int = InputField(default=1024, gt=0, multiple_of=LATENT_SCALE_FACTOR,
                                  description="Height of the tiles in image space.")
    tile_width: int = InputField(default=1024, gt=0, multiple_of=LATENT_SCALE_FACTOR,
                                 description="Width of the tiles in image space.")
    tile_overlap: int = InputField(default=32, gt=0, multiple_of=LATENT_SCALE_FACTOR,
                                   description="The overlap between adjacent tiles in pixel space (the tiles are "
                                   "blended in latent space); spare room is shared out, so tiles may overlap more.")
    steps: int = InputField(default=18, gt=0, description="Number of steps to run")
    cfg_scale: Union[float, list[float]] = InputField(default=6.0, description="Classifier-Free Guidance scale",
                                                      title="CFG Scale")
    denoising_start: float = InputField(default=0.0, ge=0, le=1,
                                        description="When to start denoising, expressed a percentage of total steps")
    denoising_end: float = InputField(default=1.0, ge=0, le=1,
                                      description="When to stop denoising, expressed a percentage of total steps")
    scheduler: SCHEDULER_NAME_VALUES = InputField(default="euler", description=SCHEDULER_DESCRIPTION,
                                                  ui_type="SchedulerField")
    unet: UNetField = InputField(description=UNET_DESCRIPTION, input=Input.Connection, title="UNet")
    cfg_rescale_multiplier: float = InputField(title="CFG Rescale Multiplier", default=0, ge=0, lt=1,
                                               description="Rescale multiplier for CFG guidance, used for models "
                                               "trained with zero-terminal SNR")
    control: Optional[Union[ControlField, list[ControlField]]] = InputField(default=None, input=Input.Connection)

    @field_validator("cfg_scale")
    @classmethod
    def _cfg_at_least_one(cls, value: Union[float, list[float]]) -> Union[float, list[float]]:
        if any(scale < 1 for scale in (value if isinstance(value, list) else [value])):
            raise ValueError("cfg_scale must be at least 1")
        return value

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        from invokeai_provider.models.stable_diffusion.multi_diffusion import multi_diffusion_denoise

        noise, latents, seed = self._noise_and_latents(context)
        tiles = self._tiles(latents.shape)
        items = self._items(context, noise, latents, seed, tiles)
        if items[0].runs_no_step:
            result = latents
        else:
            controls = self._control_images(context, latents.shape, len(items[0].timesteps))
            with self._unet(context, items, tiles, controls) as unet:
                result = multi_diffusion_denoise(unet, items, tiles, latents.shape, context)
        name = context.tensors.save(result)
        return LatentsOutput.build(name, result, seed=None)

    def _error(self, field: str, problem: str) -> GenerationError:
        return field_error(GenerationError, self, field, problem)

    def _noise_and_latents(self, context: "InvocationContext") -> tuple[Optional["torch.Tensor"], "torch.Tensor", int]:
        """InvokeAI's inputs: noise and/or latents (zeros under noise alone); the seed of the noise, else of the
        latents, else 0."""
        import torch

        if self.noise is None and self.latents is None:
            raise self._error("latents", "fields noise and latents are both empty; connect latents (and noise to "
                              "add it), or noise alone")
        noise = context.tensors.load(self.noise.latents_name) if self.noise else None
        latents = context.tensors.load(self.latents.latents_name) if self.latents else torch.zeros_like(noise)
        if noise is not None and noise.shape[1:] != latents.shape[1:]:
            raise self._error("noise", f"shape {tuple(noise.shape)} does not match latents {tuple(latents.shape)}")
        seed = next((field.seed for field in (self.noise, self.latents) if field and field.seed is not None), 0)
        return noise, latents, seed

    def _tiles(self, latents_shape: Sequence[int]) -> list["Tile"]:
        """InvokeAI's min-overlap tiles over the latents, in latent units."""
        from invokeai_provider.models.image_util.tiling import TileError, calc_tiles_min_overlap

        tile_h, tile_w = self.tile_height // LATENT_SCALE_FACTOR, self.tile_width // LATENT_SCALE_FACTOR
        overlap = self.tile_overlap // LATENT_SCALE_FACTOR
        if overlap >= min(tile_h, tile_w):
            raise self._error("tile_overlap", f"{self.tile_overlap} must be less than tile_width {self.tile_width} "
                              f"and tile_height {self.tile_height}")
        height, width = latents_shape[-2:]
        try:
            return calc_tiles_min_overlap(height, width, tile_h, tile_w, overlap)
        except TileError as exc:  # tiles cut down to a small image, no longer wider than the overlap
            raise self._error("tile_overlap", f"{self.tile_overlap} does not fit the {width * LATENT_SCALE_FACTOR}x"
                              f"{height * LATENT_SCALE_FACTOR} image: {exc}") from None

    def _conditioning(self, context: "InvocationContext", field: str) -> dict[str, "torch.Tensor"]:
        value: ConditioningField = getattr(self, field)
        if value.mask is not None:
            raise self._error(field, "regional (masked) conditioning is not supported by multi-diffusion")
        return context.conditioning.load_dict(value.conditioning_name)

    def _items(self, context: "InvocationContext", noise: Optional["torch.Tensor"], latents: "torch.Tensor",
               seed: int, tiles: list["Tile"]) -> list["DenoiseItem"]:
        """One denoise item per tile: its crops, the shared conditioning and schedule, a scheduler of its own."""
        from invokeai_provider.models.stable_diffusion.denoise_loop import DenoiseItem
        from invokeai_provider.models.stable_diffusion.multi_diffusion import TileContext, crop
        from invokeai_provider.models.stable_diffusion.schedulers import make_scheduler
        from invokeai_provider.operators.sd.denoise import init_timesteps

        positive = self._conditioning(context, "positive_conditioning")
        negative = self._conditioning(context, "negative_conditioning")
        with model_service(self, context, "unet").load(self.unet.scheduler) as scheduler_config:
            scheduler = make_scheduler(self.scheduler, scheduler_config, seed=seed)
        timesteps, init_timestep = init_timesteps(scheduler, self.steps, self.denoising_start, self.denoising_end)
        cfg = self.cfg_scale if isinstance(self.cfg_scale, list) else [self.cfg_scale]
        if len(cfg) not in (1, len(timesteps)):
            raise self._error("cfg_scale", f"a list needs one value per step ({len(timesteps)}), got {len(cfg)}")
        quiet = TileContext(context)
        return [DenoiseItem(node_id=self.id, context=quiet, open_unet=_not_batched, unet_spec={},  # type: ignore[arg-type]
                            scheduler=copy.deepcopy(scheduler), timesteps=timesteps, init_timestep=init_timestep,
                            orig_latents=crop(latents, tile),
                            noise=crop(noise, tile) if noise is not None else None, seed=seed,
                            positive=positive, negative=negative, cfg=[float(c) for c in cfg],
                            cfg_rescale_multiplier=self.cfg_rescale_multiplier, has_controls=bool(self.control))
                for tile in tiles]

    def _control_images(self, context: "InvocationContext", latents_shape: Sequence[int], steps: int
                        ) -> list[tuple[ControlField, "torch.Tensor"]]:
        """Each ControlNet with its control image prepared at the whole image's size (cropped per tile later)."""
        from invokeai_provider.models.image_util.control_image import prepare_control_image
        from invokeai_provider.operators.core.models import check_model

        fields = (self.control if isinstance(self.control, list) else [self.control]) if self.control else []
        base = model_service(self, context, "unet").get_config(self.unet.unet).base if fields else None
        prepared = []
        for field in fields:
            check_model(self, "control", field.control_model, context, ModelType.ControlNet, (base,))
            if isinstance(field.control_weight, list) and len(field.control_weight) != steps:
                raise self._error("control", f"a list of {len(field.control_weight)} control weights for {steps} "
                                  "steps")
            image = context.images.get_pil(field.image.image_name)
            prepared.append((field, prepare_control_image(image, latents_shape[-1] * LATENT_SCALE_FACTOR,
                                                          latents_shape[-2] * LATENT_SCALE_FACTOR, field.resize_mode)))
        return prepared

    @contextmanager
    def _unet(self, context: "InvocationContext", items: list["DenoiseItem"], tiles: list["Tile"],
              controls: list[tuple[ControlField, "torch.Tensor"]]) -> Iterator[Any]:
        """The UNet with its LoRAs, without grad; the ControlNets loaded once and given to every tile's item with
        the tile's crop of their control images."""
        import torch

        from invokeai_provider.models.stable_diffusion.controlnet import SDControl
        from invokeai_provider.models.stable_diffusion.multi_diffusion import crop

        models = model_service(self, context, "unet")
        base = models.get_config(self.unet.unet).base
        with ExitStack() as stack:
            loaded = [(field, image, stack.enter_context(models.load(field.control_model))) for field, image in controls]
            for item, tile in zip(items, tiles):
                item.controls = [SDControl(model=model, image=crop(image, tile, LATENT_SCALE_FACTOR),
                                           weight=field.control_weight, begin_step_percent=field.begin_step_percent,
                                           end_step_percent=field.end_step_percent, mode=field.control_mode)
                                 for field, image, model in loaded]
            with models.load(self.unet.unet) as unet, \
                    lora_patched(self, context, "unet", unet, self.unet.loras, "unet", base), torch.no_grad():
                yield unet

"""Latent-space nodes: seeded noise, scheduler choice, resizing, scaling, blending and cropping of latents, and
the ideal generation size for a model.

Type strings, class names, versions, fields and outputs follow InvokeAI's `invocations/noise.py` (with
`latent_noise.py`), `scheduler.py`, `resize_latents.py`, `blend_latents.py`, `crop_latents.py` and
`ideal_size.py`.
Latents travel as tensor names (`context.tensors`); torch, numpy and PIL are imported inside invoke().
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Optional

from annotated_types import MultipleOf
from pydantic import field_validator

from invokeai_provider.core.fields import LATENT_SCALE_FACTOR, ImageField, LatentsField, UNetField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    Input,
    InputField,
    OutputField,
    invocation,
    invocation_output,
)
from invokeai_provider.core.limits import IMAGE_SIDE, FieldLimit, size_problem
from invokeai_provider.core.taxonomy import BaseModelType
from invokeai_provider.errors import NodeInputError, field_error
from invokeai_provider.operators.core.primitives import LatentsOutput
from invokeai_provider.operators.sd.common import GenerationError, model_service
from invokeai_provider.operators.sd.model_fields import (
    SCHEDULER_DESCRIPTION,
    SCHEDULER_NAME_VALUES,
    UNET_DESCRIPTION,
    SchedulerOutput,
)

if TYPE_CHECKING:
    import torch

    from invokeai_provider.core.context import InvocationContext

_CATEGORY = "latents"

# InvokeAI's SEED_MAX (invokeai/app/util/misc.py).
SEED_MAX = 2**32 - 1

LatentNoiseType = Literal["SD", "FLUX", "FLUX.2", "SD3", "CogView4", "Z-Image", "Anima"]
LATENTS_INTERPOLATION_MODE = Literal["nearest", "linear", "bilinear", "bicubic", "trilinear", "area", "nearest-exact"]

# Field descriptions as InvokeAI's FieldDescriptions words them.
_LATENTS = "Latents tensor"
_WIDTH = "Width of output (px)"
_HEIGHT = "Height of output (px)"
_SEED = "Seed for random number generation"
_INTERP_MODE = "Interpolation mode"
_ANTIALIAS = "Whether or not to apply antialiasing (bilinear or bicubic only)"


def _multiple_of(field: Any, multiple: int) -> Any:
    """Adds pydantic's multiple-of constraint (InvokeAI's ``multiple_of=``) to an InputField, before any limit
    (`core.limits`): a constraint after the limit's validator would be checked but left out of the JSON schema."""
    limits = [i for i, meta in enumerate(field.metadata) if isinstance(meta, FieldLimit)]
    field.metadata.insert(limits[0] if limits else len(field.metadata), MultipleOf(multiple))
    return field


# --- noise ------------------------------------------------------------------------------------------

# Per noise type: the latent shape after the batch dimension, less the two spatial ones, and the multiple
# that both pixel dimensions must be.
_NOISE_CHANNELS: dict[str, tuple[int, ...]] = {
    "SD": (4,), "FLUX": (16,), "FLUX.2": (32,), "SD3": (16,), "CogView4": (16,), "Z-Image": (16,), "Anima": (16, 1),
}
_NOISE_MULTIPLE: dict[str, int] = {"FLUX": 16, "FLUX.2": 16, "SD3": 16, "Z-Image": 16, "CogView4": 32}
# Noise types InvokeAI always draws in float32; the others are drawn in the inference dtype.
_FLOAT32_NOISE = ("Z-Image", "Anima")


def noise_shape(noise_type: str, width: int, height: int) -> tuple[int, ...]:
    """The noise tensor shape for an architecture and a pixel size; refuses sizes it cannot take."""
    if noise_type not in _NOISE_CHANNELS:
        raise ValueError(f"Unsupported noise type: {noise_type}")
    multiple = _NOISE_MULTIPLE.get(noise_type, LATENT_SCALE_FACTOR)
    if width % multiple or height % multiple:
        raise ValueError(f"{noise_type} noise width and height must be a multiple of {multiple}")
    return (1, *_NOISE_CHANNELS[noise_type], height // LATENT_SCALE_FACTOR, width // LATENT_SCALE_FACTOR)


def generate_noise(noise_type: str, width: int, height: int, seed: int, use_cpu: bool = True) -> "torch.Tensor":
    """InvokeAI's latent noise: standard normal values from a torch.Generator seeded with ``seed``.

    With ``use_cpu`` (the default) the generator runs on the CPU, so the values are the same on every
    machine; otherwise it runs on the GPU when there is one, drawing in float16 (InvokeAI's default
    precision there) except for the float32-only types. The result is a float32 CPU tensor.
    """
    import torch

    shape = noise_shape(noise_type, width, height)
    device = "cuda" if not use_cpu and torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" and noise_type not in _FLOAT32_NOISE else torch.float32
    generator = torch.Generator(device=device).manual_seed(seed)
    noise = torch.randn(*shape, generator=generator, device=device, dtype=dtype)
    return noise.to(device="cpu", dtype=torch.float32)


@invocation_output("noise_output")
class NoiseOutput(BaseInvocationOutput):
    """A noise tensor, by name, with its seed and the pixel size it stands for."""

    noise: LatentsField = OutputField(description="Noise tensor")
    width: int = OutputField(description=_WIDTH)
    height: int = OutputField(description=_HEIGHT)

    @classmethod
    def build(cls, latents_name: str, latents: Any, seed: int) -> "NoiseOutput":
        shape = tuple(latents.shape)
        return cls(
            noise=LatentsField(latents_name=latents_name, seed=seed),
            width=int(shape[-1]) * LATENT_SCALE_FACTOR,
            height=int(shape[-2]) * LATENT_SCALE_FACTOR,
        )


@invocation("noise", title="Create Latent Noise", tags=["latents", "noise"], category=_CATEGORY, version="1.1.0")
class NoiseInvocation(BaseInvocation):
    """Seeded Gaussian latent noise shaped for the chosen architecture."""

    noise_type: LatentNoiseType = InputField(default="SD", description="Architecture-specific noise type.")
    seed: int = InputField(default=0, ge=0, le=SEED_MAX, description=_SEED)
    width: int = _multiple_of(InputField(default=512, gt=0, description=_WIDTH, limit=IMAGE_SIDE), LATENT_SCALE_FACTOR)
    height: int = _multiple_of(InputField(default=512, gt=0, description=_HEIGHT, limit=IMAGE_SIDE), LATENT_SCALE_FACTOR)
    use_cpu: bool = InputField(
        default=True, description="Use CPU for noise generation (for reproducible results across platforms)"
    )

    @field_validator("seed", mode="before")
    @classmethod
    def _wrap_seed(cls, value: Any) -> Any:
        """Seeds outside [0, SEED_MAX] wrap around, as in InvokeAI (-1 becomes SEED_MAX)."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value % (SEED_MAX + 1)
        return value

    def invoke(self, context: "InvocationContext") -> NoiseOutput:
        noise = generate_noise(self.noise_type, self.width, self.height, self.seed, use_cpu=self.use_cpu)
        name = context.tensors.save(noise)
        return NoiseOutput.build(name, noise, self.seed)


# --- scheduler --------------------------------------------------------------------------------------


@invocation("scheduler", title="Scheduler", tags=["scheduler"], category=_CATEGORY, version="1.0.0")
class SchedulerInvocation(BaseInvocation):
    """Picks a scheduler by name."""

    scheduler: SCHEDULER_NAME_VALUES = InputField(
        default="euler", description=SCHEDULER_DESCRIPTION, ui_type="SchedulerField"
    )

    def invoke(self, context: "InvocationContext") -> SchedulerOutput:
        return SchedulerOutput(scheduler=self.scheduler)


# --- resize and scale -------------------------------------------------------------------------------


def _interpolate(latents: "torch.Tensor", mode: str, antialias: bool, **size: Any) -> "torch.Tensor":
    import torch

    # torch only antialiases bilinear and bicubic; InvokeAI drops the flag for the other modes.
    return torch.nn.functional.interpolate(
        latents, mode=mode, antialias=antialias if mode in ("bilinear", "bicubic") else False, **size
    )


@invocation("lresize", title="Resize Latents", tags=["latents", "resize"], category=_CATEGORY, version="1.0.2")
class ResizeLatentsInvocation(BaseInvocation):
    """Resizes latents to a pixel width and height (each divided by 8 to give the latent size)."""

    latents: LatentsField = InputField(description=_LATENTS, input=Input.Connection)
    width: int = _multiple_of(InputField(ge=64, description=_WIDTH, limit=IMAGE_SIDE), LATENT_SCALE_FACTOR)
    # InvokeAI describes height with the width's description; kept so the schemas agree.
    height: int = _multiple_of(InputField(ge=64, description=_WIDTH, limit=IMAGE_SIDE), LATENT_SCALE_FACTOR)
    mode: LATENTS_INTERPOLATION_MODE = InputField(default="bilinear", description=_INTERP_MODE)
    antialias: bool = InputField(default=False, description=_ANTIALIAS)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        latents = context.tensors.load(self.latents.latents_name)
        size = (self.height // LATENT_SCALE_FACTOR, self.width // LATENT_SCALE_FACTOR)
        resized = _interpolate(latents, self.mode, self.antialias, size=size)
        name = context.tensors.save(resized)
        return LatentsOutput.build(name, resized, seed=self.latents.seed)


@invocation("lscale", title="Scale Latents", tags=["latents", "resize"], category=_CATEGORY, version="1.0.2")
class ScaleLatentsInvocation(BaseInvocation):
    """Scales latents by a factor."""

    latents: LatentsField = InputField(description=_LATENTS, input=Input.Connection)
    scale_factor: float = InputField(gt=0, description="The factor by which to scale")
    mode: LATENTS_INTERPOLATION_MODE = InputField(default="bilinear", description=_INTERP_MODE)
    antialias: bool = InputField(default=False, description=_ANTIALIAS)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        latents = context.tensors.load(self.latents.latents_name)
        height, width = (int(side * self.scale_factor) * LATENT_SCALE_FACTOR for side in latents.shape[-2:])
        too_large = size_problem(width, height)
        if too_large:
            raise field_error(NodeInputError, self, "scale_factor", f"{self.scale_factor} scales the latents to "
                                                                     f"{too_large}")
        scaled = _interpolate(latents, self.mode, self.antialias, scale_factor=self.scale_factor)
        name = context.tensors.save(scaled)
        return LatentsOutput.build(name, scaled, seed=self.latents.seed)


# --- blend ------------------------------------------------------------------------------------------

# Inputs more nearly parallel than this are blended linearly (slerp is ill-conditioned there).
_SLERP_DOT_THRESHOLD = 0.9995


def slerp(t: float, a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    """Spherical interpolation between two tensors treated as flat vectors, as InvokeAI computes it.

    The angle comes from the normalised dot product of the whole tensors; when they are nearly
    parallel (|cos| above 0.9995) it falls back to linear interpolation. Arithmetic is done in numpy
    in the inputs' dtype, like InvokeAI's, so the results agree bit for bit.
    """
    import numpy as np
    import torch

    v0 = a.detach().cpu().numpy()
    v1 = b.detach().cpu().numpy()
    cos = np.sum(v0 * v1 / (np.linalg.norm(v0) * np.linalg.norm(v1)))
    if np.abs(cos) > _SLERP_DOT_THRESHOLD:
        mixed = (1 - t) * v0 + t * v1
    else:
        angle = np.arccos(cos)
        sin_angle = np.sin(angle)
        angle_t = angle * t
        mixed = (np.sin(angle - angle_t) / sin_angle) * v0 + (np.sin(angle_t) / sin_angle) * v1
    return torch.from_numpy(mixed)


def _mask_for_latents(mask_image: Any, latent_hw: tuple[int, int]) -> "torch.Tensor":
    """A mask image as a [1, 1, h, w] tensor in [0, 1] at the latents' spatial size.

    Same steps as InvokeAI: greyscale, trimmed to a multiple of 8 with a Lanczos resize, scaled to
    [0, 1], then bilinearly resized (no antialiasing) to the latent size.
    """
    import numpy as np
    import torch
    from PIL import Image

    if mask_image.mode != "L":
        mask_image = mask_image.convert("L")
    width, height = mask_image.size
    trimmed = (width - width % LATENT_SCALE_FACTOR, height - height % LATENT_SCALE_FACTOR)
    if trimmed != mask_image.size:
        mask_image = mask_image.resize(trimmed, Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.array(mask_image, dtype=np.uint8, copy=True))
    mask = pixels.to(torch.float32).div(255)[None, None]
    return torch.nn.functional.interpolate(mask, size=latent_hw, mode="bilinear", align_corners=False,
                                           antialias=False)


@invocation("lblend", title="Blend Latents", tags=["latents", "blend", "mask"], category=_CATEGORY, version="1.1.0")
class BlendLatentsInvocation(BaseInvocation):
    """Blends two latents of the same size by alpha (spherically). With a mask, latents B take the values
    of latents A where the mask is white before blending."""

    latents_a: LatentsField = InputField(description=_LATENTS, input=Input.Connection)
    latents_b: LatentsField = InputField(description=_LATENTS, input=Input.Connection)
    mask: Optional[ImageField] = InputField(default=None, description="Mask for blending in latents B")
    alpha: float = InputField(
        default=0.5, ge=0,
        description="Blending factor. 0.0 = use input A only, 1.0 = use input B only, 0.5 = 50% mix of input A "
                    "and input B.",
    )

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        import torch

        latents_a = context.tensors.load(self.latents_a.latents_name)
        latents_b = context.tensors.load(self.latents_b.latents_name)
        if latents_a.shape != latents_b.shape:
            raise ValueError("Latents to blend must be the same size.")
        if self.mask is not None:
            mask = _mask_for_latents(context.images.get_pil(self.mask.image_name), tuple(latents_a.shape[-2:]))
            mask = mask.expand(latents_b.shape)
            if latents_b.dtype == torch.float16:
                mask = mask.half()
            # b + mask * (a - b): white areas of the mask take A's values, black keep B's.
            latents_b = latents_b.clone() + mask * (latents_a - latents_b)
        blended = slerp(self.alpha, latents_a, latents_b)
        name = context.tensors.save(blended)
        return LatentsOutput.build(name, blended)


# --- crop -------------------------------------------------------------------------------------------


def _crop_field(description: str, minimum: int) -> Any:
    return _multiple_of(InputField(ge=minimum, description=description), LATENT_SCALE_FACTOR)


_IN_LATENT_SPACE = " This value will be converted to a dimension in latent space."


@invocation("crop_latents", title="Crop Latents", tags=["latents", "crop"], category=_CATEGORY, version="1.0.2")
class CropLatentsCoreInvocation(BaseInvocation):
    """Crops latents to a box given in image pixels (coordinates and size multiples of 8)."""

    latents: LatentsField = InputField(description=_LATENTS, input=Input.Connection)
    x: int = _crop_field("The left x coordinate (in px) of the crop rectangle in image space." + _IN_LATENT_SPACE, 0)
    y: int = _crop_field("The top y coordinate (in px) of the crop rectangle in image space." + _IN_LATENT_SPACE, 0)
    width: int = _crop_field("The width (in px) of the crop rectangle in image space." + _IN_LATENT_SPACE, 1)
    height: int = _crop_field("The height (in px) of the crop rectangle in image space." + _IN_LATENT_SPACE, 1)

    def invoke(self, context: "InvocationContext") -> LatentsOutput:
        latents = context.tensors.load(self.latents.latents_name)
        left, top = self.x // LATENT_SCALE_FACTOR, self.y // LATENT_SCALE_FACTOR
        right = left + self.width // LATENT_SCALE_FACTOR
        bottom = top + self.height // LATENT_SCALE_FACTOR
        cropped = latents[..., top:bottom, left:right]
        name = context.tensors.save(cropped)
        return LatentsOutput.build(name, cropped)


# --- ideal size -------------------------------------------------------------------------------------

IDEAL_DIMENSION = {BaseModelType.StableDiffusion1: 512, BaseModelType.StableDiffusion2: 768,
                   BaseModelType.StableDiffusionXL: 1024, BaseModelType.Flux: 1024, BaseModelType.Flux2: 1024,
                   BaseModelType.StableDiffusion3: 1024}


@invocation_output("ideal_size_output")
class IdealSizeOutput(BaseInvocationOutput):
    width: int = OutputField(description="The ideal width of the image (in pixels)")
    height: int = OutputField(description="The ideal height of the image (in pixels)")


@invocation("ideal_size", title="Ideal Size - SD1.5, SDXL", tags=["latents", "math", "ideal_size"],
            category="latents", version="1.0.6")
class IdealSizeInvocation(BaseInvocation):
    """The size the model was trained at, with the requested aspect ratio: generate there, then upscale."""

    width: int = InputField(default=1024, description="Final image width", limit=IMAGE_SIDE)
    height: int = InputField(default=576, description="Final image height", limit=IMAGE_SIDE)
    unet: UNetField = InputField(description=UNET_DESCRIPTION)
    multiplier: float = InputField(default=1.0, description="Amount to multiply the model's dimensions by when "
                                   "calculating the ideal size (may result in initial generation artifacts if too large)")

    def invoke(self, context: "InvocationContext") -> IdealSizeOutput:
        base = model_service(self, context, "unet").get_config(self.unet.unet).base
        if base not in IDEAL_DIMENSION:
            raise GenerationError(f"node {self.id} (ideal_size): field unet: no ideal size for base {base.value}",
                                  node_id=self.id, field="unet")
        dimension = IDEAL_DIMENSION[base] * self.multiplier
        minimum, area, aspect = math.floor(dimension * 0.5), dimension * dimension, self.width / self.height
        if aspect > 1.0:
            height = max(minimum, math.sqrt(area / aspect))
            width = height * aspect
        else:
            width = max(minimum, math.sqrt(area * aspect))
            height = width / aspect
        width, height = math.floor(width), math.floor(height)
        return IdealSizeOutput(width=width - width % 8, height=height - height % 8)

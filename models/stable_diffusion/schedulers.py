"""InvokeAI's scheduler names and the diffusers schedulers they stand for.

Each of the 31 names in SCHEDULER_NAME_VALUES maps to a scheduler class and the settings that name
forces (karras sigmas for the ``_k`` variants, the solver order, the SDE algorithm, ...), following
InvokeAI's ``backend/stable_diffusion/schedulers/schedulers.py``. `make_scheduler` builds one from a
model's scheduler config the way InvokeAI's denoise node does (``get_scheduler`` in
``invocations/denoise_latents.py``): the model's original config, the name's settings on top, the
original kept under ``_backup`` so a rebuilt config starts from the model's own again.

``er_sde`` is InvokeAI's own ER-SDE solver, not part of diffusers; `er_sde_scheduler_class` provides an
implementation with the same config keys and arithmetic. Nothing here imports torch or diffusers until a
scheduler is built.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional, get_args

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

__all__ = [
    "SCHEDULER_MAP",
    "SCHEDULER_NAMES",
    "SCHEDULER_NAME_VALUES",
    "UnknownSchedulerError",
    "er_sde_scheduler_class",
    "make_scheduler",
    "scheduler_class",
    "scheduler_config",
]

# InvokeAI's scheduler names (backend/stable_diffusion/schedulers/schedulers.py), in its order.
SCHEDULER_NAME_VALUES = Literal[
    "ddim",
    "ddpm",
    "deis",
    "deis_k",
    "lms",
    "lms_k",
    "pndm",
    "heun",
    "heun_k",
    "euler",
    "euler_k",
    "euler_a",
    "kdpm_2",
    "kdpm_2_k",
    "kdpm_2_a",
    "kdpm_2_a_k",
    "dpmpp_2s",
    "dpmpp_2s_k",
    "dpmpp_2m",
    "dpmpp_2m_k",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_k",
    "dpmpp_3m",
    "dpmpp_3m_k",
    "dpmpp_sde",
    "dpmpp_sde_k",
    "er_sde",
    "unipc",
    "unipc_k",
    "lcm",
    "tcd",
]
SCHEDULER_NAMES: tuple[str, ...] = get_args(SCHEDULER_NAME_VALUES)

ER_SDE_CLASS_NAME = "ERSDEScheduler"


def _karras(on: bool, **extra: Any) -> dict[str, Any]:
    return {"use_karras_sigmas": on, **extra}


# name -> (class name, settings the name forces). Class names are diffusers' (or ER_SDE_CLASS_NAME), so
# that reading the table imports nothing.
SCHEDULER_MAP: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "deis": ("DEISMultistepScheduler", _karras(False)),
    "deis_k": ("DEISMultistepScheduler", _karras(True)),
    "lms": ("LMSDiscreteScheduler", _karras(False)),
    "lms_k": ("LMSDiscreteScheduler", _karras(True)),
    "pndm": ("PNDMScheduler", {}),
    "heun": ("HeunDiscreteScheduler", _karras(False)),
    "heun_k": ("HeunDiscreteScheduler", _karras(True)),
    "euler": ("EulerDiscreteScheduler", _karras(False)),
    "euler_k": ("EulerDiscreteScheduler", _karras(True)),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "kdpm_2": ("KDPM2DiscreteScheduler", _karras(False)),
    "kdpm_2_k": ("KDPM2DiscreteScheduler", _karras(True)),
    "kdpm_2_a": ("KDPM2AncestralDiscreteScheduler", _karras(False)),
    "kdpm_2_a_k": ("KDPM2AncestralDiscreteScheduler", _karras(True)),
    "dpmpp_2s": ("DPMSolverSinglestepScheduler", _karras(False, solver_order=2)),
    "dpmpp_2s_k": ("DPMSolverSinglestepScheduler", _karras(True, solver_order=2)),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", _karras(False, solver_order=2)),
    "dpmpp_2m_k": ("DPMSolverMultistepScheduler", _karras(True, solver_order=2)),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", _karras(False, solver_order=2, algorithm_type="sde-dpmsolver++")),
    "dpmpp_2m_sde_k": ("DPMSolverMultistepScheduler", _karras(True, solver_order=2, algorithm_type="sde-dpmsolver++")),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", _karras(False, solver_order=3)),
    "dpmpp_3m_k": ("DPMSolverMultistepScheduler", _karras(True, solver_order=3)),
    "dpmpp_sde": ("DPMSolverSDEScheduler", _karras(False, noise_sampler_seed=0)),
    "dpmpp_sde_k": ("DPMSolverSDEScheduler", _karras(True, noise_sampler_seed=0)),
    "er_sde": (ER_SDE_CLASS_NAME, {"solver_order": 3, "use_flow_sigmas": False, "stochastic": True}),
    # cpu_only is not a diffusers setting: it stays in the config and tells the denoise loop to compute the
    # timesteps on the CPU (InvokeAI's init_scheduler reads it).
    "unipc": ("UniPCMultistepScheduler", _karras(False, cpu_only=True)),
    "unipc_k": ("UniPCMultistepScheduler", _karras(True, cpu_only=True)),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
}

assert tuple(SCHEDULER_MAP) == SCHEDULER_NAMES, "scheduler table and SCHEDULER_NAME_VALUES disagree"


class UnknownSchedulerError(ValueError):
    """A scheduler name that is not one of InvokeAI's 31."""

    def __init__(self, name: str) -> None:
        super().__init__(f'unknown scheduler "{name}"; expected one of: {", ".join(SCHEDULER_NAMES)}')
        self.name = name


def _entry(name: str) -> tuple[str, dict[str, Any]]:
    try:
        return SCHEDULER_MAP[name]
    except (KeyError, TypeError):
        raise UnknownSchedulerError(str(name)) from None


def scheduler_class(name: str) -> type["SchedulerMixin"]:
    """The scheduler class a name stands for (imports diffusers)."""
    class_name, _ = _entry(name)
    if class_name == ER_SDE_CLASS_NAME:
        return er_sde_scheduler_class()
    import diffusers

    return getattr(diffusers, class_name)


def scheduler_config(name: str, base_config: Mapping[str, Any], *, seed: int = 0,
                     prediction_type: Optional[str] = None) -> dict[str, Any]:
    """The config `make_scheduler` builds ``name`` from, starting at a model's scheduler config.

    ``seed`` seeds the noise sampler of dpmpp_sde(_k) (diffusers only takes it at construction);
    ``prediction_type`` is the UNet's, when its model config names one.
    """
    class_name, overrides = _entry(name)
    original = dict(base_config)
    backup = original.get("_backup")
    if isinstance(backup, Mapping):
        # A config that was already built by this function: start again from the model's own.
        original = dict(backup)
    config: dict[str, Any] = {**original, **overrides, "_backup": original}
    if prediction_type is not None:
        config["prediction_type"] = prediction_type
    if class_name == "DPMSolverSDEScheduler":
        config["noise_sampler_seed"] = seed
    # A DEIS model config carries algorithm_type "deis", which the DPM-Solver classes reject.
    if (class_name in ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler")
            and original.get("_class_name") == "DEISMultistepScheduler" and config.get("algorithm_type") == "deis"):
        config["algorithm_type"] = "dpmsolver++"
    return config


def make_scheduler(name: str, base_config: Mapping[str, Any], *, seed: int = 0,
                   prediction_type: Optional[str] = None) -> "SchedulerMixin":
    """A new diffusers scheduler for an InvokeAI scheduler name, built from a model's scheduler config.

    ``base_config`` is a scheduler_config.json dict (or a scheduler's ``.config``). Unlike InvokeAI,
    which silently falls back to DDIM, an unknown name raises UnknownSchedulerError.
    """
    cls = scheduler_class(name)
    config = scheduler_config(name, base_config, seed=seed, prediction_type=prediction_type)
    scheduler = cls.from_config(config)
    if not hasattr(scheduler, "uses_inpainting_model"):
        # InvokeAI's pipeline asks every scheduler this.
        scheduler.uses_inpainting_model = lambda: False
    return scheduler


# --- ER-SDE -----------------------------------------------------------------------------------------
# The extended reverse-time SDE solver of Cui et al. 2023 (arXiv:2309.06169), with the noise-scale
# function the paper recommends for few-step sampling, as InvokeAI ships it for SD/SDXL (VP sigmas) and
# rectified-flow models (flow sigmas). Integrals are left Riemann sums over 100 points.

_RIEMANN_POINTS = 100


def _noise_scale(lam: float) -> float:
    """The ER-SDE noise-scale function f(lambda) = lambda * (exp(lambda^0.3) + 10)."""
    return lam * (math.exp(lam ** 0.3) + 10.0)


def _riemann(lo: float, hi: float, numerator: Any) -> float:
    """Left Riemann sum over [lo, hi] of numerator(lam) / f(lam); 0 for an empty interval."""
    width = hi - lo
    if width <= 0:
        return 0.0
    step = width / _RIEMANN_POINTS
    total = 0.0
    for k in range(_RIEMANN_POINTS):
        lam = lo + k * step
        total += step * numerator(lam) / _noise_scale(lam)
    return total


def _int_inverse_scale(lam_next: float, lam_curr: float) -> float:
    """Integral of 1/f over [lam_next, lam_curr]; needs lam_next > 0 (f vanishes at 0)."""
    return _riemann(lam_next, lam_curr, lambda lam: 1.0)


def _int_offset_over_scale(lam_next: float, lam_curr: float) -> float:
    """Integral of (lam - lam_curr)/f over [lam_next, lam_curr]; needs lam_next > 0."""
    return _riemann(lam_next, lam_curr, lambda lam: lam - lam_curr)


@functools.lru_cache(maxsize=1)
def er_sde_scheduler_class() -> type["SchedulerMixin"]:
    """The ER-SDE scheduler class (built on first use, so that importing this module stays light)."""
    import numpy as np
    import torch
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import (
        KarrasDiffusionSchedulers,
        SchedulerMixin,
        SchedulerOutput,
    )
    from diffusers.utils.torch_utils import randn_tensor

    def betas_for(schedule: str, start: float, end: float, count: int) -> "torch.Tensor":
        if schedule == "linear":
            return torch.linspace(start, end, count, dtype=torch.float32)
        if schedule == "scaled_linear":
            return torch.linspace(start ** 0.5, end ** 0.5, count, dtype=torch.float32) ** 2
        if schedule == "squaredcos_cap_v2":
            def alpha_bar(t: float) -> float:
                return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
            values = [min(1 - alpha_bar((i + 1) / count) / alpha_bar(i / count), 0.999) for i in range(count)]
            return torch.tensor(values, dtype=torch.float32)
        raise NotImplementedError(f"beta_schedule {schedule!r} is not supported by the ER-SDE scheduler")

    class ERSDEScheduler(SchedulerMixin, ConfigMixin):
        """ER-SDE multistep solver (orders 1-3) for VP (SD/SDXL) or rectified-flow sigmas."""

        _compatibles: ClassVar[list[str]] = [e.name for e in KarrasDiffusionSchedulers]
        order = 1

        @register_to_config
        def __init__(
            self,
            num_train_timesteps: int = 1000,
            beta_start: float = 0.00085,
            beta_end: float = 0.012,
            beta_schedule: str = "scaled_linear",
            trained_betas: Optional[Any] = None,
            prediction_type: str = "epsilon",
            solver_order: int = 3,
            use_flow_sigmas: bool = False,
            flow_shift: float = 1.0,
            stochastic: bool = True,
            sigma_one_tolerance: float = 1e-6,
            timestep_spacing: str = "linspace",
            steps_offset: int = 0,
        ) -> None:
            if prediction_type not in ("epsilon", "v_prediction", "flow_prediction"):
                raise ValueError(f"ER-SDE: unsupported prediction_type {prediction_type!r} "
                                 "(expected epsilon, v_prediction or flow_prediction)")
            if solver_order not in (1, 2, 3):
                raise ValueError(f"ER-SDE: solver_order must be 1, 2 or 3, got {solver_order}")
            if prediction_type == "flow_prediction" and not use_flow_sigmas:
                raise ValueError("ER-SDE: prediction_type 'flow_prediction' needs use_flow_sigmas=True")
            if trained_betas is not None:
                self.betas = torch.tensor(trained_betas, dtype=torch.float32)
            else:
                self.betas = betas_for(beta_schedule, beta_start, beta_end, num_train_timesteps)
            self.alphas = 1.0 - self.betas
            self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
            self.init_noise_sigma = 1.0
            self.sigmas = (((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).to("cpu")
            self.timesteps = torch.from_numpy(
                np.linspace(0, num_train_timesteps - 1, num_train_timesteps, dtype=np.float32)[::-1].copy())
            self.num_inference_steps: Optional[int] = None
            self._reset_history()

        def _reset_history(self) -> None:
            order = self.config.solver_order
            # x0 predictions and the sigmas they were made at, oldest first; slot -1 is the newest.
            self.model_outputs: list[Optional[torch.Tensor]] = [None] * order
            self._sigma_history: list[Optional[float]] = [None] * order
            self.lower_order_nums = 0
            self._step_index: Optional[int] = None
            self._begin_index: Optional[int] = None

        # -- indices --

        @property
        def step_index(self) -> Optional[int]:
            return self._step_index

        @property
        def begin_index(self) -> Optional[int]:
            return self._begin_index

        def set_begin_index(self, begin_index: int = 0) -> None:
            self._begin_index = begin_index

        def index_for_timestep(self, timestep: Any, schedule_timesteps: Optional[torch.Tensor] = None) -> int:
            schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
            matches = (schedule == timestep).nonzero()
            if len(matches) == 0:
                return len(self.timesteps) - 1
            # A repeated first timestep (img2img) starts at the second match, so no sigma is skipped.
            return int(matches[1 if len(matches) > 1 else 0].item())

        def _init_step_index(self, timestep: Any) -> None:
            if self.begin_index is not None:
                self._step_index = self._begin_index
                return
            if isinstance(timestep, torch.Tensor):
                timestep = timestep.to(self.timesteps.device)
            self._step_index = self.index_for_timestep(timestep)

        # -- schedule --

        def set_timesteps(self, num_inference_steps: Optional[int] = None, device: Any = None,
                          sigmas: Optional[Any] = None, timesteps: Optional[list[int]] = None) -> None:
            """Sets the schedule from exactly one of a step count, explicit timesteps or explicit sigmas."""
            if sum(v is not None for v in (num_inference_steps, timesteps, sigmas)) != 1:
                raise ValueError("Must pass exactly one of `num_inference_steps`, `timesteps`, or `sigmas`.")
            if sigmas is not None:
                if isinstance(sigmas, torch.Tensor):
                    sigma_values = sigmas.detach().cpu().numpy().astype(np.float32)
                else:
                    sigma_values = np.array(sigmas, dtype=np.float32)
                num_inference_steps = len(sigma_values) - 1
                # Only used to index steps; the update itself runs on the sigmas.
                step_values = (sigma_values[:-1] * self.config.num_train_timesteps).astype(np.float32)
            else:
                if timesteps is not None:
                    step_values = np.array(timesteps, dtype=np.float32)
                    num_inference_steps = len(step_values)
                else:
                    step_values = self._spaced_timesteps(int(num_inference_steps))  # type: ignore[arg-type]
                sigma_values = self._sigmas_at(step_values)
            self.num_inference_steps = num_inference_steps
            self.sigmas = torch.from_numpy(sigma_values.astype(np.float32)).to("cpu")
            self.timesteps = torch.from_numpy(step_values.astype(np.float32)).to(device=device)
            self._reset_history()

        def _spaced_timesteps(self, steps: int) -> "np.ndarray":
            total = self.config.num_train_timesteps
            spacing = self.config.timestep_spacing
            if spacing == "linspace":
                values = np.linspace(0, total - 1, steps + 1).round()[::-1][:-1]
                return values.copy().astype(np.float32)
            if spacing == "leading":
                ratio = total // (steps + 1)
                values = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(np.float32)
                return values + self.config.steps_offset
            if spacing == "trailing":
                values = np.arange(total, 0, -total / steps).round().copy().astype(np.float32)
                return values - 1
            raise ValueError(f"timestep_spacing {spacing!r} must be one of 'linspace', 'leading', 'trailing'")

        def _sigmas_at(self, step_values: "np.ndarray") -> "np.ndarray":
            """Sigmas for the given timesteps, with the terminal 0 appended."""
            if self.config.use_flow_sigmas:
                count = len(step_values)
                plain = 1.0 - np.linspace(1, 1 / self.config.num_train_timesteps, count + 1)
                shift = self.config.flow_shift
                shifted = np.flip(shift * plain / (1 + (shift - 1) * plain))[:-1]
                return np.concatenate([shifted, [0.0]]).astype(np.float32)
            train = (((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).numpy()
            values = np.interp(step_values, np.arange(0, len(train)), train)
            return np.concatenate([values, [0.0]]).astype(np.float32)

        # -- parameterisation --

        def _alpha_sigma(self, sigma: float) -> tuple[float, float]:
            """(alpha_t, sigma_t) of a schedule sigma: 1-s, s for flow; 1/sqrt(1+s^2), s*alpha_t for VP."""
            if self.config.use_flow_sigmas:
                return 1.0 - sigma, sigma
            alpha = 1.0 / math.sqrt(1.0 + sigma * sigma)
            return alpha, sigma * alpha

        @staticmethod
        def _ratio(alpha: float, sigma_t: float) -> float:
            """lambda = sigma_t / alpha_t (infinite where alpha_t is 0)."""
            return float("inf") if alpha == 0.0 else sigma_t / alpha

        def _lambda_of(self, sigma: float) -> float:
            return self._ratio(*self._alpha_sigma(sigma))

        def _at_flow_start(self, sigma: float) -> bool:
            return bool(self.config.use_flow_sigmas) and 1.0 - sigma < self.config.sigma_one_tolerance

        def _predict_x0(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
            sigma = float(self.sigmas[self.step_index].item())
            kind = self.config.prediction_type
            if kind == "flow_prediction":
                return sample - sigma * model_output
            alpha, sigma_t = self._alpha_sigma(sigma)
            if kind == "epsilon":
                return (sample - sigma_t * model_output) / alpha
            if kind == "v_prediction":
                return alpha * sample - sigma_t * model_output
            raise ValueError(f"ER-SDE: unsupported prediction_type {kind!r}")

        # -- updates --

        def _order1(self, x0: torch.Tensor, sample: torch.Tensor, sigma: float, sigma_next: float,
                    noise: Optional[torch.Tensor]) -> torch.Tensor:
            inject = self.config.stochastic and noise is not None and sigma_next > 0.0
            if self._at_flow_start(sigma):
                # lambda is infinite at sigma = 1; the limit is a plain re-noising of x0.
                result = (1.0 - sigma_next) * x0
                return result + sigma_next * noise if inject else result  # type: ignore[operator]
            alpha, sigma_t = self._alpha_sigma(sigma)
            alpha_next, sigma_t_next = self._alpha_sigma(sigma_next)
            lam = self._ratio(alpha, sigma_t)
            lam_next = self._ratio(alpha_next, sigma_t_next) if sigma_t_next > 0.0 else 0.0
            f_curr = _noise_scale(lam)
            f_ratio = _noise_scale(lam_next) / f_curr if f_curr != 0.0 else 0.0
            result = (alpha_next / alpha) * f_ratio * sample + alpha_next * (1.0 - f_ratio) * x0
            if inject:
                variance = max(lam_next ** 2 - lam ** 2 * f_ratio ** 2, 0.0)  # roundoff can dip below 0
                result = result + math.sqrt(variance) * alpha_next * noise
            return result

        def _order2(self, sample: torch.Tensor, sigma: float, sigma_next: float,
                    noise: Optional[torch.Tensor]) -> torch.Tensor:
            x0, x0_prev = self.model_outputs[-1], self.model_outputs[-2]
            sigma_prev = self._sigma_history[-2]
            assert x0 is not None and x0_prev is not None and sigma_prev is not None
            result = self._order1(x0, sample, sigma, sigma_next, noise)
            if self._at_flow_start(sigma_prev) or sigma_next <= 0.0:
                # No usable difference across the sigma = 1 limit; the integral diverges at sigma = 0.
                return result
            lam, lam_next, lam_prev = (self._lambda_of(s) for s in (sigma, sigma_next, sigma_prev))
            if lam == lam_prev:
                return result
            slope = (x0 - x0_prev) / (lam - lam_prev)
            alpha_next = self._alpha_sigma(sigma_next)[0]
            weight = lam_next - lam + _int_inverse_scale(lam_next, lam) * _noise_scale(lam_next)
            return result + alpha_next * weight * slope

        def _order3(self, sample: torch.Tensor, sigma: float, sigma_next: float,
                    noise: Optional[torch.Tensor]) -> torch.Tensor:
            x0, x0_prev, x0_pprev = self.model_outputs[-1], self.model_outputs[-2], self.model_outputs[-3]
            sigma_prev, sigma_pprev = self._sigma_history[-2], self._sigma_history[-3]
            assert x0 is not None and x0_prev is not None and x0_pprev is not None
            assert sigma_prev is not None and sigma_pprev is not None
            result = self._order2(sample, sigma, sigma_next, noise)
            if self._at_flow_start(sigma_prev) or self._at_flow_start(sigma_pprev) or sigma_next <= 0.0:
                return result
            lam, lam_next, lam_prev, lam_pprev = (
                self._lambda_of(s) for s in (sigma, sigma_next, sigma_prev, sigma_pprev))
            if lam == lam_prev or lam_prev == lam_pprev or lam == lam_pprev:
                return result
            slope = (x0 - x0_prev) / (lam - lam_prev)
            slope_prev = (x0_prev - x0_pprev) / (lam_prev - lam_pprev)
            curvature = 2.0 * (slope - slope_prev) / (lam - lam_pprev)
            alpha_next = self._alpha_sigma(sigma_next)[0]
            weight = (lam_next - lam) ** 2 / 2.0 + _int_offset_over_scale(lam_next, lam) * _noise_scale(lam_next)
            return result + alpha_next * weight * curvature

        # -- diffusers API --

        def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
            return sample

        def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
                 generator: Optional[torch.Generator] = None, return_dict: bool = True) -> Any:
            if self.num_inference_steps is None:
                raise ValueError("num_inference_steps is None: call `set_timesteps` before `step`")
            if self.step_index is None:
                self._init_step_index(timestep)
            index = self.step_index
            assert index is not None
            sigma = float(self.sigmas[index].item())
            sigma_next = float(self.sigmas[index + 1].item())
            x0 = self._predict_x0(model_output, sample)
            self.model_outputs = [*self.model_outputs[1:], x0]
            self._sigma_history = [*self._sigma_history[1:], sigma]
            noise = None
            if self.config.stochastic and sigma_next > 0.0:
                noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                     dtype=model_output.dtype)
            order = min(self.config.solver_order, self.lower_order_nums + 1)
            if order == 1:
                prev_sample = self._order1(x0, sample, sigma, sigma_next, noise)
            elif order == 2:
                prev_sample = self._order2(sample, sigma, sigma_next, noise)
            else:
                prev_sample = self._order3(sample, sigma, sigma_next, noise)
            self.lower_order_nums = min(self.lower_order_nums + 1, self.config.solver_order)
            self._step_index = index + 1
            return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)

        def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                      timesteps: torch.Tensor) -> torch.Tensor:
            device = original_samples.device
            sigmas = self.sigmas.to(device=device, dtype=original_samples.dtype)
            if device.type == "mps" and torch.is_floating_point(timesteps):
                schedule = self.timesteps.to(device, dtype=torch.float32)
                timesteps = timesteps.to(device, dtype=torch.float32)
            else:
                schedule = self.timesteps.to(device)
                timesteps = timesteps.to(device)
            if self.begin_index is None:
                indices = [self.index_for_timestep(t, schedule) for t in timesteps]
            else:
                start = self.step_index if self.step_index is not None else self.begin_index
                indices = [start] * timesteps.shape[0]
            sigma = sigmas[indices].flatten()
            while sigma.dim() < original_samples.dim():
                sigma = sigma.unsqueeze(-1)
            if self.config.use_flow_sigmas:
                alpha_t, sigma_t = 1.0 - sigma, sigma
            else:
                alpha_t = 1.0 / torch.sqrt(1.0 + sigma * sigma)
                sigma_t = sigma * alpha_t
            return alpha_t * original_samples + sigma_t * noise

        def __len__(self) -> int:
            return self.config.num_train_timesteps

    ERSDEScheduler.__module__ = __name__
    ERSDEScheduler.__qualname__ = ER_SDE_CLASS_NAME
    return ERSDEScheduler

"""Scheduler table: every InvokeAI scheduler name builds a working diffusers scheduler from a model config."""

from __future__ import annotations

import logging
import math

import pytest

import invokeai_provider.operators.sd.latents  # noqa: F401 (registers the latent node types)
from invokeai_provider.models.stable_diffusion.schedulers import SCHEDULER_NAMES
from invokeai_provider.models.stable_diffusion.schedulers import (
    SCHEDULER_MAP,
    UnknownSchedulerError,
    make_scheduler,
    scheduler_config,
)

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

# The scheduler/scheduler_config.json of Stable Diffusion 1.5.
SD15_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# diffusers' schedulers pass torch tensors through numpy in ways NumPy 2 deprecates (not ours to fix).
pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")

KARRAS = [name for name in SCHEDULER_NAMES if name.endswith("_k")]


@pytest.fixture(autouse=True)
def _quiet_diffusers():
    # unipc's cpu_only setting is not a diffusers argument; diffusers warns about it, as under InvokeAI.
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def test_the_table_covers_exactly_the_31_names():
    assert len(SCHEDULER_NAMES) == 31
    assert tuple(SCHEDULER_MAP) == SCHEDULER_NAMES
    assert len(KARRAS) == 12


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_scheduler_builds_and_steps(name):
    scheduler = make_scheduler(name, SD15_CONFIG)
    expected_class = SCHEDULER_MAP[name][0]
    assert type(scheduler).__name__ == expected_class
    scheduler.set_timesteps(2)
    assert len(scheduler.timesteps) >= 2
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
    timestep = scheduler.timesteps[0]
    model_input = scheduler.scale_model_input(sample, timestep)
    assert model_input.shape == sample.shape
    model_output = torch.randn(1, 4, 8, 8, generator=generator)
    result = scheduler.step(model_output, timestep, sample).prev_sample
    assert result.shape == sample.shape
    assert torch.isfinite(result).all()
    assert scheduler.uses_inpainting_model() is False


@pytest.mark.parametrize("name", KARRAS)
def test_k_variants_use_karras_sigmas(name):
    karras = make_scheduler(name, SD15_CONFIG)
    plain = make_scheduler(name[:-2], SD15_CONFIG)
    assert karras.config.use_karras_sigmas is True
    assert plain.config.use_karras_sigmas is False
    karras.set_timesteps(10)
    plain.set_timesteps(10)
    assert not torch.equal(karras.timesteps.float(), plain.timesteps.float())


def test_euler_k_sigmas_follow_the_karras_formula():
    scheduler = make_scheduler("euler_k", SD15_CONFIG)
    steps = 8
    scheduler.set_timesteps(steps)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    train_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    low, high = float(train_sigmas[0]) ** (1 / 7), float(train_sigmas[-1]) ** (1 / 7)
    expected = [(high + i / (steps - 1) * (low - high)) ** 7 for i in range(steps)]
    assert scheduler.sigmas[:-1].tolist() == pytest.approx(expected, rel=1e-4)
    assert float(scheduler.sigmas[-1]) == 0.0


def test_name_settings_override_the_model_config():
    config = make_scheduler("dpmpp_2m_sde_k", SD15_CONFIG).config
    assert (config.solver_order, config.algorithm_type, config.use_karras_sigmas) == (2, "sde-dpmsolver++", True)
    assert make_scheduler("dpmpp_3m", SD15_CONFIG).config.solver_order == 3
    assert make_scheduler("dpmpp_2s", SD15_CONFIG).config.solver_order == 2
    # The model's own settings survive where the name says nothing.
    assert (config.beta_schedule, config.steps_offset, config.beta_end) == ("scaled_linear", 1, 0.012)
    # unipc keeps InvokeAI's cpu_only marker, which the denoise loop reads.
    assert make_scheduler("unipc", SD15_CONFIG).config.get("cpu_only") is True


def test_rebuilding_starts_from_the_model_config_again():
    first = make_scheduler("dpmpp_2m_sde", SD15_CONFIG)
    assert first.config["_backup"] == SD15_CONFIG
    second = make_scheduler("euler", first.config)
    assert second.config["_backup"] == SD15_CONFIG
    # sde settings of the first build do not leak into the second.
    assert "algorithm_type" not in second.config


def test_prediction_type_and_sde_seed():
    config = scheduler_config("dpmpp_sde", SD15_CONFIG, seed=1234, prediction_type="v_prediction")
    assert (config["noise_sampler_seed"], config["prediction_type"]) == (1234, "v_prediction")
    scheduler = make_scheduler("dpmpp_sde", SD15_CONFIG, seed=1234)
    assert scheduler.config.noise_sampler_seed == 1234
    assert make_scheduler("dpmpp_sde_k", SD15_CONFIG).config.noise_sampler_seed == 0


def test_deis_model_config_is_made_valid_for_dpm_solver():
    deis = {**SD15_CONFIG, "_class_name": "DEISMultistepScheduler", "algorithm_type": "deis"}
    assert make_scheduler("dpmpp_2m", deis).config.algorithm_type == "dpmsolver++"
    assert make_scheduler("dpmpp_2s_k", deis).config.algorithm_type == "dpmsolver++"
    assert make_scheduler("deis", deis).config.algorithm_type == "deis"


def test_unknown_name_is_refused_by_name():
    with pytest.raises(UnknownSchedulerError, match='unknown scheduler "dpmpp_9m"'):
        make_scheduler("dpmpp_9m", SD15_CONFIG)


# --- ER-SDE -------------------------------------------------------------------------------------------


def _vp(sigma):
    alpha = 1 / math.sqrt(1 + sigma * sigma)
    return alpha, sigma * alpha


@pytest.mark.parametrize("stochastic", [True, False])
def test_er_sde_single_step_lands_on_the_x0_prediction(stochastic):
    scheduler = make_scheduler("er_sde", {**SD15_CONFIG, "stochastic": stochastic})
    assert scheduler.config.stochastic is True  # the name's setting wins over the model config
    scheduler = type(scheduler).from_config({**scheduler.config, "stochastic": stochastic})
    scheduler.set_timesteps(1)
    sigma = float(scheduler.sigmas[0])
    alpha, sigma_t = _vp(sigma)
    generator = torch.Generator().manual_seed(5)
    sample, eps = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    result = scheduler.step(eps, scheduler.timesteps[0], sample).prev_sample
    assert torch.allclose(result, (sample - sigma_t * eps) / alpha, atol=1e-5)


def test_er_sde_first_step_follows_the_first_order_update():
    scheduler = make_scheduler("er_sde", SD15_CONFIG)
    scheduler = type(scheduler).from_config({**scheduler.config, "stochastic": False})
    scheduler.set_timesteps(4)
    sigma, sigma_next = float(scheduler.sigmas[0]), float(scheduler.sigmas[1])
    (alpha, sigma_t), (alpha_next, sigma_t_next) = _vp(sigma), _vp(sigma_next)
    lam, lam_next = sigma_t / alpha, sigma_t_next / alpha_next
    f = lambda x: x * (math.exp(x ** 0.3) + 10.0)
    ratio = f(lam_next) / f(lam)
    generator = torch.Generator().manual_seed(6)
    sample, eps = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    x0 = (sample - sigma_t * eps) / alpha
    expected = alpha_next / alpha * ratio * sample + alpha_next * (1 - ratio) * x0
    result = scheduler.step(eps, scheduler.timesteps[0], sample).prev_sample
    assert torch.allclose(result, expected, atol=1e-5)


def test_er_sde_noise_comes_from_the_generator():
    def run(seed):
        scheduler = make_scheduler("er_sde", SD15_CONFIG)
        scheduler.set_timesteps(4)
        sample = torch.ones(1, 4, 8, 8)
        generator = torch.Generator().manual_seed(seed)
        for t in scheduler.timesteps[:3]:
            sample = scheduler.step(torch.zeros(1, 4, 8, 8), t, sample, generator=generator).prev_sample
        return sample

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))

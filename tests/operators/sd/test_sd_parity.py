"""SD1.5 text-to-image through InvokeAI's nodes (main_model_loader, compel, noise, denoise_latents, l2i) against
diffusers' StableDiffusionPipeline with the same tiny weights, prompt, noise, scheduler and steps: the same image;
a deterministic but wrong loop (no classifier-free guidance) fails the comparison."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helpers import sd1_graph
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.binding import bind_model_fields

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]

PROMPT, SEED, STEPS, SIZE = "a red cat", 7, 4, 64


def engine_image(model_run, tiny_registry, cfg_scale: float = 7.5) -> np.ndarray:
    graph = sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE, denoise={"cfg_scale": cfg_scale})
    state = run_graph(Graph.from_dict(bind_model_fields(graph, tiny_registry)), model_run)
    [out] = state.outputs_of("decode")
    return np.asarray(Image.open(io.BytesIO(model_run.store.read("images", out.image.image_name))).convert("RGB"))


def pipeline_image(tiny_registry) -> np.ndarray:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from invokeai_provider.operators.sd.latents import generate_noise

    folder = tiny_registry.model_path(tiny_registry.find("tiny-sd1"))
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(STEPS)
    # InvokeAI noises zero latents to the first timestep (noise x sigma_0); diffusers scales the noise by
    # init_noise_sigma (sqrt(sigma_0^2 + 1) with this config's "leading" spacing): hand it the same start
    start = generate_noise("SD", SIZE, SIZE, SEED).float() * pipe.scheduler.sigmas[0] / pipe.scheduler.init_noise_sigma
    images = pipe(PROMPT, negative_prompt=None, num_inference_steps=STEPS, guidance_scale=7.5, height=SIZE, width=SIZE,
                  latents=start, output_type="np").images
    return (images[0] * 255).round().astype(np.uint8)


def test_text_to_image_gives_stable_diffusion_pipelines_image(model_run, tiny_registry) -> None:
    mine, theirs = engine_image(model_run, tiny_registry).astype(int), pipeline_image(tiny_registry).astype(int)
    difference = np.abs(mine - theirs).max()
    assert difference <= 1, f"the SD1.5 nodes' image differs from StableDiffusionPipeline's by {difference} levels"
    assert theirs.std() > 3
    unguided = engine_image(model_run, tiny_registry, cfg_scale=1.0).astype(int)
    assert np.abs(unguided - theirs).max() > 5  # without guidance: another image


def test_a_run_split_at_half_and_continued_from_its_latents_is_the_whole_run(model_run, tiny_registry) -> None:
    """InvokeAI's refiner handoff: denoise_latents given latents and no noise takes them as already noised and
    continues (with Euler, a run split at 0.5 equals the whole run); adding noise to them again would not."""
    from helpers import edge

    graph = sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE, denoise={"denoising_end": 0.5},
                      extra_nodes={"rest": {"type": "denoise_latents", "steps": STEPS, "cfg_scale": 7.5,
                                            "scheduler": "euler", "denoising_start": 0.5}},
                      extra_edges=[edge("model", "unet", "rest", "unet"),
                                   edge("pos", "conditioning", "rest", "positive_conditioning"),
                                   edge("neg", "conditioning", "rest", "negative_conditioning"),
                                   edge("denoise", "latents", "rest", "latents")])
    graph["edges"] = [e for e in graph["edges"] if e["destination"]["node_id"] != "decode"
                      or e["destination"]["field"] != "latents"] + [edge("rest", "latents", "decode", "latents")]
    state = run_graph(Graph.from_dict(bind_model_fields(graph, tiny_registry)), model_run)
    [out] = state.outputs_of("decode")
    split = np.asarray(Image.open(io.BytesIO(model_run.store.read("images", out.image.image_name))).convert("RGB"))
    whole = engine_image(model_run, tiny_registry)
    assert np.abs(split.astype(int) - whole.astype(int)).max() <= 1

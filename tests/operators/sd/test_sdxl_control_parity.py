"""SDXL control through InvokeAI's nodes (sdxl_model_loader, two sdxl_compel_prompt, noise, controlnet /
t2i_adapter / ip_adapter, denoise_latents, l2i) against diffusers' SDXL pipelines with the same tiny weights, prompt, noise,
control image, schedule and size conditioning.

The prompts are InvokeAI's defaults: the positive names the generation's size as its original and target size, the
empty negative keeps InvokeAI's 1024x1024 (diffusers' ``negative_original_size`` / ``negative_target_size``) and is
zeros, as SDXL's ``force_zeros_for_empty_prompt`` makes diffusers' too. InvokeAI starts from noise times the first
sigma; diffusers scales its latents by ``init_noise_sigma``, so it is handed ``noise * sigma_0 / init_noise_sigma``.
"""

from __future__ import annotations

import io
from typing import Any, Optional

import numpy as np
import pytest
from PIL import Image

from helpers import edge, put_image
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.binding import bind_model_fields

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]

PROMPT, SEED, STEPS, SIZE, CFG = "a red cat", 7, 4, 64, 7.5
TOLERANCE = 1  # 8-bit levels; see each test for what was measured


def hint() -> Image.Image:
    blocks = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8)))


def sdxl_graph(extra: Optional[dict[str, Any]] = None, extra_edges: Optional[list[dict[str, Any]]] = None
               ) -> dict[str, Any]:
    nodes = {
        "model": {"type": "sdxl_model_loader", "model": "tiny-sdxl"},
        "pos": {"type": "sdxl_compel_prompt", "prompt": PROMPT, "target_width": SIZE, "target_height": SIZE,
                "original_width": SIZE, "original_height": SIZE},
        "neg": {"type": "sdxl_compel_prompt", "prompt": ""},
        "noise": {"type": "noise", "seed": SEED, "width": SIZE, "height": SIZE},
        "denoise": {"type": "denoise_latents", "steps": STEPS, "cfg_scale": CFG, "scheduler": "euler"},
        "decode": {"type": "l2i"},
        **(extra or {})}
    edges = [edge("model", "clip", "pos", "clip"), edge("model", "clip2", "pos", "clip2"),
             edge("model", "clip", "neg", "clip"), edge("model", "clip2", "neg", "clip2"),
             edge("model", "unet", "denoise", "unet"), edge("pos", "conditioning", "denoise", "positive_conditioning"),
             edge("neg", "conditioning", "denoise", "negative_conditioning"), edge("noise", "noise", "denoise", "noise"),
             edge("denoise", "latents", "decode", "latents"), edge("model", "vae", "decode", "vae"),
             *(extra_edges or [])]
    return {"id": "xl", "nodes": {k: {"id": k, **v} for k, v in nodes.items()}, "edges": edges}


def graph_image(model_run, tiny_registry, graph: dict[str, Any]) -> np.ndarray:
    put_image(model_run, "hint.png", hint())
    [out] = run_graph(Graph.from_dict(bind_model_fields(graph, tiny_registry)), model_run).outputs_of("decode")
    data = model_run.store.read("images", out.image.image_name)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def pipeline_image(pipe: Any, control: bool = True, **kwargs: Any) -> np.ndarray:
    """The image of a diffusers SDXL pipeline (with the control image when ``control``), from the graph's noise, with
    InvokeAI's size conditioning."""
    from diffusers import EulerDiscreteScheduler

    from invokeai_provider.operators.sd.latents import generate_noise

    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(STEPS)
    start = generate_noise("SD", SIZE, SIZE, SEED).float() * pipe.scheduler.sigmas[0] / pipe.scheduler.init_noise_sigma
    if control:
        kwargs["image"] = hint()
    result = pipe(PROMPT, negative_prompt=None, num_inference_steps=STEPS, guidance_scale=CFG,
                  height=SIZE, width=SIZE, latents=start, original_size=(SIZE, SIZE), target_size=(SIZE, SIZE),
                  negative_original_size=(1024, 1024), negative_target_size=(1024, 1024), output_type="np", **kwargs)
    return (result.images[0] * 255).round().astype(int)


def test_an_sdxl_t2i_adapter_gives_the_xl_adapter_pipelines_image(model_run, tiny_registry) -> None:
    """Measured: 0 levels apart (tolerance 1); the plain image is 51 levels away, the pipeline at weight 0.6
    instead of 0.7 15."""
    from diffusers import StableDiffusionXLAdapterPipeline, T2IAdapter

    from invokeai_provider.models.model_manager.probe import probe
    from invokeai_provider.models.testing.tiny_install import install_tiny

    adapter = install_tiny(tiny_registry, "t2i_adapter", "sdxl").config
    folder = tiny_registry.model_path(adapter)
    found = probe(folder)
    assert (found.type.value, found.base.value) == ("t2i_adapter", "sdxl")
    nodes = {"adapter": {"type": "t2i_adapter", "image": {"image_name": "hint.png"},
                         "t2i_adapter_model": adapter.identifier(), "weight": 0.7}}
    mine = graph_image(model_run, tiny_registry,
                       sdxl_graph(nodes, [edge("adapter", "t2i_adapter", "denoise", "t2i_adapter")]))
    main = tiny_registry.model_path(tiny_registry.find("tiny-sdxl"))
    pipe = StableDiffusionXLAdapterPipeline.from_pretrained(main, adapter=T2IAdapter.from_pretrained(folder),
                                                            local_files_only=True)
    theirs = pipeline_image(pipe, adapter_conditioning_scale=0.7)
    difference = np.abs(mine - theirs).max()
    assert difference <= TOLERANCE, f"the SDXL T2I-Adapter graph differs from the pipeline by {difference} levels"
    plain = graph_image(model_run, tiny_registry, sdxl_graph())
    assert np.abs(plain - theirs).max() > 5  # the adapter steers it


def test_an_sdxl_controlnet_gives_the_xl_controlnet_pipelines_image(model_run, tiny_registry, tmp_path) -> None:
    """Measured: 1 level apart at most (tolerance 1); the plain image is 84 levels away, the pipeline at scale
    0.6 instead of 0.8 18. The same ControlNet written as one file (lllyasviel's keys, installed with
    its folder as ``--config``) gives the folder's image exactly."""
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.testing.tiny_install import install_tiny
    from invokeai_provider.models.testing.tiny_sd_controlnet import write_controlnet_file

    controlnet = install_tiny(tiny_registry, "controlnet", "sdxl", name="tiny-sdxl-controlnet").config

    def graph(model: dict[str, Any]) -> dict[str, Any]:
        nodes = {"control": {"type": "controlnet", "image": {"image_name": "hint.png"}, "control_model": model,
                             "control_weight": 0.8}}
        return sdxl_graph(nodes, [edge("control", "control", "denoise", "control")])

    mine = graph_image(model_run, tiny_registry, graph(controlnet.identifier()))
    folder = tiny_registry.model_path(controlnet)
    model = ControlNetModel.from_pretrained(folder)
    main = tiny_registry.model_path(tiny_registry.find("tiny-sdxl"))
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(main, controlnet=model, local_files_only=True)
    theirs = pipeline_image(pipe, controlnet_conditioning_scale=0.8)
    difference = np.abs(mine - theirs).max()
    assert difference <= TOLERANCE, f"the SDXL ControlNet graph differs from the pipeline by {difference} levels"
    assert np.abs(graph_image(model_run, tiny_registry, sdxl_graph()) - theirs).max() > 5  # the ControlNet steers it

    path = write_controlnet_file(model, tmp_path / "controlnet-sdxl-tiny.safetensors")
    single = install_model(tiny_registry, str(path), name="tiny-sdxl-controlnet-file", inplace=True,
                           config_path=str(folder))  # tiny heads are 16 wide, not SDXL's 64: the folder's config
    assert (single.type.value, single.format.value, single.base.value) == ("controlnet", "checkpoint", "sdxl")
    assert np.array_equal(graph_image(model_run, tiny_registry, graph(single.identifier())), mine)


def test_an_sdxl_ip_adapter_gives_diffusers_ip_adapter_image(model_run, tiny_registry) -> None:
    """The tiny SDXL IP-Adapter (InvokeAI's folder, its ViT-G-shaped encoder found by the name the folder gives)
    against StableDiffusionXLPipeline with diffusers' own IP-Adapter loader: within TOLERANCE."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPImageProcessor

    from invokeai_provider.models.image_encoders.clip_vision import load_clip_vision
    from invokeai_provider.models.stable_diffusion.ip_adapter import read_state
    from invokeai_provider.models.testing.tiny_install import install_tiny

    install_tiny(tiny_registry, "clip_vision", "sdxl")
    adapter = install_tiny(tiny_registry, "ip_adapter", "sdxl", name="tiny-sdxl-ip_adapter").config
    reference = Image.fromarray(np.kron(np.random.default_rng(9).integers(0, 256, (6, 6, 3), dtype=np.uint8),
                                        np.ones((16, 16, 1), np.uint8)))
    put_image(model_run, "ref.png", reference)
    mine = graph_image(model_run, tiny_registry, sdxl_graph(
        {"ip": {"type": "ip_adapter", "image": {"image_name": "ref.png"}, "ip_adapter_model": adapter.identifier(),
                "weight": 0.8}}, [edge("ip", "ip_adapter", "denoise", "ip_adapter")]))
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_registry.model_path(tiny_registry.find("tiny-sdxl")),
                                                     local_files_only=True)
    pipe.image_encoder = load_clip_vision(
        tiny_registry.model_path(tiny_registry.find("ip_adapter_sdxl_image_encoder")), torch.float32)
    pipe.feature_extractor = CLIPImageProcessor()
    pipe.load_ip_adapter(read_state(tiny_registry.model_path(adapter)), subfolder="", weight_name="",
                         image_encoder_folder=None)
    pipe.set_ip_adapter_scale(0.8)
    theirs = pipeline_image(pipe, control=False, ip_adapter_image=reference)
    assert np.abs(mine - theirs).max() <= TOLERANCE
    plain = graph_image(model_run, tiny_registry, sdxl_graph())
    assert np.abs(plain - theirs).max() > 5

"""SD ControlNets and T2I-Adapters through InvokeAI's nodes (controlnet / t2i_adapter -> denoise_latents): the
images of diffusers' StableDiffusionControlNetPipeline and StableDiffusionAdapterPipeline with the same tiny weights,
prompt, noise, control image and schedule; control modes, step ranges and several ControlNets act as InvokeAI's do;
probing and install of the tiny models."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import edge, put_image, sd1_graph
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.binding import bind_model_fields

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]

PROMPT, SEED, STEPS, SIZE = "a red cat", 7, 4, 64


@pytest.fixture(scope="module")
def controlnet(tiny_registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from invokeai_provider.models.testing.tiny_install import install_tiny

    return install_tiny(tiny_registry, "controlnet", "sd-1", name="tiny-sd1-controlnet").config.identifier()


def hint() -> Image.Image:
    blocks = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8)))


def control_graph(controlnet: dict[str, Any], *controls: dict[str, Any]) -> dict[str, Any]:
    nodes = {f"control{i}": {"type": "controlnet", "image": {"image_name": "hint.png"}, "control_model": controlnet,
                             **settings} for i, settings in enumerate(controls)}
    collect = {"collect": {"type": "collect"}} if len(controls) > 1 else {}
    edges = ([edge(n, "control", "collect", "item") for n in nodes] + [edge("collect", "collection", "denoise",
                                                                            "control")]
             if collect else [edge(n, "control", "denoise", "control") for n in nodes])
    return sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE, extra_nodes={**nodes, **collect},
                     extra_edges=edges)


def image(model_run, tiny_registry, graph: dict[str, Any]) -> np.ndarray:
    put_image(model_run, "hint.png", hint())
    [out] = run_graph(Graph.from_dict(bind_model_fields(graph, tiny_registry)), model_run).outputs_of("decode")
    data = model_run.store.read("images", out.image.image_name)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_a_controlnet_gives_the_controlnet_pipelines_image(model_run, tiny_registry, controlnet) -> None:
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionControlNetPipeline

    from invokeai_provider.operators.sd.latents import generate_noise

    mine = image(model_run, tiny_registry, control_graph(controlnet, {"control_weight": 0.8}))
    folder = tiny_registry.model_path(tiny_registry.find("tiny-sd1"))
    model = ControlNetModel.from_pretrained(tiny_registry.model_path(tiny_registry.get(controlnet["key"])))
    pipe = StableDiffusionControlNetPipeline.from_pretrained(folder, controlnet=model, local_files_only=True,
                                                             safety_checker=None, feature_extractor=None,
                                                             requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(STEPS)
    # InvokeAI noises zero latents to the first timestep; diffusers scales by init_noise_sigma: the same start
    start = generate_noise("SD", SIZE, SIZE, SEED).float() * pipe.scheduler.sigmas[0] / pipe.scheduler.init_noise_sigma
    reference = pipe(PROMPT, image=hint(), negative_prompt=None, num_inference_steps=STEPS, guidance_scale=7.5,
                     controlnet_conditioning_scale=0.8, height=SIZE, width=SIZE, latents=start,
                     output_type="np").images[0]
    theirs = (reference * 255).round().astype(int)
    assert np.abs(mine - theirs).max() <= 1
    plain = image(model_run, tiny_registry, sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE))
    assert np.abs(plain - theirs).max() > 5  # the ControlNet steers it


def test_modes_ranges_and_several_controlnets(model_run, tiny_registry, controlnet) -> None:
    def run(*controls: dict[str, Any]) -> np.ndarray:
        return image(model_run, tiny_registry, control_graph(controlnet, *controls))

    balanced = run({"control_weight": 0.8})
    for mode in ("more_prompt", "more_control", "unbalanced"):
        assert np.abs(run({"control_weight": 0.8, "control_mode": mode}) - balanced).max() > 3, mode
    late = run({"control_weight": 0.8, "begin_step_percent": 0.75})
    plain = run({"control_weight": 0.0})
    assert 0 < np.abs(late - plain).max() < np.abs(balanced - plain).max()  # one step of four moves it less
    halves = run({"control_weight": 0.4}, {"control_weight": 0.4})
    assert np.abs(halves - balanced).max() <= 1  # residuals add up: two at 0.4 are one at 0.8


def test_controlnets_are_checked_against_the_unet(model_run, tiny_registry, controlnet) -> None:
    from invokeai_provider.models.model_manager.probe import probe

    config = tiny_registry.get(controlnet["key"])
    found = probe(tiny_registry.model_path(config))
    assert (found.type.value, found.format.value, found.base.value) == ("controlnet", "diffusers", "sd-1")
    sdxl = control_graph(controlnet, {"control_weight": [0.5, 0.5]})
    with pytest.raises(NodeExecutionError, match="field control: a list of 2 control weights for 4 steps"):
        image(model_run, tiny_registry, sdxl)


def test_an_sdxl_controlnet_steers_an_sdxl_graph(model_run, tiny_registry) -> None:
    from invokeai_provider.models.testing.tiny_install import install_tiny

    xl_controlnet = install_tiny(tiny_registry, "controlnet", "sdxl", name="tiny-sdxl-controlnet").config.identifier()
    nodes = {
        "model": {"type": "sdxl_model_loader", "model": "tiny-sdxl"},
        "pos": {"type": "sdxl_compel_prompt", "prompt": "a cat", "target_width": SIZE, "target_height": SIZE,
                "original_width": SIZE, "original_height": SIZE},
        "neg": {"type": "sdxl_compel_prompt", "prompt": ""},
        "noise": {"type": "noise", "seed": 1, "width": SIZE, "height": SIZE},
        "denoise": {"type": "denoise_latents", "steps": 2},
        "decode": {"type": "l2i"}}
    edges = [edge("model", "clip", "pos", "clip"), edge("model", "clip2", "pos", "clip2"),
             edge("model", "clip", "neg", "clip"), edge("model", "clip2", "neg", "clip2"),
             edge("model", "unet", "denoise", "unet"), edge("pos", "conditioning", "denoise", "positive_conditioning"),
             edge("neg", "conditioning", "denoise", "negative_conditioning"), edge("noise", "noise", "denoise", "noise"),
             edge("denoise", "latents", "decode", "latents"), edge("model", "vae", "decode", "vae")]
    plain = image(model_run, tiny_registry, {"id": "xl", "nodes": {k: {"id": k, **v} for k, v in nodes.items()},
                                             "edges": edges})
    nodes["control"] = {"type": "controlnet", "image": {"image_name": "hint.png"}, "control_model": xl_controlnet}
    edges.append(edge("control", "control", "denoise", "control"))
    steered = image(model_run, tiny_registry, {"id": "xl", "nodes": {k: {"id": k, **v} for k, v in nodes.items()},
                                               "edges": edges})
    assert np.abs(steered - plain).max() > 3
    sd1_controlnet = install_tiny(tiny_registry, "controlnet", "sd-1", name="tiny-sd1-controlnet").config
    nodes["control"]["control_model"] = sd1_controlnet.identifier()
    with pytest.raises(NodeExecutionError, match="field control"):  # an SD1 ControlNet on the SDXL UNet
        image(model_run, tiny_registry, {"id": "xl", "nodes": {k: {"id": k, **v} for k, v in nodes.items()},
                                         "edges": edges})


def test_a_t2i_adapter_gives_the_adapter_pipelines_image(model_run, tiny_registry) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionAdapterPipeline, T2IAdapter

    from invokeai_provider.models.testing.tiny_install import install_tiny
    from invokeai_provider.operators.sd.latents import generate_noise

    adapter = install_tiny(tiny_registry, "t2i_adapter", "sd-1", name="tiny-sd1-t2i_adapter").config.identifier()
    graph = sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE,
                      extra_nodes={"adapter": {"type": "t2i_adapter", "image": {"image_name": "hint.png"},
                                               "t2i_adapter_model": adapter, "weight": 0.7}},
                      extra_edges=[edge("adapter", "t2i_adapter", "denoise", "t2i_adapter")])
    mine = image(model_run, tiny_registry, graph)
    folder = tiny_registry.model_path(tiny_registry.find("tiny-sd1"))
    model = T2IAdapter.from_pretrained(tiny_registry.model_path(tiny_registry.get(adapter["key"])))
    pipe = StableDiffusionAdapterPipeline.from_pretrained(folder, adapter=model, local_files_only=True,
                                                          safety_checker=None, feature_extractor=None,
                                                          requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(STEPS)
    start = generate_noise("SD", SIZE, SIZE, SEED).float() * pipe.scheduler.sigmas[0] / pipe.scheduler.init_noise_sigma
    reference = pipe(PROMPT, image=hint(), negative_prompt=None, num_inference_steps=STEPS, guidance_scale=7.5,
                     adapter_conditioning_scale=0.7, height=SIZE, width=SIZE, latents=start,
                     output_type="np").images[0]
    theirs = (reference * 255).round().astype(int)
    assert np.abs(mine - theirs).max() <= 1
    plain = image(model_run, tiny_registry, sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE))
    assert np.abs(plain - theirs).max() > 5  # the adapter steers it


def test_an_old_canny_image_processor_graph_feeds_the_controlnet(model_run, tiny_registry, controlnet) -> None:
    """Graphs from before InvokeAI removed its ``*_image_processor`` nodes run: the old Canny node (its old field
    names) feeds the ControlNet as the new ``canny_edge_detection`` does."""
    def graph(processor: dict[str, Any]) -> dict[str, Any]:
        document = control_graph(controlnet, {"control_weight": 0.8})
        document["nodes"]["edges"] = {"id": "edges", "image": {"image_name": "hint.png"}, **processor}
        document["nodes"]["control0"].pop("image")
        document["edges"].append(edge("edges", "image", "control0", "image"))
        return document

    old = image(model_run, tiny_registry, graph({"type": "canny_image_processor", "low_threshold": 50,
                                                 "high_threshold": 150}))
    new = image(model_run, tiny_registry, graph({"type": "canny_edge_detection", "low_threshold": 50,
                                                 "high_threshold": 150}))
    assert np.array_equal(old, new)
    plain = image(model_run, tiny_registry, sd1_graph("tiny-sd1", prompt=PROMPT, seed=SEED, steps=STEPS, size=SIZE))
    assert np.abs(old - plain).max() > 3

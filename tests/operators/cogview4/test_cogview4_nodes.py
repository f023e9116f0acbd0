"""The CogView4 nodes on a tiny CogView4 model: cogview4_model_loader, cogview4_text_encoder, cogview4_denoise and
the VAE nodes. A text-to-image graph gives CogView4Pipeline's image, an image-to-image graph gives the pipeline's
image when the pipeline starts where InvokeAI's denoising_start does, inpainting keeps the kept region, and bad
input fails naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import edge, graph, node, put_image, stored_image
from invokeai_provider.core.context import RunContext
from invokeai_provider.core.taxonomy import SubModelType
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_cogview4 import SCHEDULER, build_cogview4_model
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT, NEGATIVE = "a lighthouse in a storm, oil painting", "blurry"
WIDTH, HEIGHT, STEPS, SEED, CFG = 64, 96, 4, 21, 3.5  # 4 steps: InvokeAI's timesteps x 1000 are whole numbers


@pytest.fixture(scope="module")
def cogview4(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict[str, Any]]:
    root = tmp_path_factory.mktemp("cogview4-root")
    registry = ModelRegistry(root.as_uri())
    config = install_model(registry, str(build_cogview4_model(root / "tiny-cogview4", seed=9)), name="tiny-cogview4",
                           inplace=True)
    return ModelManager(registry, device="cpu"), config.identifier()


def run_context(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="cogview4", run_id="r1"),
                      services={"models": manager})


def t2i_graph(model: dict[str, Any], **denoise: Any) -> dict[str, Any]:
    """InvokeAI's CogView4 text-to-image graph: loader, positive and negative prompts, denoise, l2i."""
    fields = dict(width=WIDTH, height=HEIGHT, steps=STEPS, seed=SEED, cfg_scale=CFG) | denoise
    return graph(
        node("load", "cogview4_model_loader", model=model), node("pos", "cogview4_text_encoder", prompt=PROMPT),
        node("neg", "cogview4_text_encoder", prompt=NEGATIVE), node("denoise", "cogview4_denoise", **fields),
        node("decode", "cogview4_l2i"),
        edges=[edge("load", "glm_encoder", "pos", "glm_encoder"), edge("load", "glm_encoder", "neg", "glm_encoder"),
               edge("load", "transformer", "denoise", "transformer"),
               edge("pos", "conditioning", "denoise", "positive_conditioning"),
               edge("neg", "conditioning", "denoise", "negative_conditioning"),
               edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")])


def pipeline(manager: ModelManager, identifier: dict[str, Any], **scheduler: Any) -> Any:
    from diffusers import CogView4Pipeline, FlowMatchEulerDiscreteScheduler

    config = manager.get_config(identifier)
    parts = {}
    for name in ("tokenizer", "text_encoder", "transformer", "vae"):
        with manager.load(config.identifier(), SubModelType(name)) as model:
            parts[name] = model
    return CogView4Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(**(SCHEDULER | scheduler)), **parts)


def invokeai_schedule(steps: int, start: float = 0.0) -> dict[str, Any]:
    """The pipeline arguments that make it step along InvokeAI's schedule: its unshifted timesteps (x 1000, which
    the pipeline truncates to integers, so they must be whole) and the same values as sigmas, which the scheduler
    shifts with the pipeline's mu (the same formula and constants InvokeAI uses)."""
    from invokeai_provider.models.cogview4 import sampling

    timesteps = sampling.timesteps(steps, start)[:-1]
    whole = [round(t * 1000) for t in timesteps]
    assert np.array_equal(np.float32(whole), np.float32(timesteps) * np.float32(1000))
    return {"timesteps": whole, "sigmas": timesteps}


def reference_image(pipe: Any, latents: torch.Tensor, steps: int, start: float = 0.0, **call: Any) -> np.ndarray:
    image = pipe(PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, latents=latents,
                 num_inference_steps=steps, output_type="np",
                 **(dict(guidance_scale=CFG) | invokeai_schedule(steps, start) | call)).images[0]
    return np.floor(image * 255).astype(np.int16)  # InvokeAI's conversion truncates


def pixels(run: RunContext, output: Any) -> np.ndarray:
    return np.asarray(stored_image(run, output).convert("RGB")).astype(np.int16)


def test_the_cogview4_nodes_give_cogview4_pipelines_image(tmp_path: Path,
                                                          cogview4: tuple[ModelManager, dict[str, Any]]) -> None:
    """Same tiny weights, prompts, seed, size, steps and CFG: the graph's image is CogView4Pipeline's within 1 level
    (1 measured: the denoised latents agree within 1e-6, and a few pixels land across a level boundary). Aligned: the
    pipeline gets InvokeAI's noise (float16 draw of the seed) as ``latents`` and InvokeAI's timesteps and sigmas
    (`invokeai_schedule`; its default schedule spaces integer timesteps from 1000 to 1, without a 0). Teeth:
    without CFG, with diffusers' default schedule, or without the resolution shift, the pipeline's image moves past
    the tolerance (8, 16 and 6 levels measured)."""
    from invokeai_provider.models.cogview4 import sampling

    manager, identifier = cogview4
    run = run_context(tmp_path, manager)
    events: list[dict[str, Any]] = []
    run.on_progress = events.append
    state = run_graph(Graph.from_dict(t2i_graph(identifier)), run)
    [decoded] = state.outputs_of("decode")
    assert (decoded.width, decoded.height) == (WIDTH, HEIGHT)
    mine = pixels(run, decoded)
    assert [e["step"] for e in events if e.get("step")] == [1, 2, 3, 4]

    pipe = pipeline(manager, identifier)
    noise = sampling.noise(SEED, HEIGHT, WIDTH)
    theirs = reference_image(pipe, noise, STEPS)
    difference = np.abs(mine - theirs).max()
    assert difference <= 1, f"the CogView4 nodes' image differs from CogView4Pipeline's by {difference} levels"
    assert mine.std() > 3

    no_cfg = reference_image(pipe, noise, STEPS, guidance_scale=1.0)
    default_schedule = reference_image(pipe, noise, STEPS, timesteps=None, sigmas=None)
    unshifted = reference_image(pipeline(manager, identifier, use_dynamic_shifting=False), noise, STEPS)
    for name, other in (("no CFG", no_cfg), ("diffusers' default schedule", default_schedule),
                        ("no shift", unshifted)):
        assert np.abs(mine - other).max() > 4, f"{name} gives the same image: the comparison has no teeth"


def test_image_to_image_starts_where_the_pipeline_does_from_the_noised_image(
        tmp_path: Path, cogview4: tuple[ModelManager, dict[str, Any]]) -> None:
    """cogview4_i2l then cogview4_denoise with denoising_start 0.4: the pipeline, given InvokeAI's clipped schedule
    (0.6, 0.5, 0.25) and the image's latents noised to its first sigma as ``latents``, gives the same image; a
    start of 0 (the noise alone) gives another. 0 levels measured."""
    from safetensors.torch import load

    from invokeai_provider.models.cogview4 import sampling

    manager, identifier = cogview4
    run = run_context(tmp_path, manager)
    rng = np.random.default_rng(3)
    source = put_image(run, "source.png", rng.integers(0, 255, (HEIGHT, WIDTH, 3)))
    g = t2i_graph(identifier, denoising_start=0.4)
    g["nodes"]["encode"] = node("encode", "cogview4_i2l", image=source)
    g["edges"] += [edge("load", "vae", "encode", "vae"), edge("encode", "latents", "denoise", "latents")]
    state = run_graph(Graph.from_dict(g), run)
    [encoded] = state.outputs_of("encode")
    assert (encoded.width, encoded.height) == (WIDTH, HEIGHT)
    init = load(run.store.read("tensors", f"{encoded.latents.latents_name}.safetensors"))["tensor"]
    mine = pixels(run, state.outputs_of("decode")[0])

    timesteps, sigmas = sampling.schedule(STEPS, sampling.image_seq_len(HEIGHT, WIDTH, 2), 0.4)
    assert timesteps == pytest.approx([0.6, 0.5, 0.25, 0.0])
    noise = sampling.noise(SEED, HEIGHT, WIDTH)
    start = sigmas[0] * noise + (1 - sigmas[0]) * init
    theirs = reference_image(pipeline(manager, identifier), start, STEPS, start=0.4)
    difference = np.abs(mine - theirs).max()
    assert difference <= 1, f"image-to-image differs from the pipeline's by {difference} levels"
    from_noise = reference_image(pipeline(manager, identifier), noise, STEPS)
    assert np.abs(mine - from_noise).max() > 8


def test_inpainting_keeps_the_preserved_region_as_the_images_latents(
        tmp_path: Path, cogview4: tuple[ModelManager, dict[str, Any]]) -> None:
    from safetensors.torch import load, save

    manager, identifier = cogview4
    run = run_context(tmp_path, manager)
    init = torch.randn(1, 16, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(2))
    run.store.write("tensors", "init.safetensors", save({"tensor": init}))
    mask = torch.ones(1, HEIGHT, WIDTH)
    mask[:, :HEIGHT // 2] = 0.0  # the top half is regenerated, the bottom half preserved
    run.store.write("tensors", "mask.safetensors", save({"tensor": mask}))
    g = t2i_graph(identifier, latents={"latents_name": "init"}, denoise_mask={"mask_name": "mask"},
                  denoising_start=0.25)
    state = run_graph(Graph.from_dict(g), run)
    out = load(run.store.read("tensors", f"{state.outputs_of('denoise')[0].latents.latents_name}.safetensors"))
    latents = out["tensor"]
    kept, changed = slice(HEIGHT // 16 + 1, None), slice(0, HEIGHT // 16 - 1)
    assert torch.allclose(latents[..., kept, :], init[..., kept, :], atol=1e-6)
    assert (latents[..., changed, :] - init[..., changed, :]).abs().max() > 0.05


def test_the_loader_splits_the_main_and_refuses_another_base(tmp_path: Path,
                                                              cogview4: tuple[ModelManager, dict[str, Any]],
                                                              tiny_registry: Any) -> None:
    manager, identifier = cogview4
    state = run_graph(Graph.from_dict(graph(node("load", "cogview4_model_loader", model=identifier))),
                      run_context(tmp_path, manager))
    [out] = state.outputs_of("load")
    parts = {"transformer": out.transformer.transformer, "tokenizer": out.glm_encoder.tokenizer,
             "text_encoder": out.glm_encoder.text_encoder, "vae": out.vae.vae}
    assert {k: v.submodel_type.value for k, v in parts.items()} == {k: k for k in parts}
    assert {v.key for v in parts.values()} == {identifier["key"]} and out.transformer.loras == []

    sd = tiny_registry.find("tiny-sd1").identifier()
    with pytest.raises(NodeExecutionError, match="node load .*field model.*of base cogview4") as caught:
        run_graph(Graph.from_dict(graph(node("load", "cogview4_model_loader", model=sd))),
                  run_context(tmp_path, ModelManager(tiny_registry)))
    assert caught.value.field == "model"


@pytest.mark.parametrize("fields, field, message", [
    ({"cfg_scale": [1.0, 2.0]}, "cfg_scale", "a list of 2 values for 4 steps"),
    ({"denoising_start": 0.5}, "denoising_start", "should be 0 when initial latents are not provided"),
    ({"denoising_start": 0.8, "denoising_end": 0.5}, "denoising_start", "after denoising_end"),
    ({"noise": {"latents_name": "small"}}, "noise", r"shape \(1, 16, 4, 4\) does not fit a 64x96 image"),
    ({"denoise_mask": {"mask_name": "small"}}, "denoise_mask", "inpainting needs the image's latents"),
])
def test_bad_denoise_input_is_refused_naming_the_field(tmp_path: Path, cogview4: tuple[ModelManager, dict[str, Any]],
                                                       fields: dict[str, Any], field: str, message: str) -> None:
    from safetensors.torch import save

    manager, identifier = cogview4
    run = run_context(tmp_path, manager)
    run.store.write("tensors", "small.safetensors", save({"tensor": torch.zeros(1, 16, 4, 4)}))
    with pytest.raises(NodeExecutionError, match=f"node denoise .*field {field}: .*{message}") as caught:
        run_graph(Graph.from_dict(t2i_graph(identifier, **fields)), run)
    assert caught.value.field == field
    assert not list((tmp_path / "artifacts").rglob("*.png"))  # refused before anything was decoded


def test_a_flux_conditioning_is_refused_by_the_denoise_node(tmp_path: Path,
                                                            cogview4: tuple[ModelManager, dict[str, Any]]) -> None:
    manager, identifier = cogview4
    run = run_context(tmp_path, manager)
    from safetensors.torch import save

    g = t2i_graph(identifier)
    run.store.write("conditioning", "flux.safetensors", save({"t5_embeds": torch.zeros(1, 4, 8),
                                                             "clip_embeds": torch.zeros(1, 8)}))  # FLUX's keys
    g["nodes"]["denoise"]["negative_conditioning"] = {"conditioning_name": "flux"}
    g["edges"] = [e for e in g["edges"] if e["destination"]["field"] != "negative_conditioning"]
    with pytest.raises(NodeExecutionError, match="field negative_conditioning: conditioning 'flux' is not a "
                                                 "CogView4"):
        run_graph(Graph.from_dict(g), run)

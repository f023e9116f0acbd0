"""The Z-Image nodes on a tiny ZImagePipeline folder: the loader's parts, the prompt's embeddings, text-to-image and
image-to-image against diffusers' ZImagePipeline and ZImageImg2ImgPipeline, inpainting, the samplers, the seed
variance enhancer, the metadata node, the VAE nodes and errors naming their field.

Parity method: the same tiny weights, prompt, seed, size and steps; the pipeline gets InvokeAI's noise as ``latents``
(float32 from the seed on the CPU, in the same ``(1, 16, h/8, w/8)`` layout) and a scheduler with the
resolution-dependent shift InvokeAI always applies (``use_dynamic_shifting``: the same ``exp(mu)`` shift of the same
``1 - i/steps`` sigmas), since InvokeAI ignores the model's static shift 3. The pipeline's ``guidance_scale`` is InvokeAI's
minus one (it writes CFG as ``cond + g * (cond - uncond)``). Tolerance: 1 level of 255 (the pipeline rounds, InvokeAI
truncates); measured 1.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from z_image_helpers import PROMPT, dynamic_scheduler, image_of, link, pipeline_image, pipeline_parts, t2i_graph

from invokeai_provider.core.context import RunContext
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def put_tensor(run: RunContext, name: str, tensor: torch.Tensor) -> None:
    from safetensors.torch import save

    run.store.write("tensors", f"{name}.safetensors", save({"tensor": tensor.contiguous()}))


def stored(run: RunContext, kind: str, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(run.store.read(kind, f"{name}.safetensors"))


def test_the_loader_takes_the_parts_from_a_pipeline_folder(z_run: RunContext, z_image: Any) -> None:
    _, identifier = z_image
    state = run_graph(Graph.from_dict({"id": "g", "nodes": {"load": {"id": "load", "type": "z_image_model_loader",
                                                                     "model": identifier}}, "edges": []}), z_run)
    [out] = state.outputs_of("load")
    parts = {"transformer": out.transformer.transformer, "tokenizer": out.qwen3_encoder.tokenizer,
             "text_encoder": out.qwen3_encoder.text_encoder, "vae": out.vae.vae}
    assert {k: v.submodel_type.value for k, v in parts.items()} == {k: k for k in parts}
    assert {v.key for v in parts.values()} == {identifier["key"]}


def test_the_loader_refuses_another_base_naming_the_field(z_run: RunContext, z_image: Any, tiny_registry) -> None:
    from invokeai_provider.errors import NodeExecutionError
    from invokeai_provider.models.model_manager.manager import ModelManager

    sd = tiny_registry.find("tiny-sd1").identifier()
    run = RunContext(store=z_run.store, services={"models": ModelManager(tiny_registry)})
    with pytest.raises(NodeExecutionError, match="node load .*field model") as caught:
        run_graph(Graph.from_dict({"id": "g", "nodes": {"load": {"id": "load", "type": "z_image_model_loader",
                                                                 "model": sd}}, "edges": []}), run)
    assert caught.value.field == "model"


def test_the_text_encoder_stores_what_the_pipeline_encodes(z_run: RunContext, z_image: Any) -> None:
    from diffusers import ZImagePipeline

    manager, identifier = z_image
    graph = t2i_graph(identifier)
    graph["nodes"] = {k: v for k, v in graph["nodes"].items() if k in ("load", "prompt")}
    graph["edges"] = graph["edges"][:1]
    [out] = run_graph(Graph.from_dict(graph), z_run).outputs_of("prompt")
    embeds = stored(z_run, "conditioning", out.conditioning.conditioning_name)["prompt_embeds"]
    parts = pipeline_parts(manager, identifier)
    pipe = ZImagePipeline(scheduler=dynamic_scheduler(), **parts)
    with torch.no_grad():
        [expected], _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    assert embeds.shape == expected.shape and embeds.shape[1] == 2560 and 10 < embeds.shape[0] < 512
    assert torch.allclose(embeds, expected.float(), atol=1e-5)


def test_text_to_image_gives_the_pipelines_image(run_t2i: Callable[..., np.ndarray], z_run: RunContext,
                                                 z_image: Any) -> None:
    from diffusers import ZImagePipeline

    from invokeai_provider.models.z_image import sampling

    events: list[dict[str, Any]] = []
    z_run.on_progress = events.append
    mine = run_t2i(seed=7)
    assert [e["step"] for e in events if e.get("step")] == [1, 2, 3]
    manager, identifier = z_image
    pipe = ZImagePipeline(scheduler=dynamic_scheduler(), **pipeline_parts(manager, identifier))
    theirs = pipeline_image(pipe(PROMPT, height=64, width=128, num_inference_steps=3, guidance_scale=0.0,
                                 latents=sampling.noise(7, 64, 128), output_type="np").images)
    difference = np.abs(mine - theirs).max()
    print(f"measured: {difference} levels")
    assert difference <= 1, f"the Z-Image nodes' image differs from ZImagePipeline's by {difference} levels"
    assert mine.std() > 3
    # teeth: the model's static shift (what the pipeline would take by default) moves the image past the tolerance
    static = ZImagePipeline(**{**pipeline_parts(manager, identifier), "scheduler": dynamic_scheduler().__class__(
        num_train_timesteps=1000, shift=3.0)})
    shifted = pipeline_image(static(PROMPT, height=64, width=128, num_inference_steps=3, guidance_scale=0.0,
                                    latents=sampling.noise(7, 64, 128), output_type="np").images)
    print(f"teeth: {np.abs(mine - shifted).max()} levels")
    assert np.abs(mine - shifted).max() > 4


def test_cfg_with_a_negative_prompt_gives_the_pipelines_image(run_t2i: Callable[..., np.ndarray],
                                                              z_image: Any) -> None:
    from diffusers import ZImagePipeline

    from invokeai_provider.models.z_image import sampling

    mine = run_t2i(negative="blurry, dark", guidance_scale=2.5, seed=5)
    manager, identifier = z_image
    pipe = ZImagePipeline(scheduler=dynamic_scheduler(), **pipeline_parts(manager, identifier))
    theirs = pipeline_image(pipe(PROMPT, negative_prompt="blurry, dark", height=64, width=128, num_inference_steps=3,
                                 guidance_scale=1.5, latents=sampling.noise(5, 64, 128), output_type="np").images)
    print(f"measured: {np.abs(mine - theirs).max()} levels")
    assert np.abs(mine - theirs).max() <= 1
    without = run_t2i(negative="blurry, dark", guidance_scale=1.0, seed=5)  # 1.0: no CFG, the negative unread
    print(f"teeth: {np.abs(mine - without).max()} levels")
    assert np.abs(mine - without).max() > 4
    assert np.array_equal(without, run_t2i(seed=5))


def test_image_to_image_gives_the_img2img_pipelines_image(z_run: RunContext, z_image: Any) -> None:
    """denoising_start 0.5 of 4 steps is strength 0.5: both start at the third sigma with the image's latents noised
    to it by the same noise (the pipeline draws it from a generator of the same seed) and run the last two steps. The
    pipeline is handed the latents themselves (its image processor told that 16 channels are latents), so no VAE
    sample is drawn from the generator before the noise."""
    from diffusers import ZImageImg2ImgPipeline

    manager, identifier = z_image
    init = torch.randn(1, 16, 8, 16, generator=torch.Generator().manual_seed(2))
    put_tensor(z_run, "init", init)
    graph = t2i_graph(identifier, steps=4, seed=9, denoising_start=0.5, latents={"latents_name": "init"})
    mine = image_of(z_run, run_graph(Graph.from_dict(graph), z_run))
    from diffusers.image_processor import VaeImageProcessor

    pipe = ZImageImg2ImgPipeline(scheduler=dynamic_scheduler(), **pipeline_parts(manager, identifier))
    pipe.image_processor = VaeImageProcessor(vae_scale_factor=16, vae_latent_channels=16)  # takes latents as given
    theirs = pipeline_image(pipe(PROMPT, image=init, strength=0.5, height=64, width=128, num_inference_steps=4,
                                 guidance_scale=0.0, generator=torch.Generator().manual_seed(9),
                                 output_type="np").images)
    print(f"measured: {np.abs(mine - theirs).max()} levels")
    assert np.abs(mine - theirs).max() <= 1
    whole = image_of(z_run, run_graph(Graph.from_dict(t2i_graph(identifier, steps=4, seed=9)), z_run))
    assert np.abs(mine - whole).max() > 4  # the image's latents matter


def test_inpainting_keeps_the_masked_out_region_and_a_split_run_resumes(z_run: RunContext, z_image: Any) -> None:
    _, identifier = z_image
    init = torch.randn(1, 16, 8, 16, generator=torch.Generator().manual_seed(4))
    put_tensor(z_run, "init", init)
    mask = torch.ones(1, 64, 128)
    mask[:, :, :64] = 0.0  # 0: denoise the left half, 1: keep the right half
    put_tensor(z_run, "mask", mask)
    graph = t2i_graph(identifier, steps=3, latents={"latents_name": "init"}, denoise_mask={"mask_name": "mask"})
    [out] = run_graph(Graph.from_dict(graph), z_run).outputs_of("denoise")
    latents = stored(z_run, "tensors", out.latents.latents_name)["tensor"]
    assert torch.equal(latents[..., 8:], init[..., 8:])  # at sigma 0 the kept region is the image's latents
    assert (latents[..., :8] - init[..., :8]).abs().mean() > 0.1

    whole = t2i_graph(identifier, steps=4, seed=3)
    [full] = run_graph(Graph.from_dict(whole), z_run).outputs_of("denoise")
    first = t2i_graph(identifier, steps=4, seed=3, denoising_end=0.5)
    [half] = run_graph(Graph.from_dict(first), z_run).outputs_of("denoise")
    second = t2i_graph(identifier, steps=4, seed=3, denoising_start=0.5, add_noise=False)
    second["nodes"]["denoise"]["latents"] = {"latents_name": half.latents.latents_name}
    [resumed] = run_graph(Graph.from_dict(second), z_run).outputs_of("denoise")
    a = stored(z_run, "tensors", full.latents.latents_name)["tensor"]
    b = stored(z_run, "tensors", resumed.latents.latents_name)["tensor"]
    assert torch.allclose(a, b, atol=1e-5)


def test_heun_and_lcm_run_their_own_schedules(run_t2i: Callable[..., np.ndarray], z_run: RunContext) -> None:
    events: list[dict[str, Any]] = []
    z_run.on_progress = events.append
    euler, heun = run_t2i(seed=4), run_t2i(seed=4, scheduler="heun")
    assert [e["step"] for e in events if e.get("step")] == [1, 2, 3, 1, 2, 3]  # Heun reports user steps
    lcm = run_t2i(seed=4, scheduler="lcm")
    assert np.abs(euler - heun).max() > 1 and np.abs(euler - lcm).max() > 1 and np.abs(heun - lcm).max() > 1
    assert np.array_equal(lcm, run_t2i(seed=4, scheduler="lcm"))  # LCM's step noise comes from the seed


def test_the_seed_variance_enhancer(z_run: RunContext, z_image: Any) -> None:
    _, identifier = z_image
    put = {"prompt_embeds": torch.randn(20, 2560, generator=torch.Generator().manual_seed(1))}
    from safetensors.torch import save

    name = "given"
    z_run.store.write("conditioning", f"{name}.safetensors", save(put))

    def enhanced(**fields: Any) -> tuple[Any, torch.Tensor]:
        graph = {"id": "g", "nodes": {"v": {"id": "v", "type": "z_image_seed_variance_enhancer",
                                            "conditioning": {"conditioning_name": name}, **fields}}, "edges": []}
        [out] = run_graph(Graph.from_dict(graph), z_run).outputs_of("v")
        return out, stored(z_run, "conditioning", out.conditioning.conditioning_name)["prompt_embeds"]

    out, _ = enhanced(strength=0.0)
    assert out.conditioning.conditioning_name == name  # strength 0: the same conditioning
    _, a = enhanced(seed=3, strength=0.5, randomize_percent=30.0)
    _, b = enhanced(seed=3, strength=0.5, randomize_percent=30.0)
    _, c = enhanced(seed=4, strength=0.5, randomize_percent=30.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a != put["prompt_embeds"])
    assert 0.25 < changed.float().mean() < 0.35
    bound = 0.5 * put["prompt_embeds"].std()
    assert (a - put["prompt_embeds"]).abs().max() <= bound + 1e-6


def test_the_metadata_node_gives_the_same_latents_and_invokeais_keys(z_run: RunContext, z_image: Any) -> None:
    _, identifier = z_image
    graph = t2i_graph(identifier, seed=11, steps=2)
    [plain] = run_graph(Graph.from_dict(graph), z_run).outputs_of("denoise")
    graph["nodes"]["denoise"]["type"] = "z_image_denoise_meta"
    [meta] = run_graph(Graph.from_dict(graph), z_run).outputs_of("denoise")
    assert torch.equal(stored(z_run, "tensors", plain.latents.latents_name)["tensor"],
                       stored(z_run, "tensors", meta.latents.latents_name)["tensor"])
    data = meta.metadata.root
    assert {k: data[k] for k in ("width", "height", "steps", "guidance", "seed", "scheduler")} == {
        "width": 128, "height": 64, "steps": 2, "guidance": 1.0, "seed": 11, "scheduler": "euler"}
    assert data["model"]["key"] == identifier["key"] and "loras" not in data


def test_decode_then_encode_through_the_vae_nodes(z_run: RunContext, z_image: Any) -> None:
    _, identifier = z_image
    put_tensor(z_run, "given", torch.randn(1, 16, 8, 6, generator=torch.Generator().manual_seed(4)))
    vae = {"vae": {**identifier, "submodel_type": "vae"}}
    graph = {"id": "g", "nodes": {
        "decode": {"id": "decode", "type": "z_image_l2i", "latents": {"latents_name": "given"}, "vae": vae},
        "encode": {"id": "encode", "type": "z_image_i2l", "vae": vae}},
        "edges": [link("decode", "image", "encode")]}
    state = run_graph(Graph.from_dict(graph), z_run)
    [decoded], [encoded] = state.outputs_of("decode"), state.outputs_of("encode")
    assert (decoded.width, decoded.height) == (48, 64) and (encoded.width, encoded.height) == (48, 64)
    first = stored(z_run, "tensors", encoded.latents.latents_name)["tensor"]
    again = run_graph(Graph.from_dict(graph), z_run).outputs_of("encode")[0]
    assert first.shape == (1, 16, 8, 6)
    assert torch.equal(first, stored(z_run, "tensors", again.latents.latents_name)["tensor"])  # seeded sample


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"denoising_start": 0.5}, "denoising_start", "should be 0 when initial latents are not provided"),
    ({"denoise_mask": {"mask_name": "m"}}, "denoise_mask", "inpainting needs the image's latents"),
    ({"latents": {"latents_name": "small"}}, "latents", r"does not fit a 128x64 image"),
])
def test_bad_denoise_input_is_refused_naming_the_field(z_run: RunContext, z_image: Any, change: dict[str, Any],
                                                        field: str, message: str) -> None:
    from invokeai_provider.errors import NodeExecutionError

    _, identifier = z_image
    put_tensor(z_run, "small", torch.zeros(1, 16, 4, 4))
    graph = t2i_graph(identifier, **change)
    with pytest.raises(NodeExecutionError, match=message) as caught:
        run_graph(Graph.from_dict(graph), z_run)
    assert caught.value.node_id == "denoise" and caught.value.field == field


def test_a_runtime_task_checks_the_loaders_model_name_as_given() -> None:
    """The GPU runtime's literal check leaves model names to the runtime's binding: the loader's required
    direct-input model field must not count as missing meanwhile (the cluster ran into this)."""
    from invokeai_provider.errors import NodeValidationError
    from invokeai_provider.execution.graph_runs import _check_literals

    _check_literals({"id": "g", "nodes": {"l": {"id": "l", "type": "z_image_model_loader", "model": "tiny-z-image"}},
                     "edges": []})
    with pytest.raises(NodeValidationError, match="field \"model\" Field required"):
        _check_literals({"id": "g", "nodes": {"l": {"id": "l", "type": "z_image_model_loader"}}, "edges": []})

"""The SD3 / SD3.5 nodes on a tiny SD3.5 model: sd3_model_loader, sd3_text_encoder, sd3_denoise, sd3_i2l and
sd3_l2i; what the text encoder stores against StableDiffusion3Pipeline.encode_prompt, text-to-image against
StableDiffusion3Pipeline and image-to-image against StableDiffusion3Img2ImgPipeline, inpainting, and bad input
named by field."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from invokeai_provider.core.context import RunContext
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from helpers import edge, graph, node

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPT = "a lighthouse in a storm, oil painting"
PARTS = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "tokenizer_3", "text_encoder_3",
         "transformer", "vae")


def run_context(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="sd3", run_id="r1"),
                      services={"models": manager})


def parts_of(manager: ModelManager, identifier: dict[str, Any]) -> dict[str, Any]:
    from invokeai_provider.core.taxonomy import SubModelType

    config = manager.get_config(identifier)
    parts = {}
    for name in PARTS:
        with manager.load(config.identifier(), SubModelType(name)) as model:
            parts[name] = model
    return parts


def sd3_graph(identifier: dict[str, Any], *, seed: int = 21, steps: int = 3, size: tuple[int, int] = (48, 32),
              cfg_scale: float = 3.5, t5: bool = True, **denoise: Any) -> dict[str, Any]:
    """InvokeAI's SD3.5 text-to-image graph (its default workflow's nodes and edges)."""
    width, height = size
    encoders = ("clip_l", "clip_g", "t5_encoder") if t5 else ("clip_l", "clip_g")
    return graph(
        node("load", "sd3_model_loader", model=identifier), node("pos", "sd3_text_encoder", prompt=PROMPT),
        node("neg", "sd3_text_encoder", prompt=""),
        node("denoise", "sd3_denoise", seed=seed, steps=steps, width=width, height=height, cfg_scale=cfg_scale,
             **denoise),
        node("decode", "sd3_l2i"),
        edges=[*(edge("load", f, p, f) for f in encoders for p in ("pos", "neg")),
               edge("load", "transformer", "denoise", "transformer"),
               edge("pos", "conditioning", "denoise", "positive_conditioning"),
               edge("neg", "conditioning", "denoise", "negative_conditioning"),
               edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")])


def image_of(run: RunContext, state: Any, node_id: str = "decode") -> np.ndarray:
    [decoded] = state.outputs_of(node_id)
    return np.asarray(Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name)))).astype(np.int16)


def stored(run: RunContext, kind: str, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(run.store.read(kind, f"{name}.safetensors"))


def pipeline_image(pipe: Any, steps: int, size: tuple[int, int], noise: torch.Tensor, **call: Any) -> np.ndarray:
    """The pipeline's image as InvokeAI's conversion makes it (truncated to 0..255)."""
    width, height = size
    out = pipe(PROMPT, negative_prompt="", height=height, width=width, num_inference_steps=steps,
               sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1].tolist(), latents=noise, output_type="np",
               max_sequence_length=256, **call).images[0]
    return np.floor(out * 255).astype(np.int16)


# --- the model loader -------------------------------------------------------------------------------


def test_the_model_loader_splits_an_sd3_main(tmp_path: Path, sd3: tuple[ModelManager, dict[str, Any]]) -> None:
    manager, identifier = sd3
    state = run_graph(Graph.from_dict(graph(node("load", "sd3_model_loader", model=identifier))),
                      run_context(tmp_path, manager))
    [out] = state.outputs_of("load")
    parts = {"transformer": out.transformer.transformer, "clip_l tokenizer": out.clip_l.tokenizer,
             "clip_l": out.clip_l.text_encoder, "clip_g tokenizer": out.clip_g.tokenizer,
             "clip_g": out.clip_g.text_encoder, "t5 tokenizer": out.t5_encoder.tokenizer,
             "t5": out.t5_encoder.text_encoder, "vae": out.vae.vae}
    assert {k: v.submodel_type.value for k, v in parts.items()} == {
        "transformer": "transformer", "clip_l tokenizer": "tokenizer", "clip_l": "text_encoder",
        "clip_g tokenizer": "tokenizer_2", "clip_g": "text_encoder_2", "t5 tokenizer": "tokenizer_3",
        "t5": "text_encoder_3", "vae": "vae"}
    assert {v.key for v in parts.values()} == {identifier["key"]}


def test_the_model_loader_refuses_another_base_naming_the_field(tmp_path: Path,
                                                                 sd3: tuple[ModelManager, dict[str, Any]]) -> None:
    from invokeai_provider.errors import NodeExecutionError

    manager, identifier = sd3
    flux_like = {**identifier, "base": "flux"}
    with pytest.raises(NodeExecutionError, match="node load .*field model.*base sd-3") as caught:
        run_graph(Graph.from_dict(graph(node("load", "sd3_model_loader", model=flux_like))),
                  run_context(tmp_path, manager))
    assert caught.value.field == "model"


# --- the text encoder -------------------------------------------------------------------------------


def test_the_text_encoder_stores_what_the_pipeline_encodes(tmp_path: Path,
                                                          sd3: tuple[ModelManager, dict[str, Any]]) -> None:
    from diffusers import StableDiffusion3Pipeline

    from invokeai_provider.models.sd3.text_encoding import SD3Conditioning, transformer_inputs

    manager, identifier = sd3
    run = run_context(tmp_path, manager)
    state = run_graph(Graph.from_dict(graph(
        node("load", "sd3_model_loader", model=identifier), node("pos", "sd3_text_encoder", prompt=PROMPT),
        node("no_t5", "sd3_text_encoder", prompt=PROMPT),
        edges=[*(edge("load", f, "pos", f) for f in ("clip_l", "clip_g", "t5_encoder")),
               *(edge("load", f, "no_t5", f) for f in ("clip_l", "clip_g"))])), run)
    [out] = state.outputs_of("pos")
    tensors = stored(run, "conditioning", out.conditioning.conditioning_name)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "clip_l_embeds": (1, 77, 768), "clip_l_pooled_embeds": (1, 768), "clip_g_embeds": (1, 77, 1280),
        "clip_g_pooled_embeds": (1, 1280), "t5_embeds": (1, 256, 4096)}
    embeds, pooled = transformer_inputs(SD3Conditioning.from_dict(tensors), 4096)

    pipe = StableDiffusion3Pipeline(scheduler=None, **parts_of(manager, identifier))
    with torch.no_grad():
        theirs, _, theirs_pooled, _ = pipe.encode_prompt(PROMPT, PROMPT, PROMPT, do_classifier_free_guidance=False,
                                                         max_sequence_length=256)
    assert embeds.shape == theirs.shape == (1, 77 + 256, 4096)
    assert torch.allclose(embeds, theirs, atol=1e-5) and torch.allclose(pooled, theirs_pooled, atol=1e-5)

    [without] = state.outputs_of("no_t5")  # T5 left out: InvokeAI's 256 zero tokens take its place
    no_t5 = SD3Conditioning.from_dict(stored(run, "conditioning", without.conditioning.conditioning_name))
    assert no_t5.t5_embeds is None
    zero_embeds, _ = transformer_inputs(no_t5, 4096)
    assert torch.equal(zero_embeds[:, :77], embeds[:, :77]) and not zero_embeds[:, 77:].any()


# --- text-to-image ----------------------------------------------------------------------------------


def test_the_sd3_nodes_give_the_pipelines_image(tmp_path: Path, sd3: tuple[ModelManager, dict[str, Any]]) -> None:
    """Same tiny weights, prompt, seed, size and steps: the graph's image is StableDiffusion3Pipeline's within 1 level
    of 255. Aligned: the pipeline gets InvokeAI's noise (``latents=``, the seed drawn in float16 on the CPU) and
    InvokeAI's schedule: ``sigmas`` = linspace(1, 0, steps + 1) without its last value, on a scheduler of shift 1,
    since InvokeAI's sd3_denoise ignores the scheduler's shift of 3. Measured: 0 levels. Teeth: the pipeline with
    SD3's shift of 3 (22 levels measured) and the graph without CFG (scale 1; 37 levels) move the image past 5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from invokeai_provider.models.sd3 import sampling

    manager, identifier = sd3
    run = run_context(tmp_path, manager)
    events: list[dict[str, Any]] = []
    run.on_progress = events.append
    size, steps = (48, 32), 3
    mine = image_of(run, run_graph(Graph.from_dict(sd3_graph(identifier, seed=21, steps=steps, size=size)), run))
    assert [e["step"] for e in events if e.get("step")] == [1, 2, 3]
    assert mine.shape == (32, 48, 3) and mine.std() > 3

    parts = parts_of(manager, identifier)
    noise = sampling.noise(21, size[1], size[0])
    pipe = StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0),
                                    **parts)
    theirs = pipeline_image(pipe, steps, size, noise, guidance_scale=3.5)
    difference = np.abs(mine - theirs).max()
    assert difference <= 1, f"the SD3 nodes' image differs from StableDiffusion3Pipeline's by {difference} levels"

    shifted = StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
                                       **parts)
    assert np.abs(mine - pipeline_image(shifted, steps, size, noise, guidance_scale=3.5)).max() > 5
    no_cfg = image_of(run, run_graph(Graph.from_dict(sd3_graph(identifier, seed=21, steps=steps, size=size,
                                                               cfg_scale=1.0)), run))
    assert np.abs(mine - no_cfg).max() > 5


# --- image-to-image and inpainting -------------------------------------------------------------------


def img2img_graph(identifier: dict[str, Any], image_name: str, *, strength: float, **denoise: Any) -> dict[str, Any]:
    g = sd3_graph(identifier, denoising_start=1.0 - strength, **denoise)
    g["nodes"]["encode"] = {"id": "encode", "type": "sd3_i2l", "image": {"image_name": image_name}}
    g["edges"] += [edge("load", "vae", "encode", "vae"), edge("encode", "latents", "denoise", "latents")]
    return g


def put_image(run: RunContext, name: str, pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    run.store.write("images", name, buffer.getvalue())


def test_image_to_image_gives_the_img2img_pipelines_image(tmp_path: Path, sd3: tuple[ModelManager, dict[str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """sd3_i2l + sd3_denoise (denoising_start = 1 - strength) + sd3_l2i against StableDiffusion3Img2ImgPipeline
    within 1 level. Aligned: the pipeline takes the i2l latents as its image (it skips encoding latents with the
    VAE's channel count), its noise is InvokeAI's (its randn_tensor is replaced for the call), its sigmas are
    InvokeAI's unshifted ones, and steps x strength is whole, so both start at the same timestep. Measured: 0
    levels; a strength of 0.25 instead of 0.5 moves the image by 207."""
    import diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img as img2img_module
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Img2ImgPipeline

    from invokeai_provider.models.sd3 import sampling

    manager, identifier = sd3
    run = run_context(tmp_path, manager)
    pixels = np.random.default_rng(2).integers(0, 256, (32, 48, 3))
    put_image(run, "source.png", pixels)
    steps, size, strength = 4, (48, 32), 0.5
    state = run_graph(Graph.from_dict(img2img_graph(identifier, "source.png", strength=strength, steps=steps,
                                                    seed=8)), run)
    mine = image_of(run, state)
    [encoded] = state.outputs_of("encode")
    init = stored(run, "tensors", encoded.latents.latents_name)["tensor"]
    assert init.shape == (1, 16, 4, 6)

    noise = sampling.noise(8, size[1], size[0])
    monkeypatch.setattr(img2img_module, "randn_tensor", lambda *args, **kwargs: noise.clone())
    pipe = StableDiffusion3Img2ImgPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0), **parts_of(manager, identifier))
    out = pipe(PROMPT, negative_prompt="", image=init, strength=strength, num_inference_steps=steps,
               sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1].tolist(), guidance_scale=3.5, output_type="np",
               max_sequence_length=256).images[0]
    theirs = np.floor(out * 255).astype(np.int16)
    difference = np.abs(mine - theirs).max()
    assert difference <= 1, f"the image-to-image graph differs from the img2img pipeline's by {difference} levels"
    weaker = image_of(run, run_graph(Graph.from_dict(img2img_graph(identifier, "source.png", strength=0.25,
                                                                   steps=steps, seed=8)), run))
    assert np.abs(weaker - mine).max() > 5  # the strength reaches the loop


def test_a_denoise_mask_keeps_the_unmasked_region(tmp_path: Path, sd3: tuple[ModelManager, dict[str, Any]]) -> None:
    from safetensors.torch import save

    manager, identifier = sd3
    run = run_context(tmp_path, manager)
    put_image(run, "source.png", np.random.default_rng(5).integers(0, 256, (32, 48, 3)))
    mask = torch.ones(1, 32, 48)
    mask[:, :, :24] = 0.0  # 0: regenerate the left half; 1: keep the right half
    run.store.write("tensors", "mask.safetensors", save({"tensor": mask}))
    g = img2img_graph(identifier, "source.png", strength=1.0, steps=2, seed=3)
    g["nodes"]["denoise"]["denoise_mask"] = {"mask_name": "mask"}
    state = run_graph(Graph.from_dict(g), run)
    [encoded], [denoised] = state.outputs_of("encode"), state.outputs_of("denoise")
    init = stored(run, "tensors", encoded.latents.latents_name)["tensor"]
    out = stored(run, "tensors", denoised.latents.latents_name)["tensor"]
    assert torch.allclose(out[..., 3:], init[..., 3:], atol=1e-6)  # the kept half: the image's own latents
    assert (out[..., :3] - init[..., :3]).abs().max() > 0.1


# --- the VAE nodes ----------------------------------------------------------------------------------


def test_the_vae_nodes_scale_and_shift_as_the_pipeline(tmp_path: Path,
                                                       sd3: tuple[ModelManager, dict[str, Any]]) -> None:
    from safetensors.torch import save

    from invokeai_provider.core.taxonomy import SubModelType

    manager, identifier = sd3
    run = run_context(tmp_path, manager)
    latents = torch.randn(1, 16, 4, 6, generator=torch.Generator().manual_seed(4))
    run.store.write("tensors", "given.safetensors", save({"tensor": latents}))
    vae_field = {"vae": {**identifier, "submodel_type": "vae"}}
    state = run_graph(Graph.from_dict(graph(
        node("decode", "sd3_l2i", latents={"latents_name": "given"}, vae=vae_field),
        node("encode", "sd3_i2l", vae=vae_field), edges=[edge("decode", "image", "encode", "image")])), run)
    decoded = image_of(run, state)
    with manager.load(manager.get_config(identifier).identifier(), SubModelType.VAE) as vae, torch.no_grad():
        assert (vae.config.scaling_factor, vae.config.shift_factor) == (1.5305, 0.0609)
        image = vae.decode(latents / 1.5305 + 0.0609).sample  # StableDiffusion3Pipeline's decode
        expected = (127.5 * (image[0].clamp(-1, 1) + 1.0)).byte().permute(1, 2, 0).numpy()
        assert np.array_equal(decoded, expected)
        tensor = torch.from_numpy(decoded.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        posterior = vae.encode(tensor).latent_dist
        wanted = (posterior.sample(torch.Generator().manual_seed(0)) - 0.0609) * 1.5305
    [encoded] = state.outputs_of("encode")
    assert torch.allclose(stored(run, "tensors", encoded.latents.latents_name)["tensor"], wanted, atol=1e-5)


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, field, message", [
    ({"denoising_start": 0.5}, "denoising_start", "should be 0 when initial latents are not provided"),
    ({"cfg_scale": [1.0, 2.0]}, "cfg_scale", "a list of 2 values for 3 steps"),
    ({"noise": {"latents_name": "small"}}, "noise", r"does not fit a 48x32 SD3 image"),
])
def test_bad_denoise_input_names_its_field(tmp_path: Path, sd3: tuple[ModelManager, dict[str, Any]],
                                           change: dict[str, Any], field: str, message: str) -> None:
    from safetensors.torch import save

    from invokeai_provider.errors import NodeExecutionError

    manager, identifier = sd3
    run = run_context(tmp_path, manager)
    run.store.write("tensors", "small.safetensors", save({"tensor": torch.zeros(1, 16, 2, 2)}))
    with pytest.raises(NodeExecutionError, match=f"node denoise.*field {field}.*{message}"):
        run_graph(Graph.from_dict(sd3_graph(identifier, **change)), run)


def test_a_flux_conditioning_is_refused_by_the_sd3_denoise(tmp_path: Path,
                                                          sd3: tuple[ModelManager, dict[str, Any]]) -> None:
    from invokeai_provider.errors import NodeExecutionError

    from safetensors.torch import save

    manager, identifier = sd3
    run = run_context(tmp_path, manager)
    run.store.write("conditioning", "fluxish.safetensors",
                    save({"t5_embeds": torch.zeros(1, 4, 8), "clip_embeds": torch.zeros(1, 8)},
                         metadata={"kind": "flux"}))
    g = sd3_graph(identifier)
    g["edges"] = [e for e in g["edges"] if e["destination"] != {"node_id": "denoise",
                                                               "field": "negative_conditioning"}]
    g["nodes"]["denoise"]["negative_conditioning"] = {"conditioning_name": "fluxish"}
    with pytest.raises(NodeExecutionError, match="field negative_conditioning.*expected the output of "
                                                 "sd3_text_encoder"):
        run_graph(Graph.from_dict(g), run)

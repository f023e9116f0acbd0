"""The FLUX.1 nodes on a tiny FLUX.1 model: flux_model_loader, flux_text_encoder, flux_denoise and the VAE nodes,
InvokeAI's shapes and conversions, errors naming the field, and a text-to-image graph giving FluxPipeline's image."""

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
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import build_flux_model
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict[str, Any]]:
    root = tmp_path_factory.mktemp("flux-root")
    registry = ModelRegistry(root.as_uri())
    config = install_model(registry, str(build_flux_model(root / "tiny-flux", variant="schnell")), name="tiny-flux",
                           inplace=True)
    return ModelManager(registry), config.identifier()


def run_context(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux", run_id="r1"),
                      services={"models": manager})


def vae_field(identifier: dict[str, Any]) -> dict[str, Any]:
    return {"vae": {**identifier, "submodel_type": "vae"}}


def put_latents(run: RunContext, name: str, latents: torch.Tensor) -> None:
    from safetensors.torch import save

    run.store.write("tensors", f"{name}.safetensors", save({"tensor": latents}))


def stored_latents(run: RunContext, name: str) -> torch.Tensor:
    from safetensors.torch import load

    return load(run.store.read("tensors", f"{name}.safetensors"))["tensor"]


def test_decode_then_encode_through_the_nodes(tmp_path: Path, flux: tuple[ModelManager, dict[str, Any]]) -> None:
    from invokeai_provider.core.taxonomy import SubModelType
    from invokeai_provider.models.flux import vae as flux_vae

    manager, identifier = flux
    run = run_context(tmp_path, manager)
    latents = torch.randn(1, 16, 8, 6, generator=torch.Generator().manual_seed(4))
    put_latents(run, "given", latents)
    graph = {"id": "g", "nodes": {
        "decode": {"id": "decode", "type": "flux_vae_decode", "latents": {"latents_name": "given"},
                   "vae": vae_field(identifier)},
        "encode": {"id": "encode", "type": "flux_vae_encode", "vae": vae_field(identifier)}},
        "edges": [{"source": {"node_id": "decode", "field": "image"},
                   "destination": {"node_id": "encode", "field": "image"}}]}
    state = run_graph(Graph.from_dict(graph), run)
    [decoded] = state.outputs_of("decode")
    assert (decoded.width, decoded.height) == (48, 64)
    png = np.asarray(Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name))))
    with manager.load(manager.get_config(identifier).identifier(), SubModelType.VAE) as vae:
        expected = (127.5 * (flux_vae.decode(vae, latents)[0].clamp(-1, 1) + 1.0)).byte().permute(1, 2, 0).numpy()
    assert np.array_equal(png, expected)  # InvokeAI's conversion: truncated, not rounded

    [encoded] = state.outputs_of("encode")
    assert (encoded.width, encoded.height) == (48, 64)
    first = stored_latents(run, encoded.latents.latents_name)
    assert first.shape == (1, 16, 8, 6)
    again = run_graph(Graph.from_dict(graph), run)  # a retry: the same names, the same values
    assert torch.equal(first, stored_latents(run, again.outputs_of("encode")[0].latents.latents_name))


def test_the_model_loader_splits_a_flux_main_and_sets_the_t5_length(
        tmp_path: Path, flux: tuple[ModelManager, dict[str, Any]]) -> None:
    manager, identifier = flux
    run = run_context(tmp_path, manager)
    state = run_graph(Graph.from_dict({"id": "g", "nodes": {"load": {"id": "load", "type": "flux_model_loader",
                                                                    "model": identifier}}, "edges": []}), run)
    [out] = state.outputs_of("load")
    parts = {"transformer": out.transformer.transformer, "clip tokenizer": out.clip.tokenizer,
             "clip": out.clip.text_encoder, "t5 tokenizer": out.t5_encoder.tokenizer, "t5": out.t5_encoder.text_encoder,
             "vae": out.vae.vae}
    assert {k: v.submodel_type.value for k, v in parts.items()} == {
        "transformer": "transformer", "clip tokenizer": "tokenizer", "clip": "text_encoder",
        "t5 tokenizer": "tokenizer_2", "t5": "text_encoder_2", "vae": "vae"}
    assert {v.key for v in parts.values()} == {identifier["key"]} and out.max_seq_len == 256  # schnell


def test_the_model_loader_refuses_another_base_naming_the_field(tmp_path: Path, tiny_registry) -> None:
    from invokeai_provider.errors import NodeExecutionError

    manager = ModelManager(tiny_registry)
    sd = tiny_registry.find("tiny-sd1").identifier()
    with pytest.raises(NodeExecutionError, match="node load .*field model") as caught:
        run_graph(Graph.from_dict({"id": "g", "nodes": {"load": {"id": "load", "type": "flux_model_loader",
                                                                "model": sd}}, "edges": []}),
                  run_context(tmp_path, manager))
    assert caught.value.field == "model"


def test_the_text_encoder_stores_what_flux_pipeline_encodes(tmp_path: Path,
                                                           flux: tuple[ModelManager, dict[str, Any]]) -> None:
    from diffusers import FluxPipeline
    from safetensors.torch import load

    from invokeai_provider.core.taxonomy import SubModelType

    manager, identifier = flux
    run = run_context(tmp_path, manager)
    prompt = "a red fox in the snow, oil painting"
    graph = {"id": "g", "nodes": {
        "load": {"id": "load", "type": "flux_model_loader", "model": identifier},
        "prompt": {"id": "prompt", "type": "flux_text_encoder", "prompt": prompt, "t5_max_seq_len": 256}},
        "edges": [{"source": {"node_id": "load", "field": field}, "destination": {"node_id": "prompt", "field": field}}
                  for field in ("clip", "t5_encoder")]}
    state = run_graph(Graph.from_dict(graph), run)
    [out] = state.outputs_of("prompt")
    stored = load(run.store.read("conditioning", f"{out.conditioning.conditioning_name}.safetensors"))
    assert stored["t5_embeds"].shape == (1, 256, 4096) and stored["clip_embeds"].shape == (1, 768)

    config = manager.get_config(identifier)
    parts = {}
    for name, part in (("tokenizer", SubModelType.Tokenizer), ("text_encoder", SubModelType.TextEncoder),
                       ("tokenizer_2", SubModelType.Tokenizer2), ("text_encoder_2", SubModelType.TextEncoder2)):
        with manager.load(config.identifier(), part) as model:
            parts[name] = model
    pipe = FluxPipeline(transformer=None, vae=None, scheduler=None, **parts)
    with torch.no_grad():  # as FluxPipeline runs it (SDPA may take another kernel with grad on)
        t5, pooled, _ = pipe.encode_prompt(prompt, prompt_2=prompt, max_sequence_length=256)
    assert torch.allclose(stored["t5_embeds"], t5, atol=1e-5) and torch.allclose(stored["clip_embeds"], pooled,
                                                                                  atol=1e-5)


def flux_t2i_graph(identifier: dict[str, Any], *, seed: int, steps: int, width: int, height: int,
                   guidance: float = 3.5) -> dict[str, Any]:
    """InvokeAI's FLUX text-to-image graph: loader, prompt, denoise, decode."""
    def link(source: str, field: str, destination: str, destination_field: str | None = None) -> dict[str, Any]:
        return {"source": {"node_id": source, "field": field},
                "destination": {"node_id": destination, "field": destination_field or field}}

    return {"id": "flux-t2i", "nodes": {
        "load": {"id": "load", "type": "flux_model_loader", "model": identifier},
        "prompt": {"id": "prompt", "type": "flux_text_encoder", "prompt": "a lighthouse in a storm, oil painting"},
        "denoise": {"id": "denoise", "type": "flux_denoise", "seed": seed, "num_steps": steps, "width": width,
                    "height": height, "guidance": guidance},
        "decode": {"id": "decode", "type": "flux_vae_decode"}},
        "edges": [link("load", "clip", "prompt"), link("load", "t5_encoder", "prompt"),
                  link("load", "max_seq_len", "prompt", "t5_max_seq_len"), link("load", "transformer", "denoise"),
                  link("prompt", "conditioning", "denoise", "positive_text_conditioning"),
                  link("denoise", "latents", "decode"), link("load", "vae", "decode")]}


def test_the_flux_nodes_give_flux_pipelines_image(tmp_path: Path, flux: tuple[ModelManager, dict[str, Any]]) -> None:
    from diffusers import FluxPipeline

    from invokeai_provider.core.taxonomy import SubModelType
    from invokeai_provider.models.flux import sampling

    manager, identifier = flux
    run = run_context(tmp_path, manager)
    events: list[dict[str, Any]] = []
    run.on_progress = events.append
    state = run_graph(Graph.from_dict(flux_t2i_graph(identifier, seed=21, steps=4, width=48, height=64)), run)
    [decoded] = state.outputs_of("decode")
    mine = np.asarray(Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name)))).astype(np.int16)
    assert [e["step"] for e in events if e.get("step")] == [1, 2, 3, 4]

    config = manager.get_config(identifier)
    parts = {}
    for name in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "transformer", "vae"):
        with manager.load(config.identifier(), SubModelType(name)) as model:
            parts[name] = model
    from diffusers import FlowMatchEulerDiscreteScheduler
    from invokeai_provider.models.testing.tiny_flux import SCHEDULERS

    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULERS["schnell"]), **parts)
    reference = pipe("a lighthouse in a storm, oil painting", height=64, width=48, num_inference_steps=4,
                     latents=sampling.pack(sampling.noise(21, 64, 48)), max_sequence_length=256,
                     output_type="np").images[0]
    theirs = np.floor(reference * 255).astype(np.int16)  # InvokeAI's conversion truncates
    difference = np.abs(mine - theirs)
    assert difference.max() <= 1, f"the FLUX nodes' image differs from FluxPipeline's by {difference.max()} levels"
    assert mine.std() > 3


def test_cfg_scale_schedule_and_refusals_name_their_field() -> None:
    from invokeai_provider.core.registry import InvocationRegistry
    from invokeai_provider.operators.sd.common import GenerationError

    denoise = InvocationRegistry.get_invocation_class("flux_denoise")
    base = {"id": "d", "transformer": {"transformer": {"key": "k", "hash": "", "name": "n", "base": "flux",
                                                       "type": "main"}},
            "positive_text_conditioning": {"conditioning_name": "c"}}
    node = denoise(**base, cfg_scale=3.0, cfg_scale_start_step=1, cfg_scale_end_step=-2)
    assert node.cfg_schedule(5) == [1.0, 3.0, 3.0, 3.0, 1.0]  # InvokeAI's prep_cfg_scale
    assert denoise(**base, cfg_scale=[2.0, 3.0]).cfg_schedule(2) == [2.0, 3.0]
    with pytest.raises(GenerationError, match="field cfg_scale_start_step: must be before cfg_scale_end_step"):
        denoise(**base, cfg_scale_start_step=3, cfg_scale_end_step=1).cfg_schedule(5)
    with pytest.raises(GenerationError, match="field cfg_scale: a list of 2 values for 4 steps"):
        denoise(**base, cfg_scale=[1.0, 2.0]).cfg_schedule(4)
    with pytest.raises(GenerationError, match="field dype_preset: DyPE is not supported"):
        denoise(**base, dype_preset="auto")._refuse_what_is_not_built()


# --- LoRAs -------------------------------------------------------------------------------------------


def lora_graph(identifier: dict[str, Any], lora: dict[str, Any] | None, **denoise: Any) -> dict[str, Any]:
    """The text-to-image graph with a flux_lora_loader between the model loader and the nodes that use it."""
    graph = flux_t2i_graph(identifier, **denoise)
    if lora is None:
        return graph
    graph["nodes"]["lora"] = {"id": "lora", "type": "flux_lora_loader", "lora": lora, "weight": 0.8}
    rewired = []
    for edge in graph["edges"]:
        if edge["source"]["node_id"] == "load" and edge["source"]["field"] in ("transformer", "clip", "t5_encoder"):
            field = edge["source"]["field"]
            rewired.append({"source": {"node_id": "load", "field": field},
                            "destination": {"node_id": "lora", "field": field}})
            edge = {**edge, "source": {"node_id": "lora", "field": field}}
        rewired.append(edge)
    graph["edges"] = rewired
    return graph


def image_of(run: RunContext, state: Any) -> np.ndarray:
    [decoded] = state.outputs_of("decode")
    return np.asarray(Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name)))).astype(np.int16)


@pytest.fixture(scope="module")
def flux_loras(flux: tuple[ModelManager, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, dict[str, Any]]:
    from invokeai_provider.models.testing.tiny_flux import build_flux_lora

    manager, _ = flux
    folder = tmp_path_factory.mktemp("flux-loras")
    return {style: install_model(manager.registry, str(build_flux_lora(folder / f"{style}.safetensors", style=style,
                                                                        seed=9)), name=f"flux-{style}").identifier()
            for style in ("xlabs", "kohya")}


def test_a_flux_lora_gives_the_image_of_the_merged_weights_and_is_removed(
        tmp_path: Path, flux: tuple[ModelManager, dict[str, Any]], flux_loras: dict[str, dict[str, Any]]) -> None:
    from diffusers import FluxPipeline
    from safetensors.torch import load_file

    from invokeai_provider.core.taxonomy import SubModelType

    manager, identifier = flux
    config = manager.get_config(identifier)
    with manager.load(config.identifier(), SubModelType.Transformer) as transformer:
        cached = {k: v.clone() for k, v in transformer.state_dict().items()}
    run = run_context(tmp_path, manager)
    size = dict(seed=5, steps=2, width=32, height=32)
    plain = image_of(run, run_graph(Graph.from_dict(lora_graph(identifier, None, **size)), run))
    with_lora = image_of(run, run_graph(Graph.from_dict(lora_graph(identifier, flux_loras["xlabs"], **size)), run))
    with manager.load(config.identifier(), SubModelType.Transformer) as transformer:
        assert all(torch.equal(cached[k], v) for k, v in transformer.state_dict().items())  # bit for bit
    assert np.abs(with_lora - plain).max() > 5

    # the reference: diffusers' own conversion of the XLabs file, merged into a copy of the weights by hand
    registry = manager.registry
    converted = FluxPipeline.lora_state_dict(load_file(str(registry.model_path(registry.get(flux_loras["xlabs"]["key"])))))
    converted = converted[0] if isinstance(converted, tuple) else converted
    parts = {}
    for name in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "transformer", "vae"):
        with manager.load(config.identifier(), SubModelType(name)) as model:
            parts[name] = model
    import copy

    merged = copy.deepcopy(parts["transformer"])
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for key, down in converted.items():
            if key.endswith("lora_A.weight"):
                module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
                up = converted[key.replace("lora_A", "lora_B")]
                modules[module].weight += 0.8 * (up @ down)
    from diffusers import FlowMatchEulerDiscreteScheduler

    from invokeai_provider.models.flux import sampling
    from invokeai_provider.models.testing.tiny_flux import SCHEDULERS

    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULERS["schnell"]),
                        **{**parts, "transformer": merged})
    reference = pipe("a lighthouse in a storm, oil painting", height=32, width=32, num_inference_steps=2,
                     latents=sampling.pack(sampling.noise(5, 32, 32)), max_sequence_length=256,
                     output_type="np").images[0]
    difference = np.abs(with_lora - np.floor(reference * 255).astype(np.int16))
    assert difference.max() <= 1, f"the LoRA image differs from the merged reference by {difference.max()} levels"


def test_a_kohya_flux_lora_patches_clip_too_and_the_collection_loader_dedupes(
        tmp_path: Path, flux: tuple[ModelManager, dict[str, Any]], flux_loras: dict[str, dict[str, Any]]) -> None:
    from safetensors.torch import load

    manager, identifier = flux
    run = run_context(tmp_path, manager)

    def clip_embeds(loras: list[dict[str, Any]] | None) -> torch.Tensor:
        nodes: dict[str, Any] = {"load": {"id": "load", "type": "flux_model_loader", "model": identifier},
                                 "prompt": {"id": "prompt", "type": "flux_text_encoder", "prompt": "a fox",
                                            "t5_max_seq_len": 256}}
        source = "load"
        edges = []
        if loras is not None:
            nodes["loras"] = {"id": "loras", "type": "flux_lora_collection_loader", "loras": loras}
            edges += [{"source": {"node_id": "load", "field": f}, "destination": {"node_id": "loras", "field": f}}
                      for f in ("clip", "t5_encoder")]
            source = "loras"
        edges += [{"source": {"node_id": source, "field": f}, "destination": {"node_id": "prompt", "field": f}}
                  for f in ("clip", "t5_encoder")]
        state = run_graph(Graph.from_dict({"id": "g", "nodes": nodes, "edges": edges}), run)
        if loras is not None:
            [out] = state.outputs_of("loras")
            assert [l.lora.key for l in out.clip.loras] == [flux_loras["kohya"]["key"]]  # once, as InvokeAI does
            assert out.transformer is None
        [out] = state.outputs_of("prompt")
        stored = load(run.store.read("conditioning", f"{out.conditioning.conditioning_name}.safetensors"))
        return stored["clip_embeds"], stored["t5_embeds"]

    kohya = {"lora": flux_loras["kohya"], "weight": 1.0}
    plain_clip, plain_t5 = clip_embeds(None)
    lora_clip, lora_t5 = clip_embeds([kohya, kohya])
    assert (lora_clip - plain_clip).abs().max() > 1e-3  # its lora_te1_ layers reach CLIP-L
    assert torch.equal(lora_t5, plain_t5)  # it has no T5 layers
    again, _ = clip_embeds(None)
    assert torch.equal(again, plain_clip)  # and CLIP-L is restored


def test_the_lora_loader_refuses_an_sd_lora_and_a_second_copy(tmp_path: Path, flux: tuple[ModelManager, dict[str, Any]],
                                                              flux_loras: dict[str, dict[str, Any]]) -> None:
    from invokeai_provider.errors import NodeExecutionError

    manager, identifier = flux
    run = run_context(tmp_path, manager)
    sd_lora = {**flux_loras["kohya"], "base": "sd-1"}
    with pytest.raises(NodeExecutionError, match="field lora"):
        run_graph(Graph.from_dict(lora_graph(identifier, sd_lora, seed=1, steps=1, width=16, height=16)), run)
    twice = lora_graph(identifier, flux_loras["kohya"], seed=1, steps=1, width=16, height=16)
    twice["nodes"]["lora2"] = {"id": "lora2", "type": "flux_lora_loader", "lora": flux_loras["kohya"]}
    twice["edges"] = [e for e in twice["edges"] if e["destination"] != {"node_id": "denoise", "field": "transformer"}]
    twice["edges"] += [{"source": {"node_id": "lora", "field": "transformer"},
                        "destination": {"node_id": "lora2", "field": "transformer"}},
                       {"source": {"node_id": "lora2", "field": "transformer"},
                        "destination": {"node_id": "denoise", "field": "transformer"}}]
    with pytest.raises(NodeExecutionError, match="already applied to transformer"):
        run_graph(Graph.from_dict(twice), run)

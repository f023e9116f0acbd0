"""flux_model_loader, flux_vae_decode and flux_vae_encode on a tiny FLUX.1 model: InvokeAI's shapes, the
backend's scaling and shift, InvokeAI's pixel conversion, deterministic encoding, and errors naming the field."""

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
    t5, pooled, _ = pipe.encode_prompt(prompt, prompt_2=prompt, max_sequence_length=256)
    assert torch.allclose(stored["t5_embeds"], t5, atol=1e-5) and torch.allclose(stored["clip_embeds"], pooled,
                                                                                  atol=1e-5)

"""Model fields accept a registered model's name or key, or an identifier exported from elsewhere."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.binding import bind_model_fields, graph_names_models
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.registry import ModelRegistry


@pytest.fixture
def installed(tmp_path):
    registry = ModelRegistry((tmp_path / "root").as_uri())
    path = tmp_path / "tiny-sd.safetensors"
    save_file({"model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, 768),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, str(path))
    return registry, install_model(registry, str(path), name="Tiny SD")


def loader_graph(model):
    return {"id": "g", "nodes": {"m": {"id": "m", "type": "main_model_loader", "model": model}}, "edges": []}


@pytest.mark.parametrize("ref", ["Tiny SD", "key"])
def test_names_and_keys_bind_to_identifiers(installed, ref):
    registry, config = installed
    bound = bind_model_fields(loader_graph(config.key if ref == "key" else ref), registry)
    graph = Graph.from_dict(bound)
    assert graph.nodes["m"].model.key == config.key and graph.nodes["m"].model.hash == config.hash
    assert graph.nodes["m"].model.base.value == "sd-1"


def test_identifier_from_another_install_binds_by_hash(installed):
    registry, config = installed
    foreign = {"key": "c8d55139", "hash": config.hash, "name": "stable-diffusion-v1-5", "base": "sd-1", "type": "main"}
    assert bind_model_fields(loader_graph(foreign), registry)["nodes"]["m"]["model"]["key"] == config.key


def test_unknown_model_names_node_and_field(installed):
    registry, _ = installed
    with pytest.raises(InvokeAIProviderError, match=r"node m \(main_model_loader\): field model: no model with key or name"):
        bind_model_fields(loader_graph("Nope"), registry)


def test_graphs_without_model_fields_need_no_registry():
    assert not graph_names_models({"nodes": {"a": {"id": "a", "type": "integer", "value": 1}}, "edges": []})
    assert graph_names_models(loader_graph("x"))

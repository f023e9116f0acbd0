"""flux_model_loader with separately installed T5 encoder, CLIP embed and VAE models: InvokeAI's submodel
identifiers for each, the same image as the main's own parts when they hold the same weights, and another image
when any one of them differs (so each separate part is really the one used)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import flux_graph
from invokeai_provider.core.context import RunContext
from invokeai_provider.core.taxonomy import BaseModelType
from invokeai_provider.errors import NodeExecutionError
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_flux import build_flux_model
from invokeai_provider.models.testing.tiny_flux_parts import build_clip_embed, build_flux_vae, build_t5_encoder
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEED, OTHER = 3, 4
PARTS = {"t5_encoder_model": build_t5_encoder, "clip_embed_model": build_clip_embed, "vae_model": build_flux_vae}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelManager, dict[str, dict[str, Any]]]:
    """The tiny schnell main, its parts installed on their own (same seed) and parts of another seed."""
    root = tmp_path_factory.mktemp("flux-separate")
    registry = ModelRegistry(root.as_uri())
    ids = {"main": install_model(registry, str(build_flux_model(root / "main", variant="schnell", seed=SEED)),
                                 name="main", inplace=True).identifier()}
    for field, build in PARTS.items():
        for seed, tag in ((SEED, "same"), (OTHER, "other")):
            dest = root / f"{field}-{tag}{'.safetensors' if field == 'vae_model' else ''}"
            ids[f"{field}-{tag}"] = install_model(registry, str(build(dest, seed=seed)), name=f"{field}-{tag}",
                                                  inplace=True).identifier()
    return ModelManager(registry), ids


def run_context(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux", run_id="r1"),
                      services={"models": manager})


def loader_graph(main: dict[str, Any], **parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "g", "nodes": {"load": {"id": "load", "type": "flux_model_loader", "model": main, **parts}},
            "edges": []}


def image_of(tmp_path: Path, manager: ModelManager, graph: dict[str, Any]) -> np.ndarray:
    run = run_context(tmp_path, manager)
    [decoded] = run_graph(Graph.from_dict(graph), run).outputs_of("decode")
    return np.asarray(Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name))))


def test_the_loader_points_each_separate_part_at_invokeais_submodel(
        tmp_path: Path, models: tuple[ModelManager, dict[str, dict[str, Any]]]) -> None:
    manager, ids = models
    parts = {field: ids[f"{field}-same"] for field in PARTS}
    [out] = run_graph(Graph.from_dict(loader_graph(ids["main"], **parts)),
                      run_context(tmp_path, manager)).outputs_of("load")
    got = {name: (ident.key, ident.submodel_type.value) for name, ident in (
        ("transformer", out.transformer.transformer), ("clip tokenizer", out.clip.tokenizer),
        ("clip", out.clip.text_encoder), ("t5 tokenizer", out.t5_encoder.tokenizer), ("t5", out.t5_encoder.text_encoder),
        ("vae", out.vae.vae))}
    t5, clip, vae = (parts[f]["key"] for f in ("t5_encoder_model", "clip_embed_model", "vae_model"))
    assert got == {"transformer": (ids["main"]["key"], "transformer"), "clip tokenizer": (clip, "tokenizer"),
                   "clip": (clip, "text_encoder"), "t5 tokenizer": (t5, "tokenizer_2"), "t5": (t5, "text_encoder_2"),
                   "vae": (vae, "vae")}
    assert out.max_seq_len == 256  # from the main (schnell), not from the encoder


def test_an_sd3_t5_takes_the_third_slots_and_a_wrong_kind_names_its_field(
        tmp_path: Path, models: tuple[ModelManager, dict[str, dict[str, Any]]]) -> None:
    manager, ids = models
    t5 = manager.registry.get(ids["t5_encoder_model-same"]["key"])
    sd3 = manager.registry.add(t5.model_copy(update={"key": "sd3-t5", "name": "sd3-t5", "hash": "blake3:5d3",
                                                     "base": BaseModelType.StableDiffusion3}))
    [out] = run_graph(Graph.from_dict(loader_graph(ids["main"], t5_encoder_model=sd3.identifier())),
                      run_context(tmp_path, manager)).outputs_of("load")
    assert (out.t5_encoder.tokenizer.submodel_type.value, out.t5_encoder.text_encoder.submodel_type.value) == (
        "tokenizer_3", "text_encoder_3")
    with pytest.raises(NodeExecutionError, match="expected a t5_encoder model, got model .* of type clip_embed") as e:
        run_graph(Graph.from_dict(loader_graph(ids["main"], t5_encoder_model=ids["clip_embed_model-same"])),
                  run_context(tmp_path, manager))
    assert e.value.field == "t5_encoder_model"


def test_separate_parts_with_the_mains_weights_give_the_mains_image(
        tmp_path: Path, models: tuple[ModelManager, dict[str, dict[str, Any]]]) -> None:
    manager, ids = models
    own = image_of(tmp_path / "own", manager, flux_graph(ids["main"], guidance=4.0))
    assert own.shape == (48, 32, 3) and own.std() > 3
    separate = image_of(tmp_path / "separate", manager,
                        flux_graph(ids["main"], guidance=4.0, loader={field: ids[f"{field}-same"] for field in PARTS}))
    assert np.array_equal(own, separate)
    for field in PARTS:  # another T5, CLIP or VAE: another image, so each selected part is the one used
        other = image_of(tmp_path / field, manager, flux_graph(ids["main"], guidance=4.0, loader={field: ids[f"{field}-other"]}))
        assert np.abs(other.astype(int) - own.astype(int)).max() > 10, field

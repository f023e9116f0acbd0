"""FLUX.2 [dev] nodes: flux2_dev_model_loader takes the parts from a [dev] diffusers main, or from the standalone models
or a source pipeline for a BFL transformer file, and refuses what cannot work naming the node and field; a graph of
separately installed parts gives the diffusers main's image exactly; the [dev] LoRA loaders add to the transformer
and the Mistral encoder fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from invokeai_provider.core.context import RunContext
from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.models.model_manager.install import install_model
from invokeai_provider.models.model_manager.manager import ModelManager
from invokeai_provider.models.model_manager.registry import ModelRegistry
from invokeai_provider.models.testing.tiny_catalog import seed_for
from invokeai_provider.models.testing.tiny_flux2 import (
    build_flux2_checkpoint,
    build_flux2_lora,
    build_flux2_model,
    build_flux2_vae,
)
from invokeai_provider.models.testing.tiny_install import install_tiny
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from helpers import edge, run_nodes, stored_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE, SEQ = 32, 256


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("flux2-dev-nodes")
    registry = ModelRegistry(root.as_uri())
    seed = seed_for("tiny-flux2-dev")  # the parts below are the tiny [dev] main's own weights

    def install(path: Path, name: str) -> dict[str, Any]:
        return install_model(registry, str(path), name=name, inplace=True).identifier()

    return {"manager": ModelManager(registry, device="cpu"),
            "main": install_tiny(registry, "main", "flux2", variant="dev").config.identifier(),
            "encoder": install_tiny(registry, "mistral_encoder").config.identifier(),
            "file": install(build_flux2_checkpoint(root / "flux2-dev.safetensors", seed=seed, dev=True), "dev-file"),
            "vae": install(build_flux2_vae(root / "ae.safetensors", seed=seed), "flux2-vae"),
            "klein": install(build_flux2_model(root / "klein", seed=1), "klein"),
            "lora": install(build_flux2_lora(root / "style.safetensors", seed=1), "style")}


def run_context(tmp_path: Path, manager: ModelManager) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="flux2-dev", run_id="r1"),
                      services={"models": manager})


def generate(run: RunContext, loader: dict[str, Any]) -> Any:
    nodes = {"loader": {"type": "flux2_dev_model_loader", "max_seq_len": SEQ, **loader},
             "prompt": {"type": "flux2_dev_text_encoder", "prompt": "a red fox", "max_seq_len": SEQ},
             "denoise": {"type": "flux2_denoise", "width": SIZE, "height": SIZE, "num_steps": 2, "seed": 1,
                         "guidance": 3.5},
             "decode": {"type": "flux2_vae_decode"}}
    edges = [edge("loader", "mistral_encoder", "prompt", "mistral_encoder"),
             edge("loader", "transformer", "denoise", "transformer"), edge("loader", "vae", "denoise", "vae"),
             edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
             edge("denoise", "latents", "decode", "latents"), edge("loader", "vae", "decode", "vae")]
    [decoded] = run_nodes(run, nodes, edges).outputs_of("decode")
    return np.asarray(stored_image(run, decoded).convert("RGB")).astype(np.int16)


def loader_output(run: RunContext, **fields: Any) -> Any:
    [out] = run_nodes(run, {"loader": {"type": "flux2_dev_model_loader", **fields}}).outputs_of("loader")
    return out


def test_separate_parts_give_the_mains_image(tmp_path: Path, models: dict[str, Any]) -> None:
    manager = models["manager"]
    main = generate(run_context(tmp_path / "main", manager), {"model": models["main"]})
    assert main.std() > 5
    parts = generate(run_context(tmp_path / "parts", manager), {"model": models["file"], "vae_model": models["vae"],
                                                                "mistral_encoder_model": models["encoder"]})
    from_source = generate(run_context(tmp_path / "source", manager),
                           {"model": models["file"], "mistral_source_model": models["main"]})
    assert np.array_equal(main, parts) and np.array_equal(main, from_source)


def test_the_loader_names_what_it_took_and_from_where(tmp_path: Path, models: dict[str, Any]) -> None:
    run = run_context(tmp_path, models["manager"])
    out = loader_output(run, model=models["main"])
    assert (out.max_seq_len, out.transformer.transformer.submodel_type.value) == (512, "transformer")
    assert out.mistral_encoder.text_encoder.key == out.vae.vae.key == models["main"]["key"]
    assert out.mistral_encoder.tokenizer.submodel_type.value == "tokenizer"
    # a Klein pipeline is a VAE source (the 32-channel VAE is shared) when the encoder is standalone
    out = loader_output(run, model=models["file"], mistral_encoder_model=models["encoder"],
                        mistral_source_model=models["klein"])
    assert (out.vae.vae.key, out.mistral_encoder.text_encoder.key) == (models["klein"]["key"], models["encoder"]["key"])


@pytest.mark.parametrize(("fields", "match"), [
    ({"model": "klein"}, r"loader.*model.*needs a FLUX.2 \[dev\] transformer.*klein_4b.*flux2_klein_model_loader"),
    ({"model": "file"}, r"loader.*vae_model.*ships no VAE"),
    ({"model": "file", "vae_model": "vae"}, r"loader.*mistral_encoder_model.*ships no text encoder"),
    ({"model": "file", "mistral_source_model": "file"}, r"loader.*mistral_source_model.*must be a diffusers"),
    ({"model": "file", "vae_model": "vae", "mistral_source_model": "klein"},
     r"loader.*mistral_source_model.*must be a FLUX.2 \[dev\] pipeline.*klein_4b"),
    ({"model": "main", "mistral_encoder_model": "vae"}, r"loader.*mistral_encoder_model"),
    ({"model": "main", "vae_model": "encoder"}, r"loader.*vae_model"),
])
def test_the_loader_refuses_what_cannot_work(tmp_path: Path, models: dict[str, Any], fields: dict[str, str],
                                             match: str) -> None:
    with pytest.raises(InvokeAIProviderError, match=match):
        loader_output(run_context(tmp_path, models["manager"]), **{k: models[v] for k, v in fields.items()})


def test_the_dev_lora_loaders_add_to_the_transformer_and_the_mistral_encoder(tmp_path: Path,
                                                                            models: dict[str, Any]) -> None:
    run = run_context(tmp_path, models["manager"])
    nodes = {"loader": {"type": "flux2_dev_model_loader", "model": models["main"]},
             "lora": {"type": "flux2_dev_lora_loader", "lora": models["lora"], "weight": 0.5},
             "collection": {"type": "flux2_dev_lora_collection_loader",
                            "loras": [{"lora": models["lora"], "weight": 0.25}]}}
    edges = [edge("loader", "transformer", "lora", "transformer"),
             edge("loader", "mistral_encoder", "lora", "mistral_encoder"),
             edge("loader", "transformer", "collection", "transformer"),
             edge("loader", "mistral_encoder", "collection", "mistral_encoder")]
    state = run_nodes(run, nodes, edges)
    [single], [collection] = state.outputs_of("lora"), state.outputs_of("collection")
    for out, weight in ((single, 0.5), (collection, 0.25)):
        assert [(lora.lora.key, lora.weight) for lora in out.transformer.loras] == [(models["lora"]["key"], weight)]
        assert [(lora.lora.key, lora.weight) for lora in out.mistral_encoder.loras] == [
            (models["lora"]["key"], weight)]
    again = {"loader": nodes["loader"], "lora": nodes["lora"],
             "twice": {"type": "flux2_dev_lora_loader", "lora": models["lora"]}}
    with pytest.raises(InvokeAIProviderError, match=r"twice.*already applied"):
        run_nodes(run, again, [edge("loader", "transformer", "lora", "transformer"),
                               edge("lora", "transformer", "twice", "transformer")])
    with pytest.raises(InvokeAIProviderError, match=r"lora.*lora"):
        run_nodes(run, {"lora": {"type": "flux2_dev_lora_loader", "lora": models["vae"]}})

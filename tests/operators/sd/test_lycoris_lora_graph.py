"""LyCORIS LoRAs through a graph: an installed kohya LoHa and LoKr (probed as LyCORIS LoRAs of SD1) change the image
through lora_loader, chained or alone; at weight 0 the image is byte-identical to no LoRA, and the cached UNet and
text encoder are left exactly as they were."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import edge, sd1_graph
from PIL import Image

from invokeai_provider.core.context import RunContext
from invokeai_provider.core.taxonomy import BaseModelType, ModelType, SubModelType
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.models.model_manager.binding import bind_model_fields
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """A registry with tiny-sd1 and kohya LoHa/LoKr files for it, and a model manager on it."""
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny import build_sd_model
    from invokeai_provider.models.testing.tiny_lycoris import build_lycoris_lora

    root = tmp_path_factory.mktemp("lycoris-graph")
    registry = ModelRegistry((root / "registry").as_uri())
    install_model(registry, str(build_sd_model("sd-1", root / "tiny-sd1")), name="tiny-sd1", inplace=True)
    for kind in ("loha", "lokr"):
        path = build_lycoris_lora("sd-1", root / f"{kind}.safetensors", kind=kind, seed=1)
        config = install_model(registry, str(path), name=f"tiny-{kind}", inplace=True)
        assert (config.type, config.format.value, config.base) == (ModelType.LoRA, "lycoris",
                                                                   BaseModelType.StableDiffusion1)
    return registry, ModelManager(registry, device="cpu")


def image(setup: tuple[Any, Any], tmp_path: Path, loras: list[tuple[str, float]]) -> bytes:
    """The PNG of sd1_graph with the LoRAs chained between the model loader and the prompts/denoiser."""
    registry, manager = setup
    nodes = {f"l{i}": {"type": "lora_loader", "lora": name, "weight": weight} for i, (name, weight) in enumerate(loras)}
    doc = sd1_graph(extra_nodes=nodes)
    if loras:
        doc["edges"] = [e for e in doc["edges"] if not (e["source"]["node_id"] == "model" and
                                                        e["source"]["field"] in ("unet", "clip"))]
        chain = ["model", *nodes]
        for source, dest in zip(chain, chain[1:]):
            doc["edges"] += [edge(source, "unet", dest, "unet"), edge(source, "clip", dest, "clip")]
        doc["edges"] += [edge(chain[-1], "unet", "denoise", "unet"), edge(chain[-1], "clip", "pos", "clip"),
                         edge(chain[-1], "clip", "neg", "clip")]
    run = RunContext(store=RunStore(LocalArtifactBackend(tmp_path / f"artifacts-{len(loras)}-{hash(str(loras))}"),
                                    dag_id="sd", run_id="r1"), services={"models": manager})
    state = run_graph(Graph.from_dict(bind_model_fields(doc, registry)), run)
    [output] = state.outputs_of("decode")
    return run.store.read("images", output.image.image_name)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def test_loha_and_lokr_change_the_image_and_weight_zero_is_no_lora(setup: tuple[Any, Any], tmp_path: Path) -> None:
    registry, manager = setup
    plain = image(setup, tmp_path, [])
    keys = [manager.cache_key(registry.find("tiny-sd1"), part) for part in (SubModelType.UNet, SubModelType.TextEncoder)]
    before = [{k: v.clone() for k, v in manager.cache.get(key, lambda: None).state_dict().items()} for key in keys]
    loha, lokr = image(setup, tmp_path, [("tiny-loha", 1.0)]), image(setup, tmp_path, [("tiny-lokr", 1.0)])
    both = image(setup, tmp_path, [("tiny-loha", 1.0), ("tiny-lokr", 1.0)])
    for name, data in (("loha", loha), ("lokr", lokr), ("both", both)):
        assert np.abs(pixels(plain) - pixels(data)).mean() > 0.5, name
    assert loha != lokr and both not in (loha, lokr)
    for key, saved in zip(keys, before):
        after = manager.cache.get(key, lambda: None).state_dict()
        assert all(torch.equal(saved[k], after[k]) for k in saved), key
    assert image(setup, tmp_path, [("tiny-loha", 0.0), ("tiny-lokr", 0.0)]) == plain
    assert image(setup, tmp_path, []) == plain

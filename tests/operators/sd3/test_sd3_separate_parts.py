"""sd3_model_loader with separate models for its parts, as InvokeAI lets a user pick them: a CLIP-L and a CLIP-G
embed (with their projections), a T5 encoder and an sd-3 VAE, each the tiny main's own weights, so the graph must
give the main's image exactly; a CLIP embed of the wrong variant is refused naming its field."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from invokeai_provider.core.context import RunContext
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from helpers import edge, graph, node

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def parts(sd3: tuple[Any, dict[str, Any]], sd3_seed: int, tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, dict[str, Any]]:
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.testing import tiny_sd3

    manager, _ = sd3
    folder = tmp_path_factory.mktemp("sd3-parts")
    built = {"clip_l": tiny_sd3.build_sd3_clip_embed(folder / "clip-l", "l", seed=sd3_seed),
             "clip_g": tiny_sd3.build_sd3_clip_embed(folder / "clip-g", "g", seed=sd3_seed),
             "t5": tiny_sd3.build_sd3_t5_encoder(folder / "t5", seed=sd3_seed),
             "vae": tiny_sd3.build_sd3_vae(folder / "vae", seed=sd3_seed)}
    return {name: install_model(manager.registry, str(path), name=f"sd3-{name}").model_dump(mode="json")
            for name, path in built.items()}


def identifier(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in ("key", "hash", "name", "base", "type")}


def t2i(main: dict[str, Any], **loader: Any) -> dict[str, Any]:
    return graph(
        node("load", "sd3_model_loader", model=main, **loader), node("pos", "sd3_text_encoder", prompt="a red fox"),
        node("neg", "sd3_text_encoder", prompt=""),
        node("denoise", "sd3_denoise", seed=5, steps=2, width=32, height=32, cfg_scale=4.0), node("decode", "sd3_l2i"),
        edges=[*(edge("load", f, p, f) for f in ("clip_l", "clip_g", "t5_encoder") for p in ("pos", "neg")),
               edge("load", "transformer", "denoise", "transformer"),
               edge("pos", "conditioning", "denoise", "positive_conditioning"),
               edge("neg", "conditioning", "denoise", "negative_conditioning"),
               edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")])


def run_context(tmp_path: Path, manager: Any) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="sd3", run_id="r1"),
                      services={"models": manager})


def test_the_parts_probe_as_invokeai_names_them(parts: dict[str, dict[str, Any]]) -> None:
    found = {name: (r["type"], r["base"], r["variant"]) for name, r in parts.items()}
    assert found == {"clip_l": ("clip_embed", "any", "large"), "clip_g": ("clip_embed", "any", "gigantic"),
                     "t5": ("t5_encoder", "any", None), "vae": ("vae", "sd-3", None)}


def test_separate_parts_give_the_mains_image(tmp_path: Path, sd3: tuple[Any, dict[str, Any]],
                                             parts: dict[str, dict[str, Any]]) -> None:
    manager, main = sd3
    run = run_context(tmp_path, manager)
    chosen = {"clip_l_model": identifier(parts["clip_l"]), "clip_g_model": identifier(parts["clip_g"]),
              "t5_encoder_model": identifier(parts["t5"]), "vae_model": identifier(parts["vae"])}
    state = run_graph(Graph.from_dict(t2i(main, **chosen)), run)
    [out] = state.outputs_of("load")
    assert (out.clip_l.text_encoder.key, out.clip_l.text_encoder.submodel_type.value) == (
        parts["clip_l"]["key"], "text_encoder_2")  # loaded with its projection
    assert (out.clip_l.tokenizer.key, out.clip_l.tokenizer.submodel_type.value) == (main["key"], "tokenizer")
    assert (out.clip_g.text_encoder.key, out.clip_g.tokenizer.submodel_type.value) == (parts["clip_g"]["key"],
                                                                                      "tokenizer_2")
    assert (out.t5_encoder.text_encoder.key, out.t5_encoder.text_encoder.submodel_type.value,
            out.t5_encoder.tokenizer.submodel_type.value) == (parts["t5"]["key"], "text_encoder_2", "tokenizer_2")
    assert out.vae.vae.key == parts["vae"]["key"]

    def image(state: Any) -> np.ndarray:
        [decoded] = state.outputs_of("decode")
        return np.asarray(Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name))))

    separate = image(state)
    own = image(run_graph(Graph.from_dict(t2i(main)), run))
    assert separate.std() > 3 and np.array_equal(separate, own)


@pytest.mark.parametrize("field, part", [("clip_l_model", "clip_g"), ("clip_g_model", "clip_l"),
                                         ("vae_model", "clip_l"), ("t5_encoder_model", "vae")])
def test_a_part_of_the_wrong_kind_names_its_field(tmp_path: Path, sd3: tuple[Any, dict[str, Any]],
                                                  parts: dict[str, dict[str, Any]], field: str, part: str) -> None:
    from invokeai_provider.errors import NodeExecutionError

    manager, main = sd3
    with pytest.raises(NodeExecutionError, match=f"node load.*field {field}: expected a") as caught:
        run_graph(Graph.from_dict(graph(node("load", "sd3_model_loader", model=main,
                                             **{field: identifier(parts[part])}))), run_context(tmp_path, manager))
    assert caught.value.field == field


def test_a_main_without_t5_needs_a_separate_t5_or_none(tmp_path: Path, sd3: tuple[Any, dict[str, Any]],
                                                       parts: dict[str, dict[str, Any]]) -> None:
    """An SD3.5 folder published without T5-XXL (model_index.json's text_encoder_3 null): wiring its T5 fails naming
    the missing part and the way out; a separate T5 encoder gives the full main's image."""
    import json
    import os
    import shutil

    from invokeai_provider.errors import NodeExecutionError
    from invokeai_provider.models.model_manager.install import install_model

    manager, main = sd3
    full = Path(manager.registry.get(main["key"]).path)
    folder = tmp_path / "sd3-without-t5"  # hard links: the tiny main's CLIP vocabularies are large to copy
    shutil.copytree(full, folder, copy_function=os.link,
                    ignore=shutil.ignore_patterns("text_encoder_3", "tokenizer_3", "model_index.json"))
    index = json.loads((full / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "text_encoder_3": [None, None],
                                                         "tokenizer_3": [None, None]}))
    without = install_model(manager.registry, str(folder), name="sd3-without-t5", inplace=True).identifier()
    run = run_context(tmp_path, manager)
    with pytest.raises(NodeExecutionError, match=r"Node pos.*ships no tokenizer_3.*t5_encoder_model"):
        run_graph(Graph.from_dict(t2i(without)), run)

    def image(state: Any) -> np.ndarray:
        [decoded] = state.outputs_of("decode")
        return np.asarray(Image.open(io.BytesIO(run.store.read("images", decoded.image.image_name))))

    separate = image(run_graph(Graph.from_dict(t2i(without, t5_encoder_model=identifier(parts["t5"]))), run))
    assert np.array_equal(separate, image(run_graph(Graph.from_dict(t2i(main)), run)))

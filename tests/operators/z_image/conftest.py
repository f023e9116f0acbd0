"""A tiny Z-Image model (ZImagePipeline folder) installed in a registry once per session, with its standalone parts,
and InvokeAI's Z-Image text-to-image graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from z_image_helpers import image_of, t2i_graph

from invokeai_provider.core.context import RunContext
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore


@pytest.fixture(scope="session")
def z_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """(model manager, the tiny Z-Image main's identifier)."""
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_z_image import build_z_image_model

    root = tmp_path_factory.mktemp("z-image-root")
    registry = ModelRegistry(root.as_uri())
    config = install_model(registry, str(build_z_image_model(root / "tiny-z-image", seed=3)), name="tiny-z-image",
                           inplace=True)
    return ModelManager(registry, device="cpu"), config.identifier()


@pytest.fixture(scope="session")
def z_image_parts(z_image: tuple[Any, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The session main's Qwen3 encoder and VAE as separate models (its seed: its own weights) and a kohya LoRA,
    installed once: a registry refuses the same files twice, and several test files need them. ``paths``: the
    built files."""
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.testing import tiny_z_image as tiny
    from invokeai_provider.models.testing.tiny_flux_parts import build_flux_vae

    folder = tmp_path_factory.mktemp("z-image-parts")
    built = {"qwen3": tiny.build_qwen3_encoder(folder / "qwen3", seed=3),
             "vae": build_flux_vae(folder / "z-image-vae", seed=3),
             "kohya": tiny.build_z_image_lora(folder / "kohya.safetensors", style="kohya", seed=5)}
    out: dict[str, Any] = {name: install_model(z_image[0].registry, str(path), name=f"z-{name}").identifier()
                           for name, path in built.items()}
    return {**out, "paths": built}


@pytest.fixture
def z_run(tmp_path: Path, z_image: tuple[Any, dict[str, Any]]) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="z-image", run_id="r1"),
                      services={"models": z_image[0]})


@pytest.fixture
def run_t2i(z_run: RunContext, z_image: tuple[Any, dict[str, Any]]) -> Callable[..., np.ndarray]:
    """Runs ``t2i_graph`` (its keyword arguments) in the engine and returns the decoded image."""
    from invokeai_provider.graph.engine import run_graph
    from invokeai_provider.graph.graph import Graph

    def run(**kwargs: Any) -> np.ndarray:
        graph = kwargs.pop("graph", None) or t2i_graph(z_image[1], **kwargs)
        return image_of(z_run, run_graph(Graph.from_dict(graph), z_run))

    return run



"""Tiny Stable Diffusion models, built once per test session and installed in a model registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from invokeai_provider.context import RunContext
from invokeai_provider.storage import LocalArtifactBackend, RunStore


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory):
    """A registry of tiny models: tiny-sd1, tiny-sd1-inpaint, tiny-sdxl, tiny-sdxl-vae, tiny-lora, tiny-embedding."""
    from invokeai_provider.models.install import install_model
    from invokeai_provider.models.registry import ModelRegistry
    from invokeai_provider.models.tiny import build_embedding, build_lora, build_sd_model

    root: Path = tmp_path_factory.mktemp("tiny-models")
    registry = ModelRegistry((root / "registry").as_uri())
    for name, base, variant in (("tiny-sd1", "sd-1", "normal"), ("tiny-sd1-inpaint", "sd-1", "inpaint"),
                                ("tiny-sdxl", "sdxl", "normal")):
        install_model(registry, str(build_sd_model(base, root / name, variant=variant)), name=name, inplace=True)
    # the SDXL pipeline's VAE on its own, as a standalone VAE model (its name tells the prober it is SDXL's)
    install_model(registry, str(root / "tiny-sdxl" / "vae"), name="tiny-sdxl-vae", inplace=True)
    install_model(registry, str(build_lora("sd-1", root / "tiny-lora.safetensors", style="kohya")), name="tiny-lora",
                  inplace=True)
    install_model(registry, str(build_embedding("sd-1", root / "tiny-embedding.safetensors", tokens=2)),
                  name="tiny-embedding", inplace=True)
    return registry


@pytest.fixture(scope="session")
def model_manager(tiny_registry):
    from invokeai_provider.models.manager import ModelManager

    return ModelManager(tiny_registry, device="cpu")


@pytest.fixture
def model_run(tmp_path: Path, model_manager) -> RunContext:
    """A run context whose nodes can load the tiny models."""
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="sd", run_id="r1"),
                      services={"models": model_manager})

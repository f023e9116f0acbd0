"""Tiny Stable Diffusion models, built once per test session and installed in a model registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from invokeai_provider.core.context import RunContext
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore


@pytest.fixture(scope="session")
def model_manager(tiny_registry):
    from invokeai_provider.models.model_manager.manager import ModelManager

    return ModelManager(tiny_registry, device="cpu")


@pytest.fixture
def model_run(tmp_path: Path, model_manager) -> RunContext:
    """A run context whose nodes can load the tiny models."""
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="sd", run_id="r1"),
                      services={"models": model_manager})

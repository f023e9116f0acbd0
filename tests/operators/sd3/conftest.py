"""The tiny SD3.5 main, built once for the SD3 node tests and installed in its own registry."""

from __future__ import annotations

from typing import Any

import pytest

SD3_SEED = 3  # the main's weights; its separate parts are built with the same seed


@pytest.fixture(scope="session")
def sd3_seed() -> int:
    return SD3_SEED


@pytest.fixture(scope="session")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """(a CPU model manager, the tiny-sd3 main's identifier)."""
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_sd3 import build_sd3_model

    root = tmp_path_factory.mktemp("sd3-root")
    registry = ModelRegistry(root.as_uri())
    config = install_model(registry, str(build_sd3_model(root / "tiny-sd3", seed=SD3_SEED)), name="tiny-sd3",
                           inplace=True)
    return ModelManager(registry, device="cpu"), config.identifier()

"""Shared fixtures: a run context over a temporary artifact store."""

from __future__ import annotations

from pathlib import Path
import pytest

from invokeai_provider.context import RunContext
from invokeai_provider.storage import LocalArtifactBackend, RunStore

@pytest.fixture
def run_context(tmp_path: Path) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="test", run_id="r1"))


def pytest_configure(config: pytest.Config) -> None:
    import nodes_for_tests  # noqa: F401 - registers the test_* node types


@pytest.fixture
def run(run_context: RunContext) -> RunContext:
    """The run context under the short name the node-family tests use."""
    return run_context

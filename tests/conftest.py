"""Shared fixtures: a run context over a temporary artifact store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from invokeai_provider.core.context import RunContext
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore


@pytest.fixture
def run_context(tmp_path: Path) -> RunContext:
    return RunContext(store=RunStore(LocalArtifactBackend(tmp_path / "artifacts"), dag_id="test", run_id="r1"))


def pytest_configure(config: pytest.Config) -> None:
    # Airflow reads its home when first imported: never let a test touch ~/airflow
    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="invokeai-airflow-home-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__INVOKEAI__TASK_RETRIES", "0")  # dag.test runs: failures fail at once
    import nodes_for_tests  # noqa: F401 - registers the test_* node types


@pytest.fixture
def run(run_context: RunContext) -> RunContext:
    """The run context under the short name the node-family tests use."""
    return run_context


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core box OpenMP spinning makes tiny inferences crawl."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory):
    """A registry of tiny models: tiny-sd1, tiny-sd1-inpaint, tiny-sdxl, tiny-sdxl-vae, tiny-lora, tiny-embedding."""
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny import build_embedding, build_lora, build_sd_model

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
def seaweed_s3(tmp_path_factory: pytest.TempPathFactory):
    """A SeaweedFS S3 server on loopback for the session, with bucket ``invokeai-test``; stopped afterwards."""
    from invokeai_provider.cluster.seaweed import SeaweedPorts, SeaweedServer, stop_process

    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), SeaweedPorts.free())
    process = server.start()
    try:
        server.ensure_bucket("invokeai-test")
        yield server
    finally:
        stop_process(process, timeout=3)

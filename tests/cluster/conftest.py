"""The local cluster for the end-to-end tests: started once per session on loopback, purged afterwards.

It needs the machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379). Without them the tests
skip, except under CI=true, where a missing service is a failure (.ci/run starts them).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from pathlib import Path
from typing import Iterator

import pytest

from cluster_client import ClusterClient

REPO = Path(__file__).resolve().parents[2]
TEST_WORKFLOWS = Path(__file__).with_name("workflows")
TEST_DAG_FILES = Path(__file__).with_name("dag_files")


def cluster_dags(target: Path) -> Path:
    """The example dags/ plus this folder's test workflows (the blocking-step DAG of the cancel test) and DAG
    files (the batch workflow compiled with explicit chunk sizes)."""
    shutil.copytree(REPO / "dags", target, ignore=shutil.ignore_patterns("__pycache__"))
    for workflow in TEST_WORKFLOWS.glob("*.json"):
        shutil.copy(workflow, target / "workflows" / workflow.name)
    for dag_file in TEST_DAG_FILES.glob("*.py"):
        shutil.copy(dag_file, target / dag_file.name)
    return target


def node_pack_path(target: Path) -> str:
    """A sys.path entry holding a copy of tests/nodes_for_tests.py registered as a node pack (an entry point in a
    bare dist-info), so the cluster's processes, the GPU runtime included, know the test_* node types."""
    shutil.copy(REPO / "tests" / "nodes_for_tests.py", target / "nodes_for_tests.py")
    info = target / "invokeai_provider_test_nodes-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: invokeai-provider-test-nodes\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("[invokeai_provider.nodes]\ntest_nodes = nodes_for_tests\n")
    return str(target)


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterClient]:
    missing = [name for name, port in (("PostgreSQL", 5432), ("Redis", 6379)) if not _answers(port)]
    if missing:
        message = f"{' and '.join(missing)} not answering on 127.0.0.1"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from invokeai_provider.cluster import cluster as local_cluster
    from invokeai_provider.cluster.seaweed import free_port

    state_dir = tmp_path_factory.mktemp("cluster")
    dags = cluster_dags(tmp_path_factory.mktemp("cluster-dags") / "dags")
    extra_path = node_pack_path(tmp_path_factory.mktemp("cluster-node-pack"))
    database = f"invokeai_e2e_{secrets.token_hex(4)}"
    try:
        with pytest.MonkeyPatch.context() as patch:  # the cluster's supervisor, started by up(), keeps this environment
            patch.setenv("PYTHONPATH", os.pathsep.join(p for p in (extra_path, os.environ.get("PYTHONPATH")) if p))
            settings = local_cluster.up(state_dir, dags, database=database, api_port=free_port(), redis_db=11,
                                        timeout=420)
        yield ClusterClient(settings)
    finally:
        local_cluster.down(state_dir, purge=True)

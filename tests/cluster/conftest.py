"""The local cluster for the end-to-end tests: started once per session on loopback, purged afterwards.

It needs the machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379). Without them the tests
skip, except under CI=true, where a missing service is a failure (.ci/run starts them).
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Iterator

import pytest

from cluster_client import ClusterClient

REPO = Path(__file__).resolve().parents[2]


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
    database = f"invokeai_e2e_{secrets.token_hex(4)}"
    try:
        settings = local_cluster.up(state_dir, REPO / "dags", database=database, api_port=free_port(), redis_db=11,
                                    timeout=420)
        yield ClusterClient(settings)
    finally:
        local_cluster.down(state_dir, purge=True)

"""The S3 fixtures of the storage tests: the session's SeaweedFS server as the default connection."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from helpers import conn_json
from invokeai_provider.cluster.seaweed import SeaweedServer
from invokeai_provider.storage.base import backend_for_uri
from invokeai_provider.storage.s3 import S3ArtifactBackend

BUCKET = "invokeai-test"


@pytest.fixture
def s3_env(seaweed_s3: SeaweedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SeaweedServer:
    """The default connection points at the session's server; nothing from AWS_* or ~/.aws leaks in."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("AIRFLOW__INVOKEAI__"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AIRFLOW_CONN_INVOKEAI_S3", conn_json(seaweed_s3))
    return seaweed_s3


@pytest.fixture
def root() -> str:
    """A fresh prefix in the bucket for each test."""
    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def backend(s3_env: SeaweedServer, root: str) -> S3ArtifactBackend:
    found = backend_for_uri(root)
    assert isinstance(found, S3ArtifactBackend)
    return found

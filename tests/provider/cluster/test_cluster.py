"""The local cluster's settings and environment (the running cluster is tested in tests/cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invokeai_provider.cluster import cluster
from invokeai_provider.cli.app import main


def test_settings_round_trip_with_private_secrets(tmp_path: Path) -> None:
    settings = cluster.ClusterSettings.new(tmp_path / "state", tmp_path / "dags", database="e2e_db", api_port=29999,
                                           redis_db=3)
    settings.save()
    loaded = cluster.ClusterSettings.load(tmp_path / "state")
    assert loaded == settings
    assert (loaded.api_url, loaded.redis_url) == ("http://127.0.0.1:29999", "redis://127.0.0.1:6379/3")
    assert loaded.sql_alchemy_conn.endswith("/e2e_db") and len(loaded.admin_password) >= 12
    assert (tmp_path / "state" / "settings.json").stat().st_mode & 0o077 == 0
    ports = set(settings.s3_ports.values())
    assert len(ports) == 4 and all(p + 10000 <= 65535 for p in ports)  # weed's gRPC ports are port + 10000


def test_database_name_must_be_an_identifier(tmp_path: Path) -> None:
    with pytest.raises(cluster.ClusterError, match="database name"):
        cluster.ClusterSettings.new(tmp_path, tmp_path, database='x"; DROP DATABASE postgres; --')


def test_environment_is_the_clusters_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = cluster.ClusterSettings.new(tmp_path / "state", tmp_path / "dags")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__TASK_RETRIES", "0")
    env = cluster.service_env(settings, "scheduler")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "AIRFLOW__INVOKEAI__TASK_RETRIES" not in env  # the shell's Airflow settings do not leak in
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == settings.sql_alchemy_conn
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+{settings.sql_alchemy_conn}"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{settings.api_url}/execution/"
    connection = json.loads(env["AIRFLOW_CONN_INVOKEAI_S3"])
    assert connection["extra"]["endpoint_url"] == settings.seaweed.endpoint_url
    assert connection["password"] == settings.s3_secret_key
    assert "INVOKEAI_WORKER_NAME" not in env


def test_workers_serve_their_queue_and_name_themselves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = cluster.ClusterSettings.new(tmp_path / "state", tmp_path / "dags")
    for name, queues in cluster.WORKER_QUEUES.items():
        command = cluster.service_command(name)
        assert command[1:4] == ["celery", "worker", "--queues"] and command[4] == ",".join(queues)
        env = cluster.service_env(settings, name)
        assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "invokeai_provider.cluster.cluster.worker_hostname"
        monkeypatch.setenv("INVOKEAI_WORKER_NAME", env["INVOKEAI_WORKER_NAME"])
        assert cluster.worker_hostname().split(".", 1)[0] == name


def concurrency(command: list[str]) -> str:
    return command[command.index("--concurrency") + 1]


def test_the_gpu_worker_hands_segments_to_the_runtime(tmp_path: Path) -> None:
    settings = cluster.ClusterSettings.new(tmp_path / "state", tmp_path / "dags")
    assert settings.runtime_device in ("cpu", "cuda:0")
    socket_path = settings.runtime_socket
    assert socket_path and len(socket_path) <= 100
    runtime = cluster.service_command(cluster.RUNTIME_SERVICE, settings)
    assert runtime[1:5] == ["-m", "invokeai_provider.cli", "runtime", "serve"]
    assert runtime[runtime.index("--socket") + 1] == socket_path
    assert runtime[runtime.index("--device") + 1] == settings.runtime_device
    assert cluster.service_env(settings, "worker-gpu")["AIRFLOW__INVOKEAI__RUNTIME_SOCKET"] == socket_path
    assert "AIRFLOW__INVOKEAI__RUNTIME_SOCKET" not in cluster.service_env(settings, "worker-default")
    # several task processes queue at the one runtime; without it, one task at a time loads its own models
    assert concurrency(cluster.service_command("worker-gpu", settings)) == str(cluster.GPU_WORKER_CONCURRENCY) != "1"
    plain = cluster.ClusterSettings.new(tmp_path / "plain", tmp_path / "dags", runtime=False)
    assert plain.runtime_socket is None and concurrency(cluster.service_command("worker-gpu", plain)) == "1"
    assert "AIRFLOW__INVOKEAI__RUNTIME_SOCKET" not in cluster.service_env(plain, "worker-gpu")


def test_a_long_state_dir_puts_the_socket_where_af_unix_can_reach(tmp_path: Path) -> None:
    settings = cluster.ClusterSettings.new(tmp_path / ("x" * 120), tmp_path / "dags")
    assert len(settings.runtime_socket) <= 100
    assert settings.runtime_socket != cluster.ClusterSettings.new(tmp_path / ("y" * 120), tmp_path).runtime_socket


def test_status_without_a_cluster_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "status", "--state-dir", str(tmp_path / "none")]) == 1
    assert "no cluster in" in capsys.readouterr().err


def test_env_prints_shell_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.ClusterSettings.new(tmp_path / "state", tmp_path / "dags").save()
    assert main(["cluster", "env", "--state-dir", str(tmp_path / "state")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "export AIRFLOW__CORE__EXECUTOR=CeleryExecutor" in lines
    assert any(line.startswith("export AIRFLOW_CONN_INVOKEAI_S3='{") for line in lines)

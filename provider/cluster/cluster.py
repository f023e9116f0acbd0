"""A local distributed cluster on loopback: the deployment of docker-compose.yml, without Docker.

`invokeai-airflow cluster up` starts, on 127.0.0.1 only: Airflow on the machine's PostgreSQL server (a
database of its own), the CeleryExecutor on Redis, a SeaweedFS S3 server for artifacts and models, and the
api-server, scheduler, dag-processor, triggerer, two Celery workers (queue ``default`` and queue ``gpu``)
and the GPU runtime the gpu worker's tasks hand their segments to (on cuda:0, or the CPU on a host without
a GPU; ``--no-runtime`` leaves it out). A supervisor process owns them and restarts any that dies, as a
container runtime would; ``down`` stops the supervisor, which stops them all. Everything lives in one state directory (``./.cluster``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from invokeai_provider.cluster.seaweed import SeaweedPorts, SeaweedServer, stop_process
from invokeai_provider.errors import InvokeAIProviderError

ARTIFACT_BUCKET = "invokeai-artifacts"
MODEL_BUCKET = "invokeai-models"
S3_CONN_ID = "invokeai_s3"
ADMIN_USER = "admin"
VIEWER_USER = "viewer"  # a second UI user (role viewer) that [invokeai] tenant_access gives no tenant

GPU_WORKER_CONCURRENCY = 4  # with the runtime; 1 without (each task process would load its own models)
RUNTIME_SERVICE = "runtime"  # the per-GPU runtime the gpu worker's tasks hand their segments to
RUNTIME_SOCKET_NAME = "gpu0.sock"

# The topology both this module and docker-compose.yml implement (a test checks they agree).
AIRFLOW_SERVICES: dict[str, list[str]] = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer"],
    "worker-default": ["celery", "worker", "--queues", "default", "--concurrency", "4"],
    # several task processes, one GPU runtime: while one task's segment runs on the device, the next tasks are
    # started, parse their DAG and queue at the runtime, so Airflow's per-task cost overlaps the GPU work
    "worker-gpu": ["celery", "worker", "--queues", "gpu", "--concurrency", str(GPU_WORKER_CONCURRENCY)],
}
WORKER_QUEUES: dict[str, tuple[str, ...]] = {"worker-default": ("default",), "worker-gpu": ("gpu",)}


class ClusterError(InvokeAIProviderError):
    """The cluster is missing, did not start, or is not healthy."""


@dataclass
class ClusterSettings:
    """Everything a cluster needs to be started again the same way; saved as ``settings.json``."""

    state_dir: str
    dags_folder: str
    database: str = "invokeai_airflow"
    postgres_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432"
    redis_url: str = "redis://127.0.0.1:6379/5"
    api_port: int = 28080
    s3_ports: dict[str, int] = field(default_factory=dict)
    admin_password: str = ""
    viewer_password: str = ""
    jwt_secret: str = ""
    s3_access_key: str = "invokeai"
    s3_secret_key: str = ""
    heartbeat_timeout: int = 30
    artifact_root: str = f"s3://{ARTIFACT_BUCKET}/"
    model_root: str = f"s3://{MODEL_BUCKET}/"
    runtime_device: Optional[str] = "cpu"  # cuda:0 when the host has a GPU; None: no runtime, tasks load in-process
    gpu_worker_concurrency: int = GPU_WORKER_CONCURRENCY  # task processes of the gpu worker (1 without runtime)
    runtime_max_batch: Optional[int] = None  # denoise nodes per batch in the runtime; None: gpu_worker_concurrency

    @property
    def runtime_socket(self) -> Optional[str]:
        """In the state dir; in a per-cluster folder of /tmp when that path is too long for AF_UNIX."""
        if not self.runtime_device:
            return None
        path = Path(self.state_dir) / "runtime" / RUNTIME_SOCKET_NAME
        if len(str(path)) > 100:
            digest = hashlib.sha256(self.state_dir.encode()).hexdigest()[:12]
            path = Path(tempfile.gettempdir()) / f"invokeai-runtime-{digest}" / RUNTIME_SOCKET_NAME
        return str(path)

    @property
    def home(self) -> Path:
        return Path(self.state_dir) / "airflow"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sql_alchemy_conn(self) -> str:
        return f"{self.postgres_url}/{self.database}"

    @property
    def seaweed(self) -> SeaweedServer:
        return SeaweedServer(Path(self.state_dir) / "seaweedfs", SeaweedPorts(**self.s3_ports),
                             access_key=self.s3_access_key, secret_key=self.s3_secret_key)

    def save(self) -> None:
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        path = Path(self.state_dir) / "settings.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, state_dir: Path) -> "ClusterSettings":
        path = state_dir / "settings.json"
        if not path.is_file():
            raise ClusterError(f"no cluster in {state_dir} (run `invokeai-airflow cluster up` first)")
        return cls(**json.loads(path.read_text()))

    @classmethod
    def new(cls, state_dir: Path, dags_folder: Path, *, database: Optional[str] = None,
            api_port: Optional[int] = None, redis_db: Optional[int] = None,
            runtime: bool = True) -> "ClusterSettings":
        ports = SeaweedPorts.free()
        settings = cls(state_dir=str(state_dir.resolve()), dags_folder=str(dags_folder.resolve()),
                       s3_ports=asdict(ports), admin_password=secrets.token_urlsafe(12),
                       viewer_password=secrets.token_urlsafe(12),
                       jwt_secret=secrets.token_urlsafe(32), s3_secret_key=secrets.token_urlsafe(24))
        if database:
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
                raise ClusterError(f"database name {database!r}: expected lowercase letters, digits and '_'")
            settings.database = database
        if api_port:
            settings.api_port = api_port
        if redis_db is not None:
            settings.redis_url = f"redis://127.0.0.1:6379/{redis_db}"
        settings.runtime_device = default_runtime_device() if runtime else None
        return settings


def default_runtime_device() -> str:
    """cuda:0 when ``nvidia-smi`` lists a GPU, else cpu (without importing torch into the CLI)."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    return "cuda:0" if listed.returncode == 0 and "GPU 0" in listed.stdout else "cpu"


def airflow_env(settings: ClusterSettings) -> dict[str, str]:
    """The configuration every Airflow component of the cluster shares (docker-compose.yml sets the same keys)."""
    home = settings.home
    s3 = settings.seaweed
    connection = {"conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
                  "extra": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}}
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": settings.dags_folder,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.api_url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin,{VIEWER_USER}:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.sql_alchemy_conn,
        "AIRFLOW__CELERY__BROKER_URL": settings.redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + settings.sql_alchemy_conn,
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "invokeai_provider.cluster.celery_config.CELERY_CONFIG",
        "AIRFLOW__API__BASE_URL": settings.api_url,
        "AIRFLOW__API__PORT": str(settings.api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": settings.jwt_secret,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(settings.heartbeat_timeout),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
        "AIRFLOW__INVOKEAI__ARTIFACT_ROOT": settings.artifact_root,
        "AIRFLOW__INVOKEAI__MODEL_ROOT": settings.model_root,
        "AIRFLOW__INVOKEAI__MODEL_CACHE_DIR": str(Path(settings.state_dir) / "model-cache"),
        "AIRFLOW__INVOKEAI__GPU_QUEUE": "gpu",
        "AIRFLOW__INVOKEAI__LIBRARY_INDEX_DIR": str(Path(settings.state_dir) / "library-index"),
        f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": json.dumps(connection),
    }


def worker_hostname() -> str:
    """``[core] hostname_callable`` for the cluster's workers: the host name plus the worker's name, so the
    task instances show which worker ran them although both run on one machine."""
    name = os.environ.get("INVOKEAI_WORKER_NAME")
    host = socket.getfqdn()
    return f"{name}.{host}" if name else host


def service_env(settings: ClusterSettings, name: str) -> dict[str, str]:
    """The cluster's configuration only: Airflow settings of the calling shell do not leak in."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env = {**inherited, **airflow_env(settings)}
    if name in WORKER_QUEUES:
        env["INVOKEAI_WORKER_NAME"] = name
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "invokeai_provider.cluster.cluster.worker_hostname"
    if name == "worker-gpu" and settings.runtime_socket:
        env["AIRFLOW__INVOKEAI__RUNTIME_SOCKET"] = settings.runtime_socket
    return env


def service_command(name: str, settings: Optional[ClusterSettings] = None) -> list[str]:
    if name == RUNTIME_SERVICE:
        assert settings is not None and settings.runtime_device and settings.runtime_socket
        # by default as many denoise nodes in one batch as the gpu worker runs tasks at a time
        max_batch = settings.runtime_max_batch or settings.gpu_worker_concurrency
        return [sys.executable, "-m", "invokeai_provider.cli", "runtime", "serve", "--device", settings.runtime_device,
                "--socket", settings.runtime_socket, "--max-batch", str(max_batch)]
    args = list(AIRFLOW_SERVICES[name])
    if name == "worker-gpu" and settings is not None:
        args[args.index("--concurrency") + 1] = str(settings.gpu_worker_concurrency if settings.runtime_device else 1)
    if name in WORKER_QUEUES:
        # one log folder on one host: the api-server reads task logs from it, no log server needed
        args += ["--celery-hostname", f"{name}@%h", "--skip-serve-logs"]
    return [str(Path(sys.executable).parent / "airflow"), *args]


# --- preparing ------------------------------------------------------------------------------------


def _admin_sql(settings: ClusterSettings, statement: str, *args: Any) -> Optional[tuple]:
    """One statement on the server's ``postgres`` database, outside a transaction (CREATE/DROP DATABASE)."""
    import psycopg2

    dsn = settings.postgres_url.replace("postgresql+psycopg2://", "postgresql://") + "/postgres"
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, args or None)
            return cursor.fetchone() if cursor.description else None
    finally:
        connection.close()


def ensure_database(settings: ClusterSettings) -> None:
    if _admin_sql(settings, "SELECT 1 FROM pg_database WHERE datname = %s", settings.database) is None:
        _admin_sql(settings, f'CREATE DATABASE "{settings.database}"')


def drop_database(settings: ClusterSettings) -> None:
    _admin_sql(settings, f'DROP DATABASE IF EXISTS "{settings.database}" WITH (FORCE)')


def flush_broker(settings: ClusterSettings) -> None:
    """Empties the cluster's Redis database: queued messages of a previous cluster mean nothing now."""
    import redis

    redis.Redis.from_url(settings.redis_url).flushdb()


def prepare_home(settings: ClusterSettings) -> None:
    home = settings.home
    (home / "logs").mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    users = {ADMIN_USER: settings.admin_password}
    if settings.viewer_password:  # settings of a cluster made before the viewer existed have none
        users[VIEWER_USER] = settings.viewer_password
    passwords.write_text(json.dumps(users))
    passwords.chmod(0o600)


def run_airflow(settings: ClusterSettings, *args: str, timeout: float = 600) -> str:
    result = subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], env=service_env(settings, "cli"),
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise ClusterError(f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


# --- supervising ----------------------------------------------------------------------------------


class Supervisor:
    """Starts the services and restarts any that exits, until SIGTERM; then stops them all."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.state = Path(settings.state_dir)
        self.processes: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self.stopping = False

    def _start(self, name: str) -> None:
        log = open(self.state / "logs" / f"{name}.log", "ab")
        if name == "s3":
            self.settings.seaweed.write_config()
            command = self.settings.seaweed.command()
            env = dict(os.environ)
        else:
            command, env = service_command(name, self.settings), service_env(self.settings, name)
        self.processes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True,
                                                cwd=self.state)
        log.close()
        self._write_pids()

    def _write_pids(self) -> None:
        pids = {name: process.pid for name, process in self.processes.items()}
        payload = {"supervisor": os.getpid(), "services": pids, "restarts": self.restarts}
        tmp = self.state / "pids.json.tmp"
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, self.state / "pids.json")

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        for name in ["s3", *([RUNTIME_SERVICE] if self.settings.runtime_device else []), *AIRFLOW_SERVICES]:
            self._start(name)
        while not self.stopping:
            for name, process in list(self.processes.items()):
                if process.poll() is not None and not self.stopping:
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    with open(self.state / "logs" / f"{name}.log", "ab") as log:
                        log.write(f"\n--- supervisor: exited with {process.returncode}; restarting ---\n".encode())
                    self._kill_group(process)
                    time.sleep(1.0)
                    self._start(name)
            time.sleep(0.5)
        for name in reversed(list(self.processes)):
            stop_process(self.processes[name], timeout=20)
        (self.state / "pids.json").unlink(missing_ok=True)

    @staticmethod
    def _kill_group(process: subprocess.Popen) -> None:
        """A worker's forked task processes outlive it in its process group; a restart must not leave them."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _on_term(self, *_: Any) -> None:
        self.stopping = True


# --- commands -------------------------------------------------------------------------------------


def read_pids(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "pids.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) counts as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def health(settings: ClusterSettings) -> dict[str, Any]:
    """The api-server's health report (metadatabase, scheduler, triggerer, dag processor), or why not."""
    try:
        with urllib.request.urlopen(f"{settings.api_url}/api/v2/monitor/health", timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"error": str(exc)}


def runtime_report(settings: ClusterSettings) -> Optional[dict[str, Any]]:
    """The GPU runtime's status (model cache, jobs), None while it does not answer; {} without a runtime."""
    if not settings.runtime_socket:
        return {}
    from invokeai_provider.execution.runtime.client import RuntimeClient

    try:
        return RuntimeClient(settings.runtime_socket).status(timeout=5)
    except InvokeAIProviderError:
        return None


def status(state_dir: Path) -> dict[str, Any]:
    settings = ClusterSettings.load(state_dir)
    pids = read_pids(state_dir)
    services = {name: {"pid": pid, "alive": _alive(pid), "restarts": pids.get("restarts", {}).get(name, 0)}
                for name, pid in pids.get("services", {}).items()}
    return {"state_dir": str(state_dir), "api_url": settings.api_url, "supervisor": pids.get("supervisor"),
            "supervisor_alive": _alive(pids.get("supervisor")), "services": services,
            "health": health(settings) if services else {}, "s3_endpoint": settings.seaweed.endpoint_url,
            "runtime": runtime_report(settings) if services else {},
            "artifact_root": settings.artifact_root, "model_root": settings.model_root}


def wait_healthy(settings: ClusterSettings, timeout: float = 240) -> dict[str, Any]:
    """Until the api-server reports every component healthy and both workers answer a Celery ping."""
    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pids = read_pids(Path(settings.state_dir))
        if pids and not _alive(pids.get("supervisor")):
            raise ClusterError(f"the cluster supervisor died; see {settings.state_dir}/logs/supervisor.log")
        crashing = [name for name, count in pids.get("restarts", {}).items() if count >= 3]
        if crashing:
            raise ClusterError(f"{', '.join(crashing)} keep exiting; last lines of {crashing[0]}'s log:\n"
                               + _log_tail(settings, crashing[0]))
        report = health(settings)
        components = [report.get(k, {}).get("status") for k in ("metadatabase", "scheduler", "triggerer",
                                                                 "dag_processor")]
        if components and all(s == "healthy" for s in components) and set(WORKER_QUEUES) <= ping_workers(settings) \
                and runtime_report(settings) is not None:
            return report
        time.sleep(2)
    raise ClusterError(f"cluster not healthy after {timeout:.0f} s: {report}; logs in {settings.state_dir}/logs")


def _log_tail(settings: ClusterSettings, name: str, lines: int = 30) -> str:
    path = Path(settings.state_dir) / "logs" / f"{name}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"


def ping_workers(settings: ClusterSettings) -> set[str]:
    """The names of the Celery workers answering on the cluster's broker."""
    from celery import Celery

    app = Celery(broker=settings.redis_url)
    try:
        replies = app.control.ping(timeout=1.0) or []
    except Exception:  # noqa: BLE001 - broker not reachable yet
        return set()
    finally:
        app.close()
    return {name.split("@", 1)[0] for reply in replies for name in reply}


def up(state_dir: Path, dags_folder: Path, *, database: Optional[str] = None, api_port: Optional[int] = None,
       redis_db: Optional[int] = None, demo_model: bool = True, runtime: bool = True,
       timeout: float = 300) -> ClusterSettings:
    """Starts the cluster (or finds it running) and waits until it is healthy."""
    state_dir = state_dir.resolve()
    if (state_dir / "settings.json").is_file():
        settings = ClusterSettings.load(state_dir)
        if _alive(read_pids(state_dir).get("supervisor")):
            wait_healthy(settings, timeout)
            return settings
    else:
        settings = ClusterSettings.new(state_dir, dags_folder, database=database, api_port=api_port,
                                       redis_db=redis_db, runtime=runtime)
        settings.save()
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    ensure_database(settings)
    flush_broker(settings)
    prepare_home(settings)
    run_airflow(settings, "db", "migrate")
    log = open(state_dir / "logs" / "supervisor.log", "ab")
    subprocess.Popen([sys.executable, "-m", "invokeai_provider.cluster.cluster", "supervise", str(state_dir)],
                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    _wait_for_s3(settings, timeout)
    if demo_model:
        install_demo_model(settings)
    wait_healthy(settings, timeout)
    return settings


def _wait_for_s3(settings: ClusterSettings, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not read_pids(Path(settings.state_dir)).get("services", {}).get("s3"):
        if time.monotonic() > deadline:
            raise ClusterError("the supervisor did not start SeaweedFS")
        time.sleep(0.2)
    server = settings.seaweed
    server.wait_ready(timeout)
    for bucket in (ARTIFACT_BUCKET, MODEL_BUCKET):
        server.ensure_bucket(bucket, timeout)


def install_demo_model(settings: ClusterSettings) -> None:
    """The tiny SD1.5 model of the demo, in the cluster's S3 model root (skipped when registered)."""
    result = subprocess.run([sys.executable, "-c", "from invokeai_provider.cli.demo import ensure_demo_model; "
                             "ensure_demo_model(None)"],
                            env=service_env(settings, "cli"), capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(f"installing the demo model failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


def down(state_dir: Path, *, purge: bool = False, timeout: float = 60) -> None:
    """Stops the supervisor and so every service; ``purge`` also drops the database and the state dir."""
    state_dir = state_dir.resolve()
    pids = read_pids(state_dir)
    supervisor = pids.get("supervisor")
    if _alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.3)
    for pid in pids.get("services", {}).values():  # anything left behind (supervisor killed hard)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if purge and (state_dir / "settings.json").is_file():
        settings = ClusterSettings.load(state_dir)
        drop_database(settings)
        flush_broker(settings)
        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m invokeai_provider.cluster.cluster supervise STATE_DIR``: the supervisor process itself."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2 or args[0] != "supervise":
        print("usage: python -m invokeai_provider.cluster.cluster supervise STATE_DIR", file=sys.stderr)
        return 2
    Supervisor(ClusterSettings.load(Path(args[1]))).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

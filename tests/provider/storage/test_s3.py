"""The S3 artifact backend against a real SeaweedFS server: semantics, multipart, presigned URLs, retries
across a server restart, connection resolution (env, URI, default chain, a task's Execution API), and
engine and CLI runs writing images to S3."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import REPO_ROOT, conn_json, run_image_records
from invokeai_provider.errors import ArtifactNotFoundError, InvalidArtifactKeyError
from invokeai_provider.airflow.hooks import InvokeAIS3Hook
from invokeai_provider.storage.s3 import S3ArtifactBackend, connection_settings
from invokeai_provider.cluster.seaweed import SeaweedPorts, SeaweedServer, stop_process
from invokeai_provider.storage.base import RunStore, backend_for_uri, open_run_store
from invokeai_provider.storage.library.names import run_image_name

BUCKET = "invokeai-test"
MIB = 1024 * 1024


@contextmanager
def captured(logger_name: str) -> Iterator[list[str]]:
    """Messages logged on ``logger_name`` (a handler of its own: Airflow reconfigures the root logger)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler, level = Collect(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def raw_key(backend: S3ArtifactBackend, key: str) -> str:
    return f"{backend.prefix}/{key}"


# --- the backend contract -----------------------------------------------------------------------------


def test_round_trip_exists_delete_list(backend: S3ArtifactBackend, seaweed_s3: SeaweedServer) -> None:
    backend.write_bytes("runs/a/images/x.png", b"\x89PNG one")
    backend.write_bytes("runs/a/images/b.png", b"two")
    backend.write_bytes("runs/a/manifest/image-b.png.json", b"{}")
    backend.write_bytes("runs/b/x.bin", b"three")

    assert backend.read_bytes("runs/a/images/x.png") == b"\x89PNG one"
    assert backend.exists("runs/a/images/x.png") and not backend.exists("runs/a/images/none.png")
    assert list(backend.list("")) == ["runs/a/images/b.png", "runs/a/images/x.png", "runs/a/manifest/image-b.png.json",
                                      "runs/b/x.bin"]
    assert list(backend.list("runs/a/images")) == ["runs/a/images/b.png", "runs/a/images/x.png"]
    assert list(backend.list("runs/a/images/")) == ["runs/a/images/b.png", "runs/a/images/x.png"]
    assert list(backend.list("runs/a/imag")) == []  # a folder prefix, not a string prefix
    assert backend.uri("runs/a/images/x.png") == f"s3://{BUCKET}/{backend.prefix}/runs/a/images/x.png"

    head = seaweed_s3.client().head_object(Bucket=BUCKET, Key=raw_key(backend, "runs/a/images/x.png"))
    assert head["ContentType"] == "image/png" and head["ContentLength"] == 8

    backend.write_bytes("runs/a/images/x.png", b"overwritten")  # a retried task rewrites its own key
    assert backend.read_bytes("runs/a/images/x.png") == b"overwritten"
    backend.delete("runs/a/images/x.png")
    backend.delete("runs/a/images/x.png")  # deleting a missing key is fine
    assert not backend.exists("runs/a/images/x.png")
    assert list(backend.list("runs/a/images")) == ["runs/a/images/b.png"]


def test_list_is_paginated_and_sorted(backend: S3ArtifactBackend) -> None:
    keys = [f"many/{i:04d}.bin" for i in range(1105)]  # more than one ListObjectsV2 page (1000)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: backend.write_bytes(k, b"x"), reversed(keys)))
    assert list(backend.list("many")) == keys


def test_missing_object_errors_name_the_s3_uri(backend: S3ArtifactBackend, tmp_path: Path) -> None:
    expected = f"no artifact at s3://{BUCKET}/{backend.prefix}/images/none.png"
    with pytest.raises(ArtifactNotFoundError, match=expected):
        backend.read_bytes("images/none.png")
    with pytest.raises(ArtifactNotFoundError, match=expected):
        backend.download_file("images/none.png", tmp_path / "out" / "none.png")
    assert list((tmp_path / "out").iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b", "a/../../b", "a/./b", "", "a\\b"])
def test_keys_cannot_escape_the_prefix(backend: S3ArtifactBackend, bad: str, tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")
    for attempt in (lambda: backend.write_bytes(bad, b"x"), lambda: backend.read_bytes(bad),
                    lambda: backend.exists(bad), lambda: backend.upload_file(bad, source),
                    lambda: backend.download_file(bad, tmp_path / "d"), lambda: backend.url(bad),
                    lambda: backend.delete(bad)):
        with pytest.raises(InvalidArtifactKeyError):
            attempt()
    if bad:
        with pytest.raises(InvalidArtifactKeyError):
            list(backend.list(bad))


@pytest.mark.parametrize("uri, error", [
    ("s3://Bad_Bucket/x", ValueError), ("s3://ab/x", ValueError), ("s3://bucket/../x", InvalidArtifactKeyError),
    ("s3://bucket/a//b", InvalidArtifactKeyError),
])
def test_bad_s3_roots_are_refused(uri: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        backend_for_uri(uri)


# --- large files -----------------------------------------------------------------------------------


def test_multipart_upload_and_download(s3_env: SeaweedServer, root: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__INVOKEAI__S3_MULTIPART_THRESHOLD_MB", "5")
    backend = backend_for_uri(root)
    big = tmp_path / "weights.safetensors"
    big.write_bytes(os.urandom(12 * MIB))
    backend.upload_file("models/weights.safetensors", big)

    head = s3_env.client().head_object(Bucket=BUCKET, Key=raw_key(backend, "models/weights.safetensors"))
    assert head["ContentLength"] == 12 * MIB
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB parts: a multipart upload

    small = tmp_path / "config.json"
    small.write_bytes(b'{"a": 1}')
    backend.upload_file("models/config.json", small)
    assert "-" not in s3_env.client().head_object(Bucket=BUCKET, Key=raw_key(backend, "models/config.json"))["ETag"]

    target = tmp_path / "cache" / "nested" / "weights.safetensors"
    backend.download_file("models/weights.safetensors", target)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    assert [p.name for p in target.parent.iterdir()] == ["weights.safetensors"]


def test_failed_upload_leaves_no_object_and_no_pending_multipart_upload(
        s3_env: SeaweedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FAILING", conn_json(s3_env))  # a client of its own, to break on purpose
    backend = backend_for_uri(f"s3://failing@{BUCKET}/t-{uuid.uuid4().hex[:10]}")
    backend.multipart_threshold_mb = 5
    key = "models/broken.safetensors"
    # the leftovers of an earlier try that was killed before it could abort its upload
    stale = s3_env.client().create_multipart_upload(Bucket=BUCKET, Key=raw_key(backend, key))["UploadId"]

    parts = []
    lock = threading.Lock()

    def break_after_first_part(**kwargs: Any) -> None:
        with lock:
            parts.append(kwargs["params"])
            if len(parts) > 1:
                raise OSError("simulated: the source disk went away mid-upload")

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(16 * MIB))
    backend.client.meta.events.register("before-call.s3.UploadPart", break_after_first_part)
    try:
        with pytest.raises(OSError, match="source disk went away"):
            backend.upload_file(key, big)
    finally:
        backend.client.meta.events.unregister("before-call.s3.UploadPart", break_after_first_part)

    assert parts, "the upload never reached UploadPart: it was not multipart"
    assert not backend.exists(key)
    pending = s3_env.client().list_multipart_uploads(Bucket=BUCKET, Prefix=raw_key(backend, key)).get("Uploads", [])
    assert pending == [], f"pending multipart uploads left behind (the stale one was {stale}): {pending}"


# --- presigned URLs ---------------------------------------------------------------------------------


def test_presigned_url_fetches_the_object(backend: S3ArtifactBackend, monkeypatch: pytest.MonkeyPatch,
                                          root: str) -> None:
    backend.write_bytes("images/x.png", b"pixels")
    url = backend.url("images/x.png")
    assert url.startswith(backend.client.meta.endpoint_url) and "X-Amz-Expires=604800" in url
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == b"pixels"
    assert "X-Amz-Expires=60&" in backend.url("images/x.png", expires_in=60)
    with pytest.raises(ValueError, match="1 to 604800"):
        backend.url("images/x.png", expires_in=604801)

    monkeypatch.setenv("AIRFLOW__INVOKEAI__PRESIGN_EXPIRY_SECONDS", "3600")
    assert "X-Amz-Expires=3600&" in backend_for_uri(root).url("images/x.png")
    tampered = url.replace("images/x.png", "images/y.png")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(tampered, timeout=30)


def test_image_records_and_library_on_s3(s3_env: SeaweedServer, root: str) -> None:
    from PIL import Image

    from invokeai_provider.core.context import InvocationContext, RunContext
    from invokeai_provider.core.registry import InvocationRegistry

    store = open_run_store(root, tenant="acme", dag_id="t2i", run_id="manual__1")
    run = RunContext(store=store, name_prefix="task.", workflow_json={"name": "wf"})
    node = InvocationRegistry.get_invocation_class("test_prompt")(id="node")
    first = InvocationContext(run, node, "node").images.save(Image.new("RGB", (6, 4), "red"))
    record = InvocationContext(run, node, "node").images.save(Image.new("RGB", (6, 4), "blue"))  # a retry
    assert first["image_name"] == record["image_name"] == run_image_name(store.prefix, "task.node-0.png")

    key = f"acme/runs/t2i/manual__1/images/{record['image_name']}"
    assert record["uri"] == f"{root}/{key}"
    with urllib.request.urlopen(record["url"], timeout=30) as response:
        body = response.read()
    assert body == store.read("images", record["image_name"])
    with Image.open(io.BytesIO(body)) as png:
        assert png.getpixel((0, 0)) == (0, 0, 255)

    [entry] = run_image_records(store)  # the retry overwrote its library record instead of adding one
    assert entry["key"] == key and store.backend.url(entry["key"]).split("?")[0] == record["url"].split("?")[0]
    name = record["image_name"]
    assert list(store.backend.list("acme/library")) == [f"acme/library/images/{name}.json",
                                                        f"acme/library/thumbnails/{name.removesuffix('.png')}.webp"]


# --- retries ----------------------------------------------------------------------------------------


def test_slowdown_answers_are_retried(s3_env: SeaweedServer, monkeypatch: pytest.MonkeyPatch, root: str) -> None:
    from botocore.awsrequest import AWSResponse

    monkeypatch.setenv("AIRFLOW_CONN_SLOW", conn_json(s3_env))
    backend = backend_for_uri(root.replace("s3://", "s3://slow@"))
    answers = iter([503, 500, 503])

    def slow_down(**kwargs: Any) -> Any:
        status = next(answers, None)
        if status is None:
            return None
        code = "SlowDown" if status == 503 else "InternalError"
        return AWSResponse("http://test", status, {}, None), {
            "Error": {"Code": code, "Message": "simulated"}, "ResponseMetadata": {"HTTPStatusCode": status}}

    backend.client.meta.events.register("before-call.s3.PutObject", slow_down)
    try:
        with captured("invokeai_provider.storage.s3") as logs:
            backend.write_bytes("x.bin", b"eventually")
    finally:
        backend.client.meta.events.unregister("before-call.s3.PutObject", slow_down)
    assert backend.read_bytes("x.bin") == b"eventually"
    retries = [m for m in logs if "retry" in m]
    assert len(retries) == 3 and "SlowDown" in retries[0] and "InternalError" in retries[1], logs

    backend.retry_seconds = 0.1
    from invokeai_provider.errors import ArtifactStoreUnavailableError

    answers = iter([503] * 100)
    backend.client.meta.events.register("before-call.s3.PutObject", slow_down)
    try:
        with pytest.raises(ArtifactStoreUnavailableError, match="s3_retry_seconds"):
            backend.write_bytes("y.bin", b"never")
    finally:
        backend.client.meta.events.unregister("before-call.s3.PutObject", slow_down)


@pytest.mark.slow
def test_write_survives_a_server_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_env: SeaweedServer) -> None:
    server = SeaweedServer(tmp_path / "weed", SeaweedPorts.free())
    process = server.start()
    try:
        server.ensure_bucket("restart-test")
        monkeypatch.setenv("AIRFLOW_CONN_RESTARTING", conn_json(server))
        backend = backend_for_uri("s3://restarting@restart-test/r")
        backend.write_bytes("before.bin", b"written before the restart")

        stopping = time.monotonic()
        stop_process(process, timeout=3)  # SIGKILL after 3 s: weed's graceful stop can take longer
        print(f"server stopped in {time.monotonic() - stopping:.1f} s")
        outcome: dict[str, Any] = {}
        payload = os.urandom(256 * 1024)

        def write() -> None:
            try:
                backend.write_bytes("during.bin", payload)
                outcome["done_after_s"] = time.monotonic() - stopped
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        with captured("invokeai_provider.storage.s3") as logs:
            stopped = time.monotonic()
            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(5)
            assert writer.is_alive(), f"the write did not wait for the server: {outcome}"
            restarting = time.monotonic()
            process = server.start()  # same data dir and ports
            print(f"server restarted in {time.monotonic() - restarting:.1f} s")
            writer.join(150)
        assert not writer.is_alive() and "error" not in outcome, outcome
        assert any("EndpointConnectionError" in m and "retry" in m for m in logs), logs
        assert backend.read_bytes("during.bin") == payload
        assert backend.read_bytes("before.bin") == b"written before the restart"
        print(f"write completed {outcome['done_after_s']:.1f} s after the stop, {len(logs)} retries logged")
    finally:
        stop_process(process, timeout=3)


# --- connection resolution --------------------------------------------------------------------------


def test_default_connection_and_hook(s3_env: SeaweedServer, backend: S3ArtifactBackend) -> None:
    assert backend.conn_id == "invokeai_s3"
    settings = connection_settings("invokeai_s3")
    assert settings.from_connection and settings.endpoint_url == s3_env.endpoint_url
    assert settings.access_key_id == s3_env.access_key and settings.region_name == "us-east-1"
    backend.write_bytes("k", b"v")
    hook = InvokeAIS3Hook()
    assert hook.s3_conn_id == "invokeai_s3" and hook.get_conn() is backend.client  # one client per process
    assert hook.test_connection()[0]
    assert BUCKET in {b["Name"] for b in hook.get_client().list_buckets()["Buckets"]}


def test_named_connection_in_the_uri_wins(s3_env: SeaweedServer, monkeypatch: pytest.MonkeyPatch, root: str) -> None:
    from urllib.parse import quote

    # the default connection is wrong on purpose; `other` is an aws-type connection in URI form
    monkeypatch.setenv("AIRFLOW_CONN_INVOKEAI_S3", conn_json(s3_env, password="wrong-secret"))
    monkeypatch.setenv("AIRFLOW_CONN_OTHER", f"aws://{s3_env.access_key}:{quote(s3_env.secret_key, safe='')}@/"
                                             f"?endpoint_url={quote(s3_env.endpoint_url, safe='')}&region_name=us-east-1")
    named = backend_for_uri(root.replace("s3://", "s3://other@"))
    assert named.conn_id == "other"
    named.write_bytes("x", b"through other")
    assert named.read_bytes("x") == b"through other"
    with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId|403"):
        backend_for_uri(root).read_bytes("x")

    monkeypatch.setenv("AIRFLOW__INVOKEAI__S3_CONN_ID", "other")  # the option changes the default
    configured = backend_for_uri(root)
    assert configured.conn_id == "other" and configured.read_bytes("x") == b"through other"


def test_missing_connection_falls_back_to_the_aws_environment(s3_env: SeaweedServer, monkeypatch: pytest.MonkeyPatch,
                                                              root: str) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_INVOKEAI_S3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    backend = backend_for_uri(root)
    with captured("invokeai_provider.storage.s3") as logs:
        backend.write_bytes("from-env", b"default chain")
    assert any("no Airflow connection 'invokeai_s3'" in m and "AWS_*" in m for m in logs), logs
    assert s3_env.client().get_object(Bucket=BUCKET, Key=raw_key(backend, "from-env"))["Body"].read() == \
        b"default chain"
    assert not connection_settings("invokeai_s3").from_connection


def test_provider_declares_the_connection_type() -> None:
    from invokeai_provider.get_provider_info import get_provider_info

    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == InvokeAIS3Hook.conn_type == "invokeai_s3"
    module, _, name = conn_type["hook-class-name"].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is InvokeAIS3Hook
    assert set(conn_type["conn-fields"]) == {"endpoint_url", "region_name"}
    assert set(conn_type["ui-field-behaviour"]["hidden-fields"]) == {"schema", "port", "host"}
    options = get_provider_info()["config"]["invokeai"]["options"]
    assert {"s3_conn_id", "presign_expiry_seconds", "s3_multipart_threshold_mb", "s3_retry_seconds"} <= set(options)
    assert all(options[o]["description"] for o in options)


# --- runs writing to S3 -----------------------------------------------------------------------------


def seed_png(color: str = "green") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


SAVE_GRAPH = {"id": "g", "nodes": {"save": {"id": "save", "type": "save_image", "image": {"image_name": "seed.png"}}},
              "edges": []}


def check_saved_image(server: SeaweedServer, root: str, run_prefix: str, image_name: str) -> dict[str, Any]:
    """The PNG and its library record, read straight from the bucket."""
    from PIL import Image

    from invokeai_provider.core.context import GRAPH_CHUNK

    client = server.client()
    base = root.removeprefix(f"s3://{BUCKET}/") + "/" + run_prefix
    body = client.get_object(Bucket=BUCKET, Key=f"{base}/images/{image_name}")["Body"].read()
    with Image.open(io.BytesIO(body)) as png:
        assert png.size == (8, 8) and png.getpixel((3, 3)) == (0, 128, 0)
        assert json.loads(png.info[GRAPH_CHUNK])["nodes"]["save"]["type"] == "save_image"
    tenant = run_prefix.split("/", 1)[0]
    library = root.removeprefix(f"s3://{BUCKET}/") + f"/{tenant}/library"
    entry = json.loads(client.get_object(Bucket=BUCKET, Key=f"{library}/images/{image_name}.json")["Body"].read())
    assert entry["key"] == f"{run_prefix}/images/{image_name}"
    with urllib.request.urlopen(backend_for_uri(root).url(entry["key"]), timeout=30) as response:
        assert response.read() == body
    return entry


def test_engine_run_writes_images_to_s3(s3_env: SeaweedServer, root: str) -> None:
    from invokeai_provider.core.context import RunContext
    from invokeai_provider.graph.engine import run_graph
    from invokeai_provider.graph.graph import Graph

    store = open_run_store(root, dag_id="save", run_id="r1")
    store.write("images", "seed.png", seed_png())
    state = run_graph(Graph.from_dict(SAVE_GRAPH), RunContext(store=store, graph_json=SAVE_GRAPH))
    [output] = state.outputs_of("save")
    entry = check_saved_image(s3_env, root, "default/runs/save/r1", output.image.image_name)
    assert entry["node_id"] == "save" and entry["session_id"] == "r1"


def test_cli_graph_run_with_an_s3_artifact_root(s3_env: SeaweedServer, root: str, tmp_path: Path) -> None:
    """A plain process (no Airflow task): the connection comes from AIRFLOW_CONN_INVOKEAI_S3."""
    document = tmp_path / "save.json"
    document.write_text(json.dumps(SAVE_GRAPH))
    RunStore(backend_for_uri(root), dag_id="save", run_id="cli1").write("images", "seed.png", seed_png())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW__INVOKEAI__"))}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    result = subprocess.run([sys.executable, "-m", "invokeai_provider.cli", "graph", "run", str(document),
                             "--artifacts", root, "--run-id", "cli1"],
                            env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    image_name = json.loads(result.stdout)["save"][0]["image"]["image_name"]
    assert f"saved {root}/default/runs/save/cli1/images/{image_name}" in result.stderr
    check_saved_image(s3_env, root, "default/runs/save/cli1", image_name)


TASK_DAG = '''
from airflow.sdk import dag, task


@dag(dag_id="s3_task_path", schedule=None)
def s3_task_path():
    @task
    def save(root: str) -> dict:
        from invokeai_provider.core.context import RunContext
        from invokeai_provider.graph.engine import run_graph
        from invokeai_provider.graph.graph import Graph
        from invokeai_provider.storage.base import open_run_store

        store = open_run_store(root, dag_id="save", run_id="task1")
        state = run_graph(Graph.from_dict({graph!r}), RunContext(store=store, graph_json={graph!r}))
        return {{"image_name": state.outputs_of("save")[0].image.image_name}}

    save({root!r})


s3_task_path()
'''

TASK_SCRIPT = '''
import json, os, sys
from pathlib import Path
from invokeai_provider.cluster.local_airflow import prepare_home, migrate_database, run_dag
home = prepare_home(Path(sys.argv[1]))
migrate_database(home)
from airflow.models import Connection
from airflow.utils.session import create_session
with create_session() as session:
    session.add(Connection.from_json(os.environ.pop("S3_CONN_FOR_DB"), conn_id="invokeai_s3"))
from invokeai_provider.storage.s3 import connection_settings
outside = connection_settings("invokeai_s3").from_connection  # a plain process does not read the database
result = run_dag(home, "s3_task_path")
print(json.dumps({"outside": outside, "state": result.state, "tasks": result.tasks}))
'''


@pytest.mark.slow
def test_task_reads_the_connection_through_the_execution_api(s3_env: SeaweedServer, root: str, tmp_path: Path) -> None:
    """The connection lives only in Airflow's database: a task gets it from the Execution API."""
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "s3_task_path.py").write_text(TASK_DAG.format(graph=SAVE_GRAPH, root=root))
    RunStore(backend_for_uri(root), dag_id="save", run_id="task1").write("images", "seed.png", seed_png())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW"))}
    env.update({"S3_CONN_FOR_DB": conn_json(s3_env), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")})
    result = subprocess.run([sys.executable, "-c", TASK_SCRIPT, str(home)], env=env, capture_output=True, text=True,
                            timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["outside"] is False
    assert outcome["state"] == "success", (outcome, result.stderr[-5000:])
    [image] = run_image_records(RunStore(backend_for_uri(root), dag_id="save", run_id="task1"))
    check_saved_image(s3_env, root, "default/runs/save/task1", image["image_name"])

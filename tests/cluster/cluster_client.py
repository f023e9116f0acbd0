"""What the end-to-end tests do with the cluster, through Airflow's official REST client and boto3."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import airflow_client.client as af

from invokeai_provider.cluster.cluster import ADMIN_USER, ARTIFACT_BUCKET, ClusterSettings, read_pids, service_env

FINISHED = {"success", "failed"}


def _value(enum_or_str: Any) -> str:
    return getattr(enum_or_str, "value", enum_or_str)


class ClusterClient:
    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.host = settings.api_url
        self.api = af.ApiClient(af.Configuration(host=self.host, access_token=self.token()))
        self.s3 = settings.seaweed.client()

    def token(self, user: str = ADMIN_USER) -> str:
        """A JWT from the simple auth manager (``POST /auth/token``) for the cluster's admin or viewer."""
        password = self.settings.admin_password if user == ADMIN_USER else self.settings.viewer_password
        body = json.dumps({"username": user, "password": password}).encode()
        request = urllib.request.Request(f"{self.host}/auth/token", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["access_token"]

    def http(self, method: str, path: str, body: Any = None, *, token: Optional[str] = None,
             content_type: str = "application/json") -> tuple[int, bytes]:
        """A request to the api-server (its plugin apps too) as the admin, or with ``token`` ('' for none)."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type}
        bearer = self.token() if token is None else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        request = urllib.request.Request(f"{self.host}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    # --- DAGs and runs ----------------------------------------------------------------------------

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the dag processor has stored the DAG; then unpauses it."""
        dags = af.DAGApi(self.api)
        deadline = time.monotonic() + timeout
        while True:
            try:
                dags.get_dag(dag_id)
                break
            except af.ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(2)
        dags.patch_dag(dag_id, af.DAGPatchBody(is_paused=False))

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run = af.DagRunApi(self.api).trigger_dag_run(dag_id, af.TriggerDAGRunPostBody(logical_date=None, conf=conf))
        return run.dag_run_id

    def mark_failed(self, dag_id: str, run_id: str) -> None:
        """What a user does in the UI to stop a run: its running tasks are killed."""
        af.DagRunApi(self.api).patch_dag_run(dag_id, run_id, af.DAGRunPatchBody(state="failed"))

    def run_ids(self, dag_id: str) -> list[str]:
        return [r.dag_run_id for r in af.DagRunApi(self.api).get_dag_runs(dag_id, limit=100).dag_runs]

    def state(self, dag_id: str, run_id: str) -> str:
        return _value(af.DagRunApi(self.api).get_dag_run(dag_id, run_id).state)

    def wait(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(dag_id, run_id)
            if state in FINISHED:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} of {dag_id} still {state} after {timeout:.0f} s: "
                                   f"{self.task_instances(dag_id, run_id)}")
            time.sleep(1.0)

    def task_instances(self, dag_id: str, run_id: str) -> list[Any]:
        return af.TaskInstanceApi(self.api).get_task_instances(dag_id, run_id, limit=1000).task_instances

    def task_tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[Any]:
        api = af.TaskInstanceApi(self.api)
        return api.get_mapped_task_instance_tries(dag_id, run_id, task_id, map_index).task_instances

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1) -> Any:
        entry = af.XComApi(self.api).get_xcom_entry(dag_id, task_id, run_id, key, map_index=map_index,
                                                    deserialize=True)
        value = getattr(entry, "actual_instance", entry).value  # a oneOf wrapper around the entry
        return json.loads(value) if isinstance(value, str) else value

    def asset_events(self, dag_id: str, run_id: str) -> list[Any]:
        events = af.AssetApi(self.api).get_asset_events(source_dag_id=dag_id, source_run_id=run_id, limit=1000)
        return events.asset_events

    # --- objects ----------------------------------------------------------------------------------

    def keys(self, prefix: str, bucket: str = ARTIFACT_BUCKET) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)

    def objects_by_kind(self, prefix: str) -> dict[str, list[str]]:
        """A run prefix's keys by their first folder (images, manifest, tensors, conditioning)."""
        kinds: dict[str, list[str]] = {}
        for key in self.keys(prefix):
            kinds.setdefault(key[len(prefix):].split("/", 1)[0], []).append(key)
        return kinds

    def library_records(self, tenant: str, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The image library's records of a run's images (one object each under <tenant>/library/images/)."""
        records = []
        for key in self.keys(f"{tenant}/library/images/"):
            record = json.loads(self.s3.get_object(Bucket=ARTIFACT_BUCKET, Key=key)["Body"].read())
            if (record.get("dag_id"), record.get("run_id")) == (dag_id, run_id):
                records.append(record)
        return sorted(records, key=lambda r: (r.get("item_index") or 0, r["image_name"]))

    def png(self, key: str, bucket: str = ARTIFACT_BUCKET) -> Any:
        """The stored PNG as a loaded PIL image (its text chunks in ``.text``)."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        image.load()
        return image

    def png_text(self, key: str, bucket: str = ARTIFACT_BUCKET) -> dict[str, str]:
        return dict(self.png(key, bucket).text)

    def run_prefix(self, tenant: str, dag_id: str, run_id: str) -> str:
        from invokeai_provider.storage.base import safe_segment

        return f"{tenant}/runs/{safe_segment(dag_id)}/{safe_segment(run_id)}/"


def worker_of(hostname: Optional[str]) -> str:
    """``worker-gpu.<host>`` -> ``worker-gpu`` (the cluster's hostname_callable)."""
    return (hostname or "").split(".", 1)[0]


def service_pid(settings: ClusterSettings, name: str) -> int:
    return int(read_pids(Path(settings.state_dir))["services"][name])


def task_logs(settings: ClusterSettings, dag_id: str, run_id: str) -> str:
    """Every task log of a run, for the message of a failed assertion."""
    base = Path(settings.home) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in sorted(base.glob("**/*.log")))


def wait_for_task_log(settings: ClusterSettings, dag_id: str, run_id: str, needle: str, *, attempt: int = 1,
                      timeout: float = 300) -> str:
    """Until some task's log of this run and attempt contains ``needle`` (the cluster's workers write
    task logs to the shared log folder); returns that log's path."""
    base = Path(settings.home) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in base.glob(f"**/attempt={attempt}.log"):
            if needle in log.read_text(errors="replace"):
                return str(log)
        time.sleep(0.2)
    raise TimeoutError(f"no attempt={attempt} log of {dag_id}/{run_id} mentions {needle!r} after {timeout:.0f} s")


# --- a workflow on the gpu worker -----------------------------------------------------------------------------------


def install_models(cluster: ClusterClient, code: str) -> None:
    """Runs Python ``code`` (an install of tiny models) in the cluster's CLI environment, so its ``ModelRegistry(None)``
    is the cluster's S3 model root, as a user's install command would."""
    result = subprocess.run([sys.executable, "-c", code], env=service_env(cluster.settings, "cli"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def install_demo_model(cluster: ClusterClient, family: str) -> None:
    """The tiny main model of ``family`` installed into the cluster's model root as `demo --family` installs it."""
    install_models(cluster, f"from invokeai_provider.cli.demo import ensure_demo_model; "
                            f"ensure_demo_model(None, {family!r})")


def run_on_gpu_worker(cluster: ClusterClient, dag_id: str, conf: dict[str, Any], *,
                      timeout: float = 600) -> tuple[str, list[Any]]:
    """Triggers ``dag_id`` over REST once the dag processor has it, waits for the run to succeed (the task logs in
    the message if not) and checks that its gpu-queue tasks ran on worker-gpu; returns the run id and those tasks."""
    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger(dag_id, conf)
    assert cluster.wait(dag_id, run_id, timeout=timeout) == "success", \
        task_logs(cluster.settings, dag_id, run_id)[-4000:]
    gpu = [ti for ti in cluster.task_instances(dag_id, run_id) if ti.queue == "gpu"]
    assert gpu and all(worker_of(ti.hostname) == "worker-gpu" for ti in gpu)
    return run_id, gpu


def run_example_on_gpu_runtime(cluster: ClusterClient, family: str, dag_id: str,
                               conf: dict[str, Any]) -> dict[str, Any]:
    """A family's example text-to-image DAG on the cluster: its tiny model installed as `demo --family` does, the
    run triggered with ``conf`` (its ``tenant`` too), its gpu segments run on worker-gpu in the GPU runtime (not in
    the task process), one image stored under the run's prefix in S3. Returns that image's InvokeAI metadata."""
    install_demo_model(cluster, family)
    run_id, gpu = run_on_gpu_worker(cluster, dag_id, conf)
    images = [k for k in cluster.keys(cluster.run_prefix(conf["tenant"], dag_id, run_id)) if "/images/" in k]
    assert len(images) == 1
    for ti in gpu:
        usage = cluster.xcom(dag_id, run_id, ti.task_id, "invokeai_usage", map_index=ti.map_index)
        assert usage["runtime"]["socket"] == cluster.settings.runtime_socket
    return json.loads(cluster.png_text(images[0])["invokeai_metadata"])

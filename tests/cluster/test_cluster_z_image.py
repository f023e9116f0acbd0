"""A Z-Image workflow on the local cluster: the example Z-Image text-to-image DAG, with the tiny Z-Image model
installed into the cluster's S3 model root as `demo --family z-image` installs it, triggered over REST; its segment
runs on the gpu worker's runtime, the image lands in S3 with InvokeAI's metadata."""

from __future__ import annotations

import json
import subprocess
import sys

from cluster_client import ClusterClient, task_logs, worker_of
from invokeai_provider.cluster.cluster import service_env

DAG = "z-image-text-to-image"


def test_z_image_text_to_image_runs_on_the_gpu_worker(cluster: ClusterClient) -> None:
    install = subprocess.run([sys.executable, "-c", "from invokeai_provider.cli.demo import ensure_demo_model; "
                              "ensure_demo_model(None, 'z-image')"], env=service_env(cluster.settings, "cli"),
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    cluster.wait_for_dag(DAG)
    conf = {"prompt": "a red fox in the snow", "seed": 5, "steps": 2, "width": 64, "height": 32, "tenant": "acme"}
    run_id = cluster.trigger(DAG, conf)
    state = cluster.wait(DAG, run_id)
    assert state == "success", task_logs(cluster.settings, DAG, run_id)[-4000:]
    tis = cluster.task_instances(DAG, run_id)
    gpu = [ti for ti in tis if ti.queue == "gpu"]
    assert gpu and all(worker_of(ti.hostname) == "worker-gpu" for ti in gpu)
    images = [k for k in cluster.keys(cluster.run_prefix("acme", DAG, run_id)) if "/images/" in k]
    assert len(images) == 1
    metadata = json.loads(cluster.png_text(images[0])["invokeai_metadata"])
    assert (metadata["seed"], metadata["positive_prompt"], metadata["steps"]) == (5, "a red fox in the snow", 2)
    assert (metadata["width"], metadata["height"], metadata["generation_mode"]) == (64, 32, "z_image_txt2img")
    assert metadata["model"]["name"] == "tiny-z-image"
    for ti in gpu:  # the Z-Image segment ran in the runtime, not in the task process
        usage = cluster.xcom(DAG, run_id, ti.task_id, "invokeai_usage", map_index=ti.map_index)
        assert usage["runtime"]["socket"] == cluster.settings.runtime_socket

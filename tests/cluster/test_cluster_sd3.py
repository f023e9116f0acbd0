"""An SD3.5 workflow on the local cluster: the example SD3.5 text-to-image DAG, with the tiny SD3.5 model installed
into the cluster's S3 model root as `demo --family sd3` installs it, triggered over REST; its segment runs on the gpu
worker's runtime, the image lands in S3 with InvokeAI's metadata."""

from __future__ import annotations

import json
import subprocess
import sys

from cluster_client import ClusterClient, worker_of
from invokeai_provider.cluster.cluster import service_env

DAG = "sd3-text-to-image"


def test_sd3_text_to_image_runs_on_the_gpu_worker(cluster: ClusterClient) -> None:
    install = subprocess.run([sys.executable, "-c", "from invokeai_provider.cli.demo import ensure_demo_model; "
                              "ensure_demo_model(None, 'sd3')"], env=service_env(cluster.settings, "cli"),
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    cluster.wait_for_dag(DAG)
    conf = {"prompt": "a lighthouse in a storm", "seed": 5, "steps": 2, "cfg_scale": 4.0, "width": 48,
            "height": 48, "tenant": "acme"}
    run_id = cluster.trigger(DAG, conf)
    assert cluster.wait(DAG, run_id) == "success"
    tis = cluster.task_instances(DAG, run_id)
    gpu = [ti for ti in tis if ti.queue == "gpu"]
    assert gpu and all(worker_of(ti.hostname) == "worker-gpu" for ti in gpu)
    images = [k for k in cluster.keys(cluster.run_prefix("acme", DAG, run_id)) if "/images/" in k]
    assert len(images) == 1
    metadata = json.loads(cluster.png_text(images[0])["invokeai_metadata"])
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "cfg_scale", "width", "height",
                                     "positive_prompt")} == {
        "generation_mode": "sd3_txt2img", "seed": 5, "steps": 2, "cfg_scale": 4.0, "width": 48, "height": 48,
        "positive_prompt": "a lighthouse in a storm"}
    for ti in gpu:  # the SD3 segment ran in the runtime, not in the task process
        usage = cluster.xcom(DAG, run_id, ti.task_id, "invokeai_usage", map_index=ti.map_index)
        assert usage["runtime"]["socket"] == cluster.settings.runtime_socket

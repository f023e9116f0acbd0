"""Faults on the local cluster: a GPU worker or the GPU runtime killed mid-denoise, and the S3 server stopped
during a run.

Compiled tasks retry (``[invokeai] task_retries``), and artifact names are deterministic in (run, task,
map index, node), so a retried try overwrites what a killed one may have written: one image per prompt,
no duplicates, nothing left over.
"""

from __future__ import annotations

import json
import os
import signal

from cluster_client import ClusterClient, service_pid, wait_for_task_log, worker_of

BATCH = "prompt-list-batch"
SD15 = "sd15-text-to-image"
SD15_TASK = "sd1_5_text_to_image"


def test_gpu_worker_killed_during_denoise_is_retried_without_duplicates(cluster: ClusterClient) -> None:
    cluster.wait_for_dag(BATCH)
    prompts = ["a red barn in a wheat field", "a blue rowing boat on a lake", "a green hill under clouds"]
    conf = {"positive_prompt_value_batch": prompts, "seed_value_batch": [11, 22, 33], "model": "tiny-sd15",
            "steps": 60, "width": 128, "height": 128}
    run_id = cluster.trigger(BATCH, conf)

    wait_for_task_log(cluster.settings, BATCH, run_id, "denoise")  # a first try is denoising now
    worker = service_pid(cluster.settings, "worker-gpu")
    os.killpg(worker, signal.SIGKILL)  # the worker, its pool and the task process it forked

    assert cluster.wait(BATCH, run_id, timeout=900) == "success"
    assert service_pid(cluster.settings, "worker-gpu") != worker  # the supervisor started a new one
    gpu_tis = [ti for ti in cluster.task_instances(BATCH, run_id) if ti.queue == "gpu"]
    assert len(gpu_tis) == 1 and all(worker_of(ti.hostname) == "worker-gpu" for ti in gpu_tis)  # one chunk of 3
    retried = [ti for ti in gpu_tis if ti.try_number >= 2]
    assert retried, "the killed try was not retried"
    tries = cluster.task_tries(BATCH, run_id, retried[0].task_id, retried[0].map_index)
    assert [t.state for t in tries][-1] == "success" and len(tries) >= 2

    prefix = cluster.run_prefix("default", BATCH, run_id)
    objects = cluster.objects_by_kind(prefix)
    assert set(objects) == {"images"}, objects  # intermediates stay in memory
    images = objects["images"]
    assert len(images) == 3, images
    made = sorted(json.loads(cluster.png_text(k)["invokeai_metadata"])["positive_prompt"] for k in images)
    assert made == sorted(prompts)
    assert len(cluster.library_records("default", BATCH, run_id)) == 3  # one record per image, none twice
    recorded = sorted(r["uri"] for ti in gpu_tis
                      for r in cluster.xcom(BATCH, run_id, ti.task_id, "image_records", map_index=ti.map_index))
    assert recorded == sorted(f"s3://invokeai-artifacts/{k}" for k in images)  # no orphan, no duplicate


def test_runtime_killed_during_denoise_fails_the_try_and_the_retry_runs_in_the_restarted_runtime(
        cluster: ClusterClient) -> None:
    cluster.wait_for_dag(SD15)
    conf = {"positive_prompt": "a copper kettle", "seed": 5, "tenant": "acme", "model": "tiny-sd15",
            "denoise_steps": 80, "noise_width": 128, "noise_height": 128}
    run_id = cluster.trigger(SD15, conf)
    first_log = wait_for_task_log(cluster.settings, SD15, run_id, "Denoising step 2/")  # streamed from the runtime
    runtime = service_pid(cluster.settings, "runtime")
    os.killpg(runtime, signal.SIGKILL)

    assert cluster.wait(SD15, run_id, timeout=900) == "success"
    assert service_pid(cluster.settings, "runtime") != runtime  # the supervisor started a new one
    tries = cluster.task_tries(SD15, run_id, SD15_TASK)
    assert [str(getattr(t.state, "value", t.state)) for t in tries] == ["failed", "success"]
    assert "exited while it ran this task's nodes" in open(first_log).read()
    usage = cluster.xcom(SD15, run_id, SD15_TASK, "invokeai_usage")
    assert usage["runtime"]["pid"] == service_pid(cluster.settings, "runtime")
    images = [k for k in cluster.keys(cluster.run_prefix("acme", SD15, run_id)) if "/images/" in k]
    assert len(images) == 1


def test_run_completes_when_s3_stops_for_a_few_seconds(cluster: ClusterClient) -> None:
    cluster.wait_for_dag(SD15)
    conf = {"positive_prompt": "a lighthouse in a storm", "seed": 5, "model": "tiny-sd15", "denoise_steps": 20,
            "noise_width": 64, "noise_height": 64}
    run_id = cluster.trigger(SD15, conf)
    # the task process has started: it is about to read the model records and files and then write the PNG
    wait_for_task_log(cluster.settings, SD15, run_id, "", timeout=300)
    s3 = service_pid(cluster.settings, "s3")
    os.killpg(s3, signal.SIGKILL)  # stopped; the cluster's supervisor starts it again a few seconds later

    assert cluster.wait(SD15, run_id, timeout=600) == "success"
    assert service_pid(cluster.settings, "s3") != s3
    images = [k for k in cluster.keys(cluster.run_prefix("default", SD15, run_id)) if "/images/" in k]
    assert len(images) == 1
    assert json.loads(cluster.png_text(images[0])["invokeai_metadata"])["seed"] == 5

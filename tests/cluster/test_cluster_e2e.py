"""End to end on the local cluster, driven like a service would: apache-airflow-client over REST.

The workflow DAGs of dags/ run on the CeleryExecutor: GPU-queue tasks on the `gpu` worker, the rest on
`default`; images land in SeaweedFS under the tenant's prefix; records are in XCom and Asset events.
"""

from __future__ import annotations

import json
import math
import urllib.request

import airflow_client.client as af
import pytest

from cluster_client import ClusterClient, wait_for_task_log, worker_of
from invokeai_provider.config import OPTIONS
from invokeai_provider.execution.runtime.client import RuntimeClient

SD15 = "sd15-text-to-image"
BATCH = "prompt-list-batch"
SD15_TASK = "sd1_5_text_to_image"
TINY = {"model": "tiny-sd15", "denoise_steps": 4, "noise_width": 64, "noise_height": 64}
DEFAULT_CHUNK = int(OPTIONS["map_chunk_size"][0])
TINY_BATCH = {"model": "tiny-sd15", "steps": 4, "width": 64, "height": 64}


def assert_ran_on_their_queues(cluster: ClusterClient, dag_id: str, run_id: str) -> list:
    tis = cluster.task_instances(dag_id, run_id)
    assert tis, "the run has no task instances"
    for ti in tis:
        assert ti.queue in ("gpu", "default"), (ti.task_id, ti.queue)
        assert worker_of(ti.hostname) == f"worker-{ti.queue}", (ti.task_id, ti.map_index, ti.queue, ti.hostname)
    return tis


def image_keys(cluster: ClusterClient, prefix: str) -> list[str]:
    return [k for k in cluster.keys(prefix) if "/images/" in k]


def test_second_gpu_task_with_the_same_model_finds_it_warm_in_the_runtime(cluster: ClusterClient) -> None:
    """First in this file, so on a fresh cluster the first run is the cold one."""
    cluster.wait_for_dag(SD15)
    runtime = RuntimeClient(cluster.settings.runtime_socket)
    was_cold = not any(c["models"] for c in runtime.status()["model_caches"].values())
    usages = []
    for seed in (21, 22):
        run_id = cluster.trigger(SD15, {"positive_prompt": "a glass teapot", "seed": seed, "tenant": "acme", **TINY})
        assert cluster.wait(SD15, run_id) == "success"
        [ti] = assert_ran_on_their_queues(cluster, SD15, run_id)
        assert ti.queue == "gpu"
        usages.append((run_id, cluster.xcom(SD15, run_id, SD15_TASK, "invokeai_usage")))
    (_, first), (second_run, second) = usages
    for usage in (first, second):  # the gpu worker's task processes handed their segment to the one runtime
        assert usage["runtime"]["device"] == cluster.settings.runtime_device
        assert usage["runtime"]["socket"] == cluster.settings.runtime_socket
        assert worker_of(usage["hostname"]) == "worker-gpu"
    assert first["runtime"]["pid"] == second["runtime"]["pid"]
    # A first try that Airflow gave up on (a heartbeat lost on a starved machine) may have loaded part of the
    # model before the retry that recorded this usage: the full cold load is only checked on a first try.
    if was_cold and first["try_number"] == 1:
        assert first["model_cache"]["misses"] >= 5 and first["model_cache"]["load_seconds"] > 0, first
    warm = second["model_cache"]
    assert warm["misses"] == 0 and warm["loaded"] == [] and warm["load_seconds"] == 0
    assert warm["hits"] >= 5  # tokenizer, text encoder, unet, vae, scheduler config
    log = wait_for_task_log(cluster.settings, SD15, second_run, "model cache in GPU runtime", timeout=30)
    assert "0 misses, 0.00 s loading" in open(log).read()


def test_text_to_image_triggered_over_rest(cluster: ClusterClient) -> None:
    cluster.wait_for_dag(SD15)
    conf = {"positive_prompt": "a red fox in fresh snow", "seed": 1234, "tenant": "acme", **TINY}
    run_id = cluster.trigger(SD15, conf)
    assert cluster.wait(SD15, run_id) == "success"

    tis = assert_ran_on_their_queues(cluster, SD15, run_id)
    assert [ti.queue for ti in tis] == ["gpu"]

    prefix = cluster.run_prefix("acme", SD15, run_id)
    images = image_keys(cluster, prefix)
    assert len(images) == 1 and images[0].endswith(".png")
    chunks = cluster.png_text(images[0])
    metadata = json.loads(chunks["invokeai_metadata"])
    assert metadata["positive_prompt"] == "a red fox in fresh snow" and metadata["seed"] == 1234
    assert {"invokeai_graph", "invokeai_workflow"} <= set(chunks)

    records = cluster.xcom(SD15, run_id, SD15_TASK, "image_records")
    assert [r["uri"] for r in records] == [f"s3://invokeai-artifacts/{images[0]}"]
    assert records[0]["tenant"] == "acme" and (records[0]["width"], records[0]["height"]) == (64, 64)
    with urllib.request.urlopen(records[0]["url"], timeout=30) as response:  # the presigned URL
        assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"

    events = cluster.asset_events(SD15, run_id)
    assert [e.uri for e in events] == ["invokeai://acme/boards/none"]
    assert [i["uri"] for i in events[0].extra["images"]] == [records[0]["uri"]]


def test_ten_prompt_batch_makes_ten_images(cluster: ClusterClient) -> None:
    cluster.wait_for_dag(BATCH)
    prompts = [f"a lighthouse, study {i}" for i in range(10)]
    conf = {"positive_prompt_value_batch": prompts, "seed_value_batch": list(range(100, 110)), **TINY_BATCH}
    run_id = cluster.trigger(BATCH, conf)
    assert cluster.wait(BATCH, run_id) == "success"

    tis = assert_ran_on_their_queues(cluster, BATCH, run_id)
    assert {ti.queue for ti in tis} == {"gpu", "default"}
    assert sum(ti.queue == "gpu" for ti in tis) == math.ceil(10 / DEFAULT_CHUNK)  # mapped instances, in chunks

    images = image_keys(cluster, cluster.run_prefix("default", BATCH, run_id))
    assert len(images) == 10
    metadata = [json.loads(cluster.png_text(k)["invokeai_metadata"]) for k in images]
    made = sorted((m["positive_prompt"], m["seed"]) for m in metadata)
    assert made == sorted(zip(prompts, range(100, 110)))
    events = cluster.asset_events(BATCH, run_id)
    assert sum(len(e.extra["images"]) for e in events) == 10


@pytest.mark.parametrize("bad", [{"seed": "not a number"}, {"tenant": "../evil"}, {"noise_width": -64}],
                         ids=["seed-not-int", "tenant-escape", "width-negative"])
def test_bad_conf_is_refused_with_400_and_no_run(cluster: ClusterClient, bad: dict) -> None:
    cluster.wait_for_dag(SD15)
    before = cluster.run_ids(SD15)
    with pytest.raises(af.ApiException) as refused:
        cluster.trigger(SD15, {"positive_prompt": "x", **TINY, **bad})
    assert refused.value.status == 400, refused.value.body
    assert cluster.run_ids(SD15) == before

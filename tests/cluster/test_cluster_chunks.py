"""A data-set batch on the local cluster in chunks: 64 prompts, 16 per mapped task instance, give the images of
the unchunked run (one instance per prompt), store only images (with their library records and thumbnails), and
a retried chunk overwrites its own 16 images."""

from __future__ import annotations

import time

import airflow_client.client as af
import numpy as np
from cluster_client import ClusterClient, task_logs

CHUNKED = "prompt-list-batch-chunks-16"
UNCHUNKED = "prompt-list-batch-unchunked"
COUNT = 64
CONF = {"positive_prompt_value_batch": [f"a lighthouse on a cliff, study {i}" for i in range(COUNT)],
        "seed_value_batch": list(range(500, 500 + COUNT)), "model": "tiny-sd15", "steps": 4, "width": 64,
        "height": 64}


def _gpu_task(cluster: ClusterClient, dag_id: str, run_id: str) -> list:
    return sorted((ti for ti in cluster.task_instances(dag_id, run_id) if ti.queue == "gpu"),
                  key=lambda ti: ti.map_index)


def test_a_64_prompt_batch_in_chunks_of_16_gives_the_unchunked_images_and_stores_only_them(
        cluster: ClusterClient) -> None:
    cluster.wait_for_dag(CHUNKED)
    cluster.wait_for_dag(UNCHUNKED)
    started = time.monotonic()
    chunked = cluster.trigger(CHUNKED, CONF)
    assert cluster.wait(CHUNKED, chunked, timeout=900) == "success", task_logs(cluster.settings, CHUNKED, chunked)
    chunked_seconds = time.monotonic() - started
    started = time.monotonic()
    unchunked = cluster.trigger(UNCHUNKED, CONF)
    assert cluster.wait(UNCHUNKED, unchunked, timeout=1200) == "success"
    unchunked_seconds = time.monotonic() - started
    print(f"64 prompts: chunks of 16 {chunked_seconds:.0f} s, one instance per prompt {unchunked_seconds:.0f} s")

    chunk_tis = _gpu_task(cluster, CHUNKED, chunked)
    assert [ti.map_index for ti in chunk_tis] == [0, 1, 2, 3]
    assert [ti.rendered_map_index.split(":")[0] for ti in chunk_tis] == [
        "items 0-15", "items 16-31", "items 32-47", "items 48-63"]
    assert len(_gpu_task(cluster, UNCHUNKED, unchunked)) == COUNT

    objects = cluster.objects_by_kind(cluster.run_prefix("default", CHUNKED, chunked))
    assert sorted(objects) == ["images"], sorted(objects)  # no tensors, no conditioning
    assert len(objects["images"]) == COUNT
    records = [r for ti in chunk_tis
               for r in cluster.xcom(CHUNKED, chunked, ti.task_id, "image_records", map_index=ti.map_index)]
    assert [r["item_index"] for r in records] == list(range(COUNT))
    assert sorted(r["uri"] for r in records) == sorted(f"s3://invokeai-artifacts/{k}" for k in objects["images"])
    library = cluster.library_records("default", CHUNKED, chunked)  # one library record per image
    assert [(r["image_name"], r["item_index"]) for r in library] == [(r["image_name"], r["item_index"]) for r in records]

    reference = {r["item_index"]: r["key"] for r in cluster.library_records("default", UNCHUNKED, unchunked)}
    assert sorted(reference) == list(range(COUNT))
    worst = 0
    for record in library:
        mine, theirs = cluster.png(record["key"]), cluster.png(reference[record["item_index"]])
        assert mine.text["invokeai_metadata"] == theirs.text["invokeai_metadata"]
        assert mine.text["invokeai_graph"] == theirs.text["invokeai_graph"]
        difference = np.abs(np.asarray(mine, dtype=np.int16) - np.asarray(theirs, dtype=np.int16))
        worst = max(worst, int(difference.max()))
    assert worst <= 1, f"a chunked image differs from its unchunked one by {worst} levels (batched UNet rounding is 1)"

    # a retried chunk overwrites its own images
    retried = chunk_tis[1]
    af.TaskInstanceApi(cluster.api).post_clear_task_instances(CHUNKED, af.ClearTaskInstancesBody(
        dry_run=False, dag_run_id=chunked, only_failed=False,
        task_ids=[af.ClearTaskInstancesBodyTaskIdsInner([retried.task_id, 1])]))
    deadline = time.monotonic() + 600
    while True:
        [again] = [ti for ti in _gpu_task(cluster, CHUNKED, chunked) if ti.map_index == 1]
        if again.try_number >= retried.try_number + 1 and str(getattr(again.state, "value", again.state)) == "success":
            break
        assert time.monotonic() < deadline, f"the cleared chunk did not run again: {again}"
        time.sleep(2)
    after = cluster.objects_by_kind(cluster.run_prefix("default", CHUNKED, chunked))
    assert sorted(after["images"]) == sorted(objects["images"])  # the same names: overwritten, no duplicates
    assert len(cluster.library_records("default", CHUNKED, chunked)) == COUNT
    rewritten = cluster.xcom(CHUNKED, chunked, retried.task_id, "image_records", map_index=1)
    assert [r["item_index"] for r in rewritten] == list(range(16, 32))
    assert [r["image_name"] for r in rewritten] == [r["image_name"] for r in records[16:32]]

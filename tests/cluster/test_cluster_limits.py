"""No run can take the shared GPU runtime from the others: an over-long prompt is refused at the trigger, and a
run canceled while its node is in a long step without cancel checks frees the device within seconds."""

from __future__ import annotations

import time

import airflow_client.client as af
import pytest

from cluster_client import ClusterClient, task_logs, wait_for_task_log
from invokeai_provider.execution.runtime.client import RuntimeClient

SD15 = "sd15-text-to-image"
SD15_TASK = "sd1_5_text_to_image"
BLOCKING = "blocking-step"
TINY = {"model": "tiny-sd15", "denoise_steps": 4, "noise_width": 64, "noise_height": 64}


def _task_seconds(cluster: ClusterClient, dag_id: str, run_id: str) -> float:
    [ti] = cluster.task_instances(dag_id, run_id)
    return (ti.end_date - ti.start_date).total_seconds()


def test_an_over_long_prompt_is_refused_at_the_trigger_and_the_next_run_takes_its_normal_time(
        cluster: ClusterClient) -> None:
    cluster.wait_for_dag(SD15)
    before = set(cluster.run_ids(SD15))
    with pytest.raises(af.ApiException) as refused:
        cluster.trigger(SD15, {**TINY, "positive_prompt": "a lighthouse " * 80_000})  # about 1 MB
    assert refused.value.status == 400
    assert "positive_prompt" in str(refused.value.body) and "too long" in str(refused.value.body)
    assert set(cluster.run_ids(SD15)) == before  # no run was created

    started = time.monotonic()
    run_id = cluster.trigger(SD15, {**TINY, "positive_prompt": "a lighthouse at dusk", "seed": 3})
    assert cluster.wait(SD15, run_id, timeout=300) == "success", task_logs(cluster.settings, SD15, run_id)
    seconds = _task_seconds(cluster, SD15, run_id)
    print(f"run after the refused trigger: task {seconds:.1f} s, trigger to success {time.monotonic() - started:.1f} s")
    assert seconds < 60  # a 64x64 4-step image; the 1 MB prompt used to hold the runtime for about 5 minutes


def test_canceling_a_run_stuck_in_a_long_step_frees_the_runtime_within_10_seconds(cluster: ClusterClient) -> None:
    cluster.wait_for_dag(BLOCKING)
    cluster.wait_for_dag(SD15)
    runtime = RuntimeClient(cluster.settings.runtime_socket)
    abandoned_before = runtime.status()["jobs_abandoned"]

    stuck = cluster.trigger(BLOCKING, {"seconds": 300})
    wait_for_task_log(cluster.settings, BLOCKING, stuck, "blocking step started")
    queued = cluster.trigger(SD15, {**TINY, "positive_prompt": "a red kite", "seed": 4})
    try:
        wait_for_task_log(cluster.settings, SD15, queued, "to the GPU runtime at", timeout=120)  # its task reached it...
    except TimeoutError:
        raise AssertionError(task_logs(cluster.settings, SD15, queued)) from None
    time.sleep(2)
    assert cluster.state(SD15, queued) == "running"  # ...and waits there for the device

    canceled_at = time.monotonic()
    cluster.mark_failed(BLOCKING, stuck)
    while runtime.status()["jobs_abandoned"] == abandoned_before:
        assert time.monotonic() - canceled_at < 10, f"the runtime is still held: {runtime.status()}"
        time.sleep(0.2)
    freed_after = time.monotonic() - canceled_at
    assert cluster.wait(SD15, queued, timeout=120) == "success", task_logs(cluster.settings, SD15, queued)
    done_after = time.monotonic() - canceled_at
    print(f"runtime freed {freed_after:.1f} s after the cancel; the queued run finished {done_after:.1f} s after it")
    assert done_after < 60  # not after the 300 s step
    assert cluster.state(BLOCKING, stuck) == "failed"

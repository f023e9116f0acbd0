"""The per-GPU runtime on CPU: tasks hand it their segments, models stay warm, cancel and crashes behave."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from helpers import sd1_graph
from invokeai_provider.errors import CanceledError, NodeExecutionError
from invokeai_provider.execution.runtime.client import RuntimeClient, RuntimeCrashedError
from invokeai_provider.execution.runtime.server import RuntimeServer, RuntimeStartError
from invokeai_provider.execution.graph_runs import TaskEnvironment
from invokeai_provider.execution.task_runtime import run_task
from invokeai_provider.execution.usage import UsageMeter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_SD1: Any = {"key": "tiny-sd1", "hash": "", "name": "tiny-sd1", "base": "sd-1", "type": "main"}


def short_socket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A socket path under the 107-byte limit of AF_UNIX (pytest's tmp paths can be longer)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="rt-")) / "gpu0.sock"


@pytest.fixture
def make_runtime(tmp_path_factory: pytest.TempPathFactory, tiny_registry, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Callable[..., RuntimeServer]]:
    """Starts a runtime in threads of this process, serving the CPU, and points tasks at it."""
    servers: list[RuntimeServer] = []

    def start(**options: Any) -> RuntimeServer:
        server = RuntimeServer(short_socket(tmp_path_factory), "cpu", model_root=tiny_registry.root.as_uri(),
                               **options)
        server.start()
        servers.append(server)
        monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_SOCKET", str(server.socket_path))
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()


@pytest.fixture
def runtime(make_runtime: Callable[..., RuntimeServer]) -> RuntimeServer:
    """A runtime with the default settings (denoise batches of up to [invokeai] runtime_max_batch)."""
    return make_runtime()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def task_env(tmp_path: Path, tiny_registry, task_id: str, *, run_id: str = "r1") -> tuple[TaskEnvironment, Lines]:
    logger = logging.Logger(f"task-{task_id}-{run_id}", logging.INFO)
    lines = Lines()
    logger.addHandler(lines)
    env = TaskEnvironment(dag_id="sd", run_id=run_id, task_id=task_id, artifact_root=(tmp_path / "a").as_uri(),
                          model_root=tiny_registry.root.as_uri(), tenant="acme", usage=UsageMeter(), logger=logger)
    return env, lines


def settled_status(runtime: RuntimeServer, timeout: float = 10) -> dict[str, Any]:
    """The runtime's status once no job is running: a task gets its answer just before the runtime's executor
    thread has put the finished job away."""
    client = RuntimeClient(str(runtime.socket_path))
    deadline = time.monotonic() + timeout
    while True:
        status = client.status()
        if not status["busy"] or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def compiled_t2i(**kwargs: Any) -> Any:
    from invokeai_provider.compiler.dags import load_compiled

    graph = sd1_graph(TINY_SD1, **kwargs)
    graph["nodes"]["decode"]["is_intermediate"] = False
    return load_compiled(graph, model_names=None)


def test_segment_runs_in_the_runtime_and_second_task_finds_the_models_warm(
        tmp_path: Path, tiny_registry, runtime: RuntimeServer) -> None:
    compiled = compiled_t2i(steps=3)
    [task] = compiled.plan.tasks
    first, first_lines = task_env(tmp_path, tiny_registry, task.task_id, run_id="r1")
    output, _ = run_task(compiled, first)
    [image] = output["images"]
    assert Path(image["uri"].removeprefix("file://")).is_file()
    # the runtime ran it: progress and the runtime's own lines reached the task's log
    assert any("running" in line and "runtime pid" in line for line in first_lines.lines)
    assert sum("Denoising step" in line for line in first_lines.lines) == 3
    assert first.usage.steps == 3 and first.usage.images == 1
    assert first.usage.runtime["pid"] == os.getpid() and first.usage.runtime["device"] == "cpu"
    cold = first.usage.model_cache
    assert cold["misses"] >= 4 and cold["load_seconds"] > 0  # unet, vae, text encoder, tokenizer, scheduler
    assert any(key.endswith(":unet") for key in cold["loaded"])

    second, second_lines = task_env(tmp_path, tiny_registry, task.task_id, run_id="r2")
    run_task(compiled, second)
    warm = second.usage.model_cache
    assert warm["misses"] == 0 and warm["loaded"] == [] and warm["load_seconds"] == 0
    assert warm["hits"] >= cold["misses"]
    assert any("0 misses" in line for line in second_lines.lines)
    record = second.usage.record(tenant="acme", dag_id="sd", run_id="r2", task_id=task.task_id, map_index=None,
                                 try_number=1, hostname="h", started=_now(), ended=_now())
    assert record["model_cache"]["misses"] == 0 and record["runtime"]["device"] == "cpu"
    status = settled_status(runtime)
    assert status["jobs_run"] == 2 and not status["busy"]


def test_runtime_images_equal_in_process_images(tmp_path: Path, tiny_registry, monkeypatch: pytest.MonkeyPatch,
                                                runtime: RuntimeServer) -> None:
    from PIL import Image

    compiled = compiled_t2i(steps=2, seed=11)
    [task] = compiled.plan.tasks
    env, _ = task_env(tmp_path, tiny_registry, task.task_id, run_id="remote")
    remote, _ = run_task(compiled, env)
    monkeypatch.delenv("AIRFLOW__INVOKEAI__RUNTIME_SOCKET")
    env, _ = task_env(tmp_path, tiny_registry, task.task_id, run_id="local")
    local, _ = run_task(compiled, env)
    assert env.usage.runtime is None
    [a], [b] = remote["images"], local["images"]
    pixels = [Image.open(r["uri"].removeprefix("file://")).tobytes() for r in (a, b)]
    assert pixels[0] == pixels[1]


def test_node_error_in_the_runtime_fails_the_task_with_the_same_error(
        tmp_path: Path, tiny_registry, runtime: RuntimeServer) -> None:
    from invokeai_provider.core.registry import InvocationRegistry
    from invokeai_provider.execution.task_runtime import run_single_node

    l2i = InvocationRegistry.get_invocation_class("l2i")
    env, _ = task_env(tmp_path, tiny_registry, "decode")
    vae = {"vae": {**TINY_SD1, "submodel_type": "vae"}}
    with pytest.raises(NodeExecutionError, match=r"decode \(l2i\) failed: .*no-such-latents") as raised:
        run_single_node(l2i, "decode", {"latents": {"latents_name": "no-such-latents"}, "vae": vae}, env)
    assert raised.value.node_id == "decode"
    # the runtime ran it, and carries on
    assert RuntimeClient(str(runtime.socket_path)).status()["jobs_failed"] == 1
    compiled = compiled_t2i(steps=1)
    env, _ = task_env(tmp_path, tiny_registry, compiled.plan.tasks[0].task_id, run_id="r2")
    run_task(compiled, env)
    assert env.usage.runtime is not None


def test_tasks_sent_together_run_one_at_a_time_on_the_device_without_batching(
        tmp_path: Path, tiny_registry, make_runtime: Callable[..., RuntimeServer]) -> None:
    runtime = make_runtime(max_batch=1)
    compiled = compiled_t2i(steps=8)
    [task] = compiled.plan.tasks
    spans: dict[str, list[float]] = {}

    class Stamped(logging.Handler):
        def __init__(self, run_id: str) -> None:
            super().__init__()
            self.run_id = run_id

        def emit(self, record: logging.LogRecord) -> None:
            if "Denoising step" in record.getMessage():
                spans.setdefault(self.run_id, []).append(time.monotonic())

    def one(run_id: str) -> None:
        env, _ = task_env(tmp_path, tiny_registry, task.task_id, run_id=run_id)
        env.logger.addHandler(Stamped(run_id))
        run_task(compiled, env)

    threads = [threading.Thread(target=one, args=(f"r{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(spans) == ["r0", "r1", "r2"] and all(len(v) == 8 for v in spans.values())
    intervals = sorted((min(v), max(v)) for v in spans.values())
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert start > end, f"two segments denoised at the same time: {intervals}"
    status = RuntimeClient(str(runtime.socket_path)).status()
    assert status["jobs_run"] == 3 and status["denoise_batches"]["sizes"] == {"1": 3}


# --- denoise nodes of one run batched in the runtime ---------------------------------------------------------

PROMPTS = ["a red cat", "a blue fox on a hill", "a green owl"]


def mapped_jobs(tmp_path: Path, tiny_registry, run_id: str, **graph: Any) -> list[tuple[Any, TaskEnvironment, Lines]]:
    """The instances of a mapped task: one compiled graph per prompt and seed, map indexes 0, 1, 2."""
    jobs = []
    for index, prompt in enumerate(PROMPTS):
        compiled = compiled_t2i(prompt=prompt, seed=100 + index, **graph)
        env, lines = task_env(tmp_path, tiny_registry, compiled.plan.tasks[0].task_id, run_id=run_id)
        env.map_index = index
        jobs.append((compiled, env, lines))
    return jobs


def run_together(runtime: RuntimeServer, jobs: list[tuple[Any, TaskEnvironment, Any]]) -> list[Any]:
    """Sends the jobs while the device is held, so all of them are in the runtime before any runs (as when
    mapped tasks queue behind a long one); returns each job's output or exception."""
    outcomes: list[Any] = [None] * len(jobs)

    def one(number: int) -> None:
        compiled, env, _ = jobs[number]
        try:
            outcomes[number] = run_task(compiled, env)[0]
        except BaseException as exc:  # noqa: BLE001 - compared by the test
            outcomes[number] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(jobs))]
    with runtime.device_scheduler.job():
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while runtime.status()["running"] < len(jobs):
            assert time.monotonic() < deadline, "the jobs did not reach the runtime"
            time.sleep(0.02)
    for thread in threads:
        thread.join(120)
    return outcomes


def pixels(output: dict[str, Any]) -> Any:
    import numpy as np
    from PIL import Image

    [record] = output["images"]
    return np.asarray(Image.open(record["uri"].removeprefix("file://")), dtype=np.int16)


@pytest.mark.parametrize("scheduler", ["euler_a", "dpmpp_sde_k"])  # step noise, and a seeded noise sampler
def test_mapped_tasks_denoise_as_one_batch_and_give_the_unbatched_images(
        tmp_path: Path, tiny_registry, make_runtime: Callable[..., RuntimeServer], monkeypatch: pytest.MonkeyPatch,
        scheduler: str) -> None:
    runtime = make_runtime(max_batch=3)
    batched = run_together(runtime, mapped_jobs(tmp_path / "batched", tiny_registry, "mapped", steps=4,
                                                scheduler=scheduler))
    status = RuntimeClient(str(runtime.socket_path)).status()
    assert status["denoise_batches"] == {"batches": 1, "items": 3, "largest": 3, "sizes": {"3": 1}}
    assert status["jobs_run"] == 3
    monkeypatch.delenv("AIRFLOW__INVOKEAI__RUNTIME_SOCKET")
    alone = [run_task(compiled, env)[0]
             for compiled, env, _ in mapped_jobs(tmp_path / "alone", tiny_registry, "mapped", steps=4,
                                                 scheduler=scheduler)]
    for index, (together, single) in enumerate(zip(batched, alone)):
        assert not isinstance(together, BaseException), together
        difference = abs(pixels(together) - pixels(single))
        assert difference.max() <= 1, f"instance {index}: batched image differs by up to {difference.max()} levels"
    # every instance kept its own prompt and seed
    assert abs(pixels(batched[0]) - pixels(batched[1])).max() > 10
    assert abs(pixels(batched[1]) - pixels(batched[2])).max() > 10


def run_chunk(tmp_path: Path, tiny_registry, run_id: str) -> tuple[dict[str, Any], UsageMeter, Path]:
    """A 3-prompt batch (one negative prompt) as one chunk: its output, its usage and its run's artifacts."""
    from invokeai_provider.compiler.dags import load_compiled

    graph = sd1_graph(TINY_SD1, steps=2)
    graph["nodes"]["decode"]["is_intermediate"] = False
    compiled = load_compiled({"graph": graph, "runs": 1, "data": [[
        {"node_path": "pos", "field_name": "prompt", "items": PROMPTS}]]}, model_names=None, chunk_size=3)
    sessions, mapped = compiled.plan.tasks
    env, _ = task_env(tmp_path, tiny_registry, sessions.task_id, run_id=run_id)
    [chunk] = run_task(compiled, env)[1][mapped.task_id]
    env, _ = task_env(tmp_path, tiny_registry, mapped.task_id, run_id=run_id)
    env.map_index = 0
    output, _ = run_task(compiled, env, instance=chunk)
    return output, env.usage, tmp_path / "a" / "acme" / "runs" / "sd" / run_id


def test_a_chunks_items_share_their_engine_call_in_the_runtime(
        tmp_path: Path, tiny_registry, make_runtime: Callable[..., RuntimeServer], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    runtime = make_runtime(max_batch=3)
    remote, remote_usage, remote_root = run_chunk(tmp_path, tiny_registry, "remote")
    status = RuntimeClient(str(runtime.socket_path)).status()
    assert status["jobs_run"] == 3 and status["open_calls"] == 0
    # the loader, the negative prompt and the noise (one seed) ran once for the three items: the other two took
    # them from the node cache
    assert remote_usage.cached_nodes == 6 and remote_usage.node_types["compel"] == 6
    monkeypatch.delenv("AIRFLOW__INVOKEAI__RUNTIME_SOCKET")
    local, local_usage, local_root = run_chunk(tmp_path, tiny_registry, "local")
    assert local_usage.cached_nodes == 6
    assert len(remote["images"]) == 3
    for there, here in zip(remote["images"], local["images"]):
        assert (there["item_index"], there["node_id"]) == (here["item_index"], here["node_id"])
        difference = abs(pixels({"images": [there]}) - pixels({"images": [here]}))
        assert difference.max() <= 1, f"{there['image_name']}: differs by up to {difference.max()} levels"
    for root in (remote_root, local_root):  # the shared intermediates stayed in memory
        assert sorted(p.name for p in root.iterdir()) == ["images"]


def test_a_canceled_task_leaves_its_batch_and_the_others_finish(
        tmp_path: Path, tiny_registry, make_runtime: Callable[..., RuntimeServer]) -> None:
    runtime = make_runtime(max_batch=3)
    jobs = mapped_jobs(tmp_path, tiny_registry, "mapped", steps=60)
    _, canceled_env, canceled_lines = jobs[1]

    def cancel_after_a_few_steps() -> None:
        while sum("Denoising step" in line for line in list(canceled_lines.lines)) < 3:
            time.sleep(0.01)
        canceled_env.cancel_event.set()

    threading.Thread(target=cancel_after_a_few_steps, daemon=True).start()
    first, second, third = run_together(runtime, jobs)
    assert isinstance(second, CanceledError)
    assert canceled_env.usage.steps < 60
    for output, (_, env, _) in ((first, jobs[0]), (third, jobs[2])):
        assert not isinstance(output, BaseException), output
        assert len(output["images"]) == 1 and env.usage.steps == 60
    status = RuntimeClient(str(runtime.socket_path)).status()
    assert status["denoise_batches"]["sizes"] == {"3": 1}
    assert (status["jobs_run"], status["jobs_canceled"]) == (2, 1)


def test_only_denoise_nodes_of_one_run_with_one_shape_batch_together(
        tmp_path: Path, tiny_registry, make_runtime: Callable[..., RuntimeServer]) -> None:
    runtime = make_runtime(max_batch=4)
    same_a, same_b, smaller = mapped_jobs(tmp_path, tiny_registry, "r1", steps=2)
    smaller = mapped_jobs(tmp_path, tiny_registry, "r1", steps=2, size=32)[2]
    other_run = mapped_jobs(tmp_path, tiny_registry, "r2", steps=2)[0]
    outcomes = run_together(runtime, [same_a, other_run, smaller, same_b])
    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    status = RuntimeClient(str(runtime.socket_path)).status()
    assert status["denoise_batches"]["sizes"] == {"1": 2, "2": 1}
    # each task's usage counts its own model cache use, though the batch loaded the UNet in one of them
    cache = [env.usage.model_cache for _, env, _ in (same_a, other_run, smaller, same_b)]
    assert sum(c["misses"] for c in cache) == len({key for c in cache for key in c["loaded"]})


def test_cancel_stops_the_segment_at_the_next_denoising_step(tmp_path: Path, tiny_registry,
                                                             runtime: RuntimeServer) -> None:
    compiled = compiled_t2i(steps=200)
    [task] = compiled.plan.tasks
    env, lines = task_env(tmp_path, tiny_registry, task.task_id)

    def cancel_after_a_few_steps() -> None:
        while sum("Denoising step" in line for line in list(lines.lines)) < 3:
            time.sleep(0.01)
        env.cancel_event.set()

    threading.Thread(target=cancel_after_a_few_steps, daemon=True).start()
    with pytest.raises(CanceledError):
        run_task(compiled, env)
    assert env.usage.steps < 50
    status = settled_status(runtime)
    assert status["jobs_canceled"] == 1 and not status["busy"]
    assert not list((tmp_path / "a").rglob("*.png"))  # nothing half-written


def test_a_task_timeout_cancels_its_segment_in_the_runtime(tmp_path: Path, tiny_registry,
                                                            runtime: RuntimeServer) -> None:
    """Airflow's execution_timeout raises in the task's main thread (from SIGALRM) while it waits for the runtime."""

    class Timeout(Exception):
        pass

    def on_alarm(*_: Any) -> None:
        raise Timeout()

    compiled = compiled_t2i(steps=500)
    env, lines = task_env(tmp_path, tiny_registry, compiled.plan.tasks[0].task_id)
    main_thread = threading.get_ident()

    def time_out_during_denoising() -> None:
        while not any("Denoising step 2/" in line for line in list(lines.lines)):
            time.sleep(0.01)
        signal.pthread_kill(main_thread, signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    threading.Thread(target=time_out_during_denoising, daemon=True).start()
    try:
        with pytest.raises(Timeout):
            run_task(compiled, env)
    finally:
        signal.signal(signal.SIGALRM, previous)
    client = RuntimeClient(str(runtime.socket_path))
    deadline = time.monotonic() + 60
    while client.status()["jobs_canceled"] < 1:
        assert time.monotonic() < deadline, "the runtime kept running the timed-out task's segment"
        time.sleep(0.1)
    assert 0 < env.usage.steps < 500


def test_a_closed_connection_cancels_the_job(tmp_path: Path, tiny_registry, runtime: RuntimeServer) -> None:
    """What happens when the task process is killed: its socket closes, the runtime stops at the next step."""
    import socket as sockets

    from invokeai_provider.execution.runtime.protocol import recv_message, send_message

    graph = sd1_graph(steps=500)
    sock = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    sock.connect(str(runtime.socket_path))
    send_message(sock, {"op": "run", "graph": graph, "env": {
        "dag_id": "sd", "run_id": "killed", "task_id": "t", "tenant": "acme",
        "artifact_root": (tmp_path / "a").as_uri(), "model_root": tiny_registry.root.as_uri()}})
    while (message := recv_message(sock)) is not None and message.get("type") != "progress":
        pass
    sock.close()
    client = RuntimeClient(str(runtime.socket_path))
    deadline = time.monotonic() + 60
    while client.status()["jobs_canceled"] < 1:
        assert time.monotonic() < deadline, "the runtime kept running a job nobody waits for"
        time.sleep(0.1)
    assert not client.status()["busy"]


def test_a_canceled_job_stuck_in_a_long_step_is_abandoned_and_the_next_job_starts(
        tmp_path: Path, tiny_registry, make_runtime: Callable[..., RuntimeServer]) -> None:
    """A node in a step without cancel checks: after the grace period the runtime answers the canceled task,
    gives the device to the job queued behind it and replaces the executor thread; the old thread ends later."""
    runtime = make_runtime(max_batch=1, cancel_grace_seconds=0.5)
    client = RuntimeClient(str(runtime.socket_path))
    env = {"dag_id": "slow", "task_id": "t", "tenant": "acme", "artifact_root": (tmp_path / "a").as_uri(),
           "model_root": tiny_registry.root.as_uri()}
    stuck = {"id": "stuck", "nodes": {"block": {"id": "block", "type": "test_blocking_step", "seconds": 6}},
             "edges": []}
    stuck_cancel, started = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def run_stuck() -> None:
        try:
            client.run_graph({"graph": stuck, "env": {**env, "run_id": "stuck"}}, logger=logging.getLogger("stuck"),
                             cancel_event=stuck_cancel, on_progress=lambda event: started.set())
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome["stuck"] = (exc, time.monotonic())

    threading.Thread(target=run_stuck, daemon=True).start()
    assert started.wait(30)
    queued_done: dict[str, float] = {}

    def run_queued() -> None:
        client.run_graph({"graph": sd1_graph(steps=2), "env": {**env, "run_id": "queued"}},
                         logger=logging.getLogger("queued"), cancel_event=threading.Event())
        queued_done["at"] = time.monotonic()

    queued = threading.Thread(target=run_queued, daemon=True)
    queued.start()
    time.sleep(0.5)
    assert client.status()["queued"] == 1  # waits behind the stuck job
    canceled_at = time.monotonic()
    stuck_cancel.set()
    queued.join(30)
    assert "at" in queued_done, "the job queued behind the stuck one did not run"
    exc, answered_at = outcome["stuck"]
    assert isinstance(exc, CanceledError) and "did not stop within 0.5 s" in str(exc)
    assert answered_at - canceled_at < 3  # not the 6 s the step takes
    assert queued_done["at"] - canceled_at < 4.5  # the queued job started at once, not after the step
    status = settled_status(runtime)
    assert status["jobs_abandoned"] == 1 and status["jobs_run"] == 1 and not status["busy"]
    deadline = time.monotonic() + 20
    while client.status()["abandoned_running"]:  # the old thread ends when its step returns
        assert time.monotonic() < deadline, "the abandoned thread never ended"
        time.sleep(0.2)
    assert not [p for p in (tmp_path / "a").rglob("*") if "stuck" in p.parts and p.is_file()]
    assert list((tmp_path / "a").rglob("queued/images/*.png"))


def test_device_scheduler_released_lets_another_job_on_and_abandon_bars_the_old_thread() -> None:
    from invokeai_provider.execution.runtime.batching import DeviceScheduler

    scheduler = DeviceScheduler(1)
    order: list[str] = []
    in_release, other_done = threading.Event(), threading.Event()

    def parser() -> None:
        with scheduler.job():
            with scheduler.released():  # CPU work: the other job gets the device meanwhile
                in_release.set()
                assert other_done.wait(5)
                order.append("parsed")
            order.append("encoded")

    def other() -> None:
        assert in_release.wait(5)
        with scheduler.job():
            order.append("other")
        other_done.set()

    threads = [threading.Thread(target=parser), threading.Thread(target=other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == ["other", "parsed", "encoded"]

    holder_ident: list[int] = []
    holding, abandoned = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def stuck() -> None:
        holder_ident.append(threading.get_ident())
        with scheduler.job():
            holding.set()
            assert abandoned.wait(5)
            try:
                with scheduler.released():
                    pass
            except CanceledError as exc:  # may not come back on the device
                raised.append(exc)

    thread = threading.Thread(target=stuck)
    thread.start()
    assert holding.wait(5)
    scheduler.abandon(holder_ident[0])
    with scheduler.job():  # free at once, although the stuck thread never gave it back
        abandoned.set()
    thread.join(5)
    assert raised and "abandoned" in str(raised[0])
    scheduler.forget(holder_ident[0])


def test_preload_makes_the_first_task_a_cache_hit(tmp_path: Path, tiny_registry, runtime: RuntimeServer) -> None:
    client = RuntimeClient(str(runtime.socket_path))
    answer = client.preload(["tiny-sd1"], tiny_registry.root.as_uri())
    assert len(answer["keys"]) == 5 and answer["cache"]["misses"] == 5
    assert client.preload(["tiny-sd1"], tiny_registry.root.as_uri())["cache"]["hits"] == 5
    compiled = compiled_t2i(steps=1)
    [task] = compiled.plan.tasks
    env, _ = task_env(tmp_path, tiny_registry, task.task_id)
    run_task(compiled, env)
    assert env.usage.model_cache["misses"] == 0
    status = client.status()
    [cache] = status["model_caches"].values()
    assert any(key.endswith(":unet") for key in cache["models"]) and status["preloaded"]


def test_tasks_run_in_process_when_the_runtime_does_not_answer(tmp_path: Path, tiny_registry,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_SOCKET", str(tmp_path / "nobody.sock"))
    monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_CONNECT_SECONDS", "0")
    compiled = compiled_t2i(steps=1)
    [task] = compiled.plan.tasks
    env, lines = task_env(tmp_path, tiny_registry, task.task_id)
    output, _ = run_task(compiled, env)
    assert output["images"] and env.usage.runtime is None
    assert any("not answering" in line for line in lines.lines)


def test_a_second_runtime_on_the_same_socket_is_refused(runtime: RuntimeServer) -> None:
    with pytest.raises(RuntimeStartError, match="already serving"):
        RuntimeServer(runtime.socket_path, "cpu").start()


@pytest.mark.parametrize("value", ["0", "four"])
def test_a_bad_max_batch_is_refused_naming_the_option(tmp_path_factory: pytest.TempPathFactory,
                                                      monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from invokeai_provider.execution.runtime.batching import RuntimeConfigError

    monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_MAX_BATCH", value)
    with pytest.raises(RuntimeConfigError, match=rf"runtime_max_batch: expected a whole number of at least 1, got '{value}'"):
        RuntimeServer(short_socket(tmp_path_factory), "cpu")
    with pytest.raises(RuntimeConfigError, match="--max-batch: expected a whole number of at least 1, got 0"):
        RuntimeServer(short_socket(tmp_path_factory), "cpu", max_batch=0)


def test_unknown_device_is_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(RuntimeStartError, match="cuda:7|expected cpu"):
        RuntimeServer(short_socket(tmp_path_factory), "cuda:7").start()


# --- a runtime process: the CLI, and a crash ----------------------------------------------------------------


def start_cli_runtime(socket_path: Path, model_root: str, *extra: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "invokeai_provider.cli", "runtime", "serve", "--device", "cpu",
                                "--socket", str(socket_path), "--model-root", model_root, *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = RuntimeClient(str(socket_path))
    deadline = time.monotonic() + 120
    while client.ping() is None:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"runtime did not start:\n{process.communicate()[0][-3000:]}")
        time.sleep(0.2)
    return process


def test_runtime_crash_fails_the_task_cleanly(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                             tiny_registry, monkeypatch: pytest.MonkeyPatch) -> None:
    socket_path = short_socket(tmp_path_factory)
    process = start_cli_runtime(socket_path, tiny_registry.root.as_uri(), "--preload", "tiny-sd1")
    try:
        monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_SOCKET", str(socket_path))
        compiled = compiled_t2i(steps=400)
        [task] = compiled.plan.tasks
        env, lines = task_env(tmp_path, tiny_registry, task.task_id)

        def kill_during_denoising() -> None:
            while not any("Denoising step 2/" in line for line in list(lines.lines)):
                time.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)

        threading.Thread(target=kill_during_denoising, daemon=True).start()
        with pytest.raises(RuntimeCrashedError, match="exited while it ran"):
            run_task(compiled, env)
        assert not list((tmp_path / "a").rglob("*.png"))
        # a new runtime takes over the stale socket file the dead one left
        process.wait(10)
        process = start_cli_runtime(socket_path, tiny_registry.root.as_uri())
        out = subprocess.run([sys.executable, "-m", "invokeai_provider.cli", "runtime", "status", "--socket",
                              str(socket_path), "--json"], capture_output=True, text=True, check=True)
        report = json.loads(out.stdout)
        assert report["pid"] == process.pid and report["jobs_run"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert not socket_path.exists()  # removed on SIGTERM


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


TASK_PROCESS = """
import json, logging, sys
from invokeai_provider.compiler.dags import load_compiled
from invokeai_provider.execution.graph_runs import TaskEnvironment
from invokeai_provider.execution.task_runtime import run_task
from invokeai_provider.execution.usage import UsageMeter
graph, artifacts, model_root = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
compiled = load_compiled(graph, model_names=None)
env = TaskEnvironment(dag_id="sd", run_id="light", task_id=compiled.plan.tasks[0].task_id, artifact_root=artifacts,
                      model_root=model_root, tenant="acme", usage=UsageMeter())
output, _ = run_task(compiled, env)
print(json.dumps({"images": len(output["images"]), "runtime": env.usage.runtime,
                  "heavy": sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)}))
"""


def test_a_task_that_uses_the_runtime_does_not_import_torch(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                            tiny_registry) -> None:
    socket_path = short_socket(tmp_path_factory)
    runtime = start_cli_runtime(socket_path, tiny_registry.root.as_uri())
    try:
        graph = sd1_graph(TINY_SD1, steps=1)
        graph["nodes"]["decode"]["is_intermediate"] = False
        done = subprocess.run([sys.executable, "-c", TASK_PROCESS, json.dumps(graph), (tmp_path / "a").as_uri(),
                               tiny_registry.root.as_uri()], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "AIRFLOW__INVOKEAI__RUNTIME_SOCKET": str(socket_path)})
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["images"] == 1 and result["runtime"]["pid"] == runtime.pid
        assert result["heavy"] == []
    finally:
        runtime.send_signal(signal.SIGTERM)
        runtime.wait(30)


# --- FLUX ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flux_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """A model root with the tiny FLUX main (`models install-tiny main --base flux`)."""
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    root = tmp_path_factory.mktemp("flux-runtime-root")
    return root.as_uri(), install_tiny(ModelRegistry(root.as_uri()), "main", "flux").config.identifier()


def flux_jobs(tmp_path: Path, flux_root: tuple[str, dict[str, Any]], run_id: str) -> list[tuple[Any, Any, Lines]]:
    """A mapped FLUX text-to-image task's three instances (own prompt and seed each)."""
    from helpers import edge, graph, node
    from invokeai_provider.compiler.dags import load_compiled

    root, model = flux_root
    jobs = []
    for index, prompt in enumerate(PROMPTS):
        document = graph(
            node("load", "flux_model_loader", model=model), node("prompt", "flux_text_encoder", prompt=prompt),
            node("denoise", "flux_denoise", seed=200 + index, num_steps=3, width=32, height=32, guidance=3.5),
            node("decode", "flux_vae_decode", is_intermediate=False),
            edges=[edge("load", "clip", "prompt", "clip"), edge("load", "t5_encoder", "prompt", "t5_encoder"),
                   edge("load", "max_seq_len", "prompt", "t5_max_seq_len"),
                   edge("load", "transformer", "denoise", "transformer"),
                   edge("prompt", "conditioning", "denoise", "positive_text_conditioning"),
                   edge("denoise", "latents", "decode", "latents"), edge("load", "vae", "decode", "vae")])
        compiled = load_compiled(document, model_names=None)
        logger = logging.Logger(f"flux-{index}-{run_id}", logging.INFO)
        lines = Lines()
        logger.addHandler(lines)
        env = TaskEnvironment(dag_id="flux", run_id=run_id, task_id=compiled.plan.tasks[0].task_id,
                              artifact_root=(tmp_path / "a").as_uri(), model_root=root, tenant="acme",
                              usage=UsageMeter(), logger=logger)
        env.map_index = index
        jobs.append((compiled, env, lines))
    return jobs


def test_flux_denoise_nodes_of_one_run_batch_and_give_the_unbatched_images(
        tmp_path: Path, flux_root: tuple[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = RuntimeServer(short_socket(tmp_path_factory), "cpu", model_root=flux_root[0], max_batch=3)
    server.start()
    try:
        monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_SOCKET", str(server.socket_path))
        batched = run_together(server, flux_jobs(tmp_path / "batched", flux_root, "mapped"))
        status = RuntimeClient(str(server.socket_path)).status()
    finally:
        server.shutdown()
    assert status["denoise_batches"] == {"batches": 1, "items": 3, "largest": 3, "sizes": {"3": 1}}
    monkeypatch.delenv("AIRFLOW__INVOKEAI__RUNTIME_SOCKET")
    alone = [run_task(compiled, env)[0] for compiled, env, _ in flux_jobs(tmp_path / "alone", flux_root, "mapped")]
    for index, (together, single) in enumerate(zip(batched, alone)):
        assert not isinstance(together, BaseException), together
        difference = abs(pixels(together) - pixels(single))
        assert difference.max() <= 1, f"instance {index}: batched FLUX image differs by up to {difference.max()} levels"
    assert abs(pixels(batched[0]) - pixels(batched[1])).max() > 10  # each kept its own prompt and seed

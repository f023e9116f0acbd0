"""The per-GPU runtime: a long-lived process that owns one device and its model cache, and runs the GPU
segments that task processes send it, one at a time.

Airflow forks a fresh process for every task, so models loaded by one task are gone for the next. A GPU
worker host therefore runs one runtime per device (``invokeai-airflow runtime serve --device cuda:0
--socket PATH``); its tasks hand their segment over the socket and get back the serialised execution state,
with the log lines and denoising progress streamed into the task's own log while it runs.

- Jobs run first come, first served, in up to ``max_batch`` threads that take turns on the device
  (`batching.DeviceScheduler`): one job's nodes run at a time, except that the denoise nodes of
  concurrent jobs of one DAG run, with the same UNet and shapes, share their UNet passes in one batch.
  ``max_batch`` 1 runs one job after the other.
- A connection thread per client reads its ``cancel`` or notices it closing (the task was killed or timed
  out) and sets the job's cancel event; the engine stops at its next check (between nodes, at each
  denoising step or tile). A job that has not stopped ``cancel_grace_seconds`` later (a node in a long step
  without checks) is abandoned: its task is answered, the device goes to the next job and a new executor
  thread replaces the job's, which ends when its step returns (a Python thread cannot be killed).
- The jobs of one engine call (the items of a mapped chunk, sent together with one ``call`` id) share what the
  graphs of one call share in a task process (`graph_runs.EngineCall`): the run's store, the node cache (one
  negative prompt is encoded once for the chunk) and the tensors their nodes pass each other.
- Models stay in the RAM/VRAM cache (LRU within ``ram_cache_gb``/``vram_cache_gb``); ``--preload`` loads
  named models at start. Each result carries the cache's hits, misses and load seconds for that job.
- A failing segment is answered with its error and the runtime carries on; if the runtime itself dies, the
  task sees the connection close without a result and fails (Airflow retries it), and the supervisor
  (``cluster up``, docker-compose) starts a new runtime.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from invokeai_provider.config import settings
from invokeai_provider.errors import CanceledError, InvokeAIProviderError
from invokeai_provider.execution.runtime.batching import DeviceScheduler, configured_max_batch
from invokeai_provider.execution.runtime.protocol import (
    PROTOCOL_VERSION,
    error_message,
    recv_message,
    send_message,
)
from invokeai_provider.execution.usage import UsageMeter

log = logging.getLogger("invokeai_provider.runtime")

_ENV_FIELDS = ("dag_id", "run_id", "task_id", "map_index", "item", "tenant", "artifact_root", "model_root")


class RuntimeStartError(InvokeAIProviderError):
    """The runtime cannot serve: its socket is taken by another runtime, or its device does not exist."""


@dataclass(eq=False)
class _Job:
    """One request executed on the device; its connection streams messages back while it runs."""

    number: int
    request: dict[str, Any]
    connection: Optional[socket.socket]  # None: nobody waits for the answer (the start-up preload)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    client_gone: bool = False
    canceled_at: Optional[float] = None  # time.monotonic() of the first cancel
    thread_ident: Optional[int] = None  # the executor thread running it
    abandoned: bool = False

    def cancel(self) -> None:
        if self.canceled_at is None:
            self.canceled_at = time.monotonic()
        self.cancel_event.set()

    def send(self, message: dict[str, Any]) -> None:
        if self.client_gone or self.connection is None:
            return
        with self.send_lock:
            try:
                send_message(self.connection, message)
            except OSError:  # the task process went away; its job is canceled by the reader
                self.client_gone = True


class _ForwardingHandler(logging.Handler):
    """Sends a job's log records to its task, which writes them to the task log."""

    def __init__(self, job: _Job) -> None:
        super().__init__()
        self.job = job

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.job.send({"type": "log", "level": record.levelno, "message": record.getMessage()})
        except Exception:  # noqa: BLE001 - logging must never fail the job
            self.handleError(record)


class RuntimeServer:
    """Serves one device on one Unix socket until `shutdown` (or SIGTERM/SIGINT under `serve_forever`)."""

    def __init__(self, socket_path: str | os.PathLike[str], device: str = "cpu", *,
                 preload: Sequence[str] = (), model_root: Optional[str] = None,
                 ram_cache_gb: Optional[float] = None, vram_cache_gb: Optional[float] = None,
                 max_batch: Optional[int] = None, cancel_grace_seconds: Optional[float] = None) -> None:
        self.socket_path = Path(socket_path)
        self.device = device
        self.preload = list(preload)
        self.model_root = model_root
        self.ram_cache_gb = ram_cache_gb
        self.vram_cache_gb = vram_cache_gb
        self.started = time.time()
        self.jobs_run = 0
        self.jobs_failed = 0
        self.jobs_canceled = 0
        self.jobs_abandoned = 0
        self.cancel_grace_seconds = (cancel_grace_seconds if cancel_grace_seconds is not None
                                     else settings().runtime_cancel_grace_seconds)
        self.preloaded: list[str] = []
        self._queue: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._numbers = itertools.count(1)
        self._executor_numbers = itertools.count(0)
        self._running: set[_Job] = set()
        self._running_lock = threading.Lock()
        self.device_scheduler = DeviceScheduler(max_batch if max_batch is not None else configured_max_batch())
        self._managers: dict[Optional[str], Any] = {}
        self._calls = _SharedCalls()
        self._stop = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Binds the socket and starts the executor and accept threads; returns at once."""
        self._check_device()
        self._bind()
        self._threads = [self._executor_thread() for _ in range(self.device_scheduler.max_batch)]
        self._threads.append(threading.Thread(target=self._accept_loop, name="runtime-accept", daemon=True))
        self._threads.append(threading.Thread(target=self._watchdog, name="runtime-watchdog", daemon=True))
        for thread in self._threads:
            thread.start()
        if self.preload:
            self._queue.put(_Job(next(self._numbers), {"op": "preload", "models": self.preload,
                                                       "model_root": self.model_root}, None))
        log.info("runtime serving %s on %s (pid %d)", self.device, self.socket_path, os.getpid())

    def serve_forever(self) -> None:
        """`start`, then block until SIGTERM or SIGINT; the socket file is removed on the way out."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self._stop.set()
        with self._running_lock:
            for job in self._running:
                job.cancel()
        for _ in range(self.device_scheduler.max_batch):
            self._queue.put(None)
        if self._listener is not None:
            self._listener.close()
        for thread in list(self._threads):
            thread.join(timeout=30)
        self.socket_path.unlink(missing_ok=True)

    def _check_device(self) -> None:
        if self.device == "cpu":
            return
        import torch

        kind, _, number = self.device.partition(":")
        if kind != "cuda" or not (number or "0").isdigit():
            raise RuntimeStartError(f"runtime --device {self.device!r}: expected cpu, cuda or cuda:N")
        index = int(number or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise RuntimeStartError(f"runtime --device {self.device}: this host has {torch.cuda.device_count()} "
                                    "CUDA devices")
        torch.cuda.set_device(index)

    def _bind(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.socket_path))
            except OSError:
                self.socket_path.unlink()  # left by a runtime that died: nobody is listening
            else:
                probe.close()
                raise RuntimeStartError(f"another runtime is already serving {self.socket_path}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o117)  # the socket is for this host's workers (same user or group) only
        try:
            listener.bind(str(self.socket_path))
        finally:
            os.umask(old_umask)
        listener.listen(64)
        listener.settimeout(0.5)
        self._listener = listener

    # --- connections ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # closed by shutdown
            connection.settimeout(None)
            threading.Thread(target=self._serve_connection, args=(connection,), daemon=True,
                             name="runtime-connection").start()

    def _serve_connection(self, connection: socket.socket) -> None:
        try:
            request = recv_message(connection)
            if request is None:
                return
            op = request.get("op")
            if op == "ping":
                send_message(connection, {"type": "pong", **self._identity(), "busy": self.busy,
                                          "queued": self._queue.qsize()})
            elif op == "status":
                send_message(connection, {"type": "status", **self.status()})
            elif op in ("run", "preload"):
                self._serve_job(_Job(next(self._numbers), request, connection))
            else:
                send_message(connection, {"type": "error", "error": "RuntimeProtocolError",
                                          "message": f"unknown runtime op {op!r}"})
        except Exception as exc:  # noqa: BLE001 - one bad client must not stop the runtime
            log.warning("runtime connection failed: %s", exc)
        finally:
            connection.close()

    def _serve_job(self, job: _Job) -> None:
        """Queues the job, then reads the client's messages until the job is done: ``cancel``, or the
        connection closing (the task process was killed), cancels it."""
        assert job.connection is not None
        call = self._calls.join(job.request)  # before the job queues: the call lives until its last job is done
        try:
            self._queue.put(job)
            self._read_until_done(job)
        finally:
            self._calls.leave(call)

    def _read_until_done(self, job: _Job) -> None:
        assert job.connection is not None
        while not job.done.is_set():
            try:
                message = recv_message(job.connection)
            except OSError:
                message = None
            if message is None:
                if not job.done.is_set():
                    log.info("job %d: its task disconnected; canceling", job.number)
                    job.client_gone = True
                    job.cancel()
                break
            if message.get("op") == "cancel":
                log.info("job %d: canceled by its task", job.number)
                job.cancel()
        job.done.wait()

    # --- execution --------------------------------------------------------------------------------

    def _executor_thread(self) -> threading.Thread:
        return threading.Thread(target=self._executor, name=f"runtime-executor-{next(self._executor_numbers)}",
                                daemon=True)

    def _executor(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.thread_ident = threading.get_ident()
            with self._running_lock:
                self._running.add(job)
            try:
                with self.device_scheduler.job():
                    self._execute(job)
            except CanceledError:
                pass  # abandoned while it waited for the device; already answered
            finally:
                with self._running_lock:
                    self._running.discard(job)
                job.done.set()
            if job.abandoned:  # a replacement took this thread's place when the job was abandoned
                self.device_scheduler.forget(job.thread_ident)
                log.info("job %d: its abandoned thread has ended", job.number)
                return

    def _watchdog(self) -> None:
        """Abandons canceled jobs that have not stopped within the grace period."""
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._running_lock:
                overdue = [job for job in self._running if not job.abandoned and job.canceled_at is not None
                           and job.thread_ident is not None and now - job.canceled_at >= self.cancel_grace_seconds]
            for job in overdue:
                self._abandon(job)

    def _abandon(self, job: _Job) -> None:
        job.abandoned = True
        self.jobs_canceled += 1  # an abandoned job is a canceled one that did not stop in time
        self.jobs_abandoned += 1
        log.warning("job %d: still running %.1f s after it was canceled; abandoning it (the device goes to the next "
                    "job, its thread stops at its next cancel check)", job.number, self.cancel_grace_seconds)
        job.send(error_message(CanceledError(
            f"canceled; the job did not stop within {self.cancel_grace_seconds:g} s, so the runtime gave the device "
            "to the next job")))
        job.client_gone = True  # nothing more goes to its task
        job.done.set()  # its connection thread returns
        assert job.thread_ident is not None
        self.device_scheduler.abandon(job.thread_ident)
        if not self._stop.is_set():
            thread = self._executor_thread()
            self._threads.append(thread)
            thread.start()

    def _execute(self, job: _Job) -> None:
        """Runs one job on the device and answers its task; a failure is the job's, never the runtime's."""
        try:
            if job.cancel_event.is_set():
                self.jobs_canceled += 1
                job.send(error_message(CanceledError("canceled before the runtime started it")))
            elif job.request.get("op") == "preload":
                job.send(self._preload(job))
            else:
                job.send(self._run(job))
        except BaseException as exc:  # noqa: BLE001 - the job fails, the runtime carries on
            if job.abandoned:
                log.info("job %d (abandoned) stopped: %s", job.number, exc)
                return
            if isinstance(exc, CanceledError) or job.cancel_event.is_set():
                self.jobs_canceled += 1
            else:
                self.jobs_failed += 1
                log.warning("job %d failed: %s\n%s", job.number, exc, traceback.format_exc())
            job.send(error_message(exc))
        finally:
            self._release_device_memory()

    def _run(self, job: _Job) -> dict[str, Any]:
        from invokeai_provider.execution.graph_runs import TaskEnvironment, run_graph_in_process

        request = job.request
        values = {k: (request.get("env") or {}).get(k) for k in _ENV_FIELDS}
        logger = logging.Logger(f"invokeai_provider.runtime.job{job.number}", logging.INFO)
        logger.parent = log  # also in the runtime's own log
        logger.addHandler(_ForwardingHandler(job))
        meter = _ForwardingMeter(job)
        env = TaskEnvironment(**values, logger=logger, cancel_event=job.cancel_event, usage=meter)
        identity = self._identity()
        logger.info("running %s on %s (runtime pid %d, job %d)", env.task_id, self.device, os.getpid(), job.number)
        services = {"models": self._manager(env.model_root),
                    "device": self.device_scheduler.for_run(f"{env.tenant}/{env.dag_id}/{env.run_id}")}
        state = run_graph_in_process(request["graph"], env, services,
                                     embedded_graph=request.get("embedded_graph"),
                                     workflow_json=request.get("workflow_json"), runtime=identity,
                                     persist=request.get("persist"), call=self._calls.get(request, env))
        self.jobs_run += 1
        return {"type": "result", "state": state.to_dict(), "models": meter.models,
                "cache": meter.model_cache, "runtime": identity}

    def _preload(self, job: _Job) -> dict[str, Any]:
        manager = self._manager(job.request.get("model_root") or self.model_root)
        loaded: list[str] = []
        with manager.cache.track() as stats:
            for ref in job.request.get("models") or []:
                started = time.perf_counter()
                keys = manager.preload(ref)
                loaded += keys
                log.info("preloaded %s (%d parts) in %.2f s", ref, len(keys), time.perf_counter() - started)
        self.preloaded = sorted(set(self.preloaded) | set(loaded))
        return {"type": "preloaded", "keys": loaded, "cache": stats.report()}

    def _manager(self, model_root: Optional[str]) -> Any:
        """One model manager (registry + RAM/VRAM cache on this device) per model root."""
        if model_root not in self._managers:
            from invokeai_provider.models.model_manager.manager import ModelManager, cache_budget_bytes
            from invokeai_provider.models.model_manager.ram_cache import ModelCache
            from invokeai_provider.models.model_manager.registry import ModelRegistry

            cache = ModelCache(ram_bytes=cache_budget_bytes("ram_cache_gb", self.ram_cache_gb),
                               vram_bytes=cache_budget_bytes("vram_cache_gb", self.vram_cache_gb),
                               execution_device=self.device)
            self._managers[model_root] = ModelManager(ModelRegistry(model_root), cache, device=self.device)
        return self._managers[model_root]

    def _release_device_memory(self) -> None:
        """Frees the activations of the finished job (cached models stay); a no-op on CPU. Called on the device."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # --- reports ----------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A job that is not abandoned is running (an abandoned one no longer holds the device)."""
        with self._running_lock:
            return any(not job.abandoned for job in self._running)

    def _identity(self) -> dict[str, Any]:
        return {"device": self.device, "pid": os.getpid(), "socket": str(self.socket_path),
                "protocol": PROTOCOL_VERSION}

    def status(self) -> dict[str, Any]:
        caches = {str(root): {**manager.cache.stats.as_dict(), "models": manager.cache.keys()}
                  for root, manager in list(self._managers.items())}  # the executor may add one meanwhile
        return {**self._identity(), "uptime_seconds": round(time.time() - self.started, 1),
                "busy": self.busy, "running": sum(not job.abandoned for job in list(self._running)),
                "abandoned_running": sum(job.abandoned for job in list(self._running)), "queued": self._queue.qsize(),
                "max_batch": self.device_scheduler.max_batch, "denoise_batches": self.device_scheduler.stats.as_dict(),
                "jobs_run": self.jobs_run,
                "jobs_failed": self.jobs_failed, "jobs_canceled": self.jobs_canceled,
                "jobs_abandoned": self.jobs_abandoned, "open_calls": len(self._calls), "preloaded": self.preloaded,
                "model_caches": caches}


class _SharedCalls:
    """The open engine calls whose jobs the runtime holds: ``call`` id (with the run it writes to) -> the
    `EngineCall` its jobs share and how many of them are queued or running. A call's first job to run opens it;
    it is dropped with its last job, so a retried chunk (a new id) starts with nothing of the failed try's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[Any, ...], list[Any]] = {}  # key -> [EngineCall or None, jobs]

    @staticmethod
    def _key(request: dict[str, Any]) -> Optional[tuple[Any, ...]]:
        call = request.get("call")
        if not call or request.get("persist") is None:  # a lone job, or one that writes everything as it goes
            return None
        env = request.get("env") or {}
        return (str(call), *(env.get(k) for k in ("tenant", "artifact_root", "dag_id", "run_id")))

    def join(self, request: dict[str, Any]) -> Optional[tuple[Any, ...]]:
        key = self._key(request)
        if key is not None:
            with self._lock:
                self._open.setdefault(key, [None, 0])[1] += 1
        return key

    def leave(self, key: Optional[tuple[Any, ...]]) -> None:
        if key is None:
            return
        with self._lock:
            entry = self._open[key]
            entry[1] -= 1
            if entry[1] == 0:
                del self._open[key]

    def get(self, request: dict[str, Any], env: Any) -> Any:
        """The job's share of its call (None: a call of its own); opened by the first of its jobs to ask."""
        key = self._key(request)
        if key is None:
            return None
        from invokeai_provider.execution.graph_runs import EngineCall

        with self._lock:
            entry = self._open.get(key)
            if entry is None:  # not joined (a preload, a test driving `_run` directly)
                return None
            if entry[0] is None:
                entry[0] = EngineCall.open(env)
            return entry[0]

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


class _ForwardingMeter(UsageMeter):
    """The usage meter of a job in the runtime: progress events go to the task (which counts the steps and
    logs them); the models it loads and the cache figures are returned with the result."""

    def __init__(self, job: _Job) -> None:
        super().__init__()
        self.job = job

    def progress_callback(self, logger: logging.Logger) -> Callable[[dict[str, Any]], None]:
        return lambda event: self.job.send({"type": "progress", "event": event})

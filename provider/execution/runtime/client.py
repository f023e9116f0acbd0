"""The task side of the per-GPU runtime (see `invokeai_provider.execution.runtime.server`).

Light on purpose: a task that hands its segment to the runtime imports neither torch nor diffusers.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable, Optional

from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.execution.runtime.protocol import recv_message, remote_error, send_message


class RuntimeUnavailableError(InvokeAIProviderError):
    """Nothing answers on the runtime socket."""


class RuntimeCrashedError(InvokeAIProviderError):
    """The runtime went away while it ran this task's segment; the try fails and Airflow retries it."""


class RuntimeClient:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def _connect(self, timeout: Optional[float]) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise RuntimeUnavailableError(f"no GPU runtime answers on {self.socket_path}: {exc}") from None
        return sock

    def _ask(self, request: dict[str, Any], timeout: Optional[float]) -> dict[str, Any]:
        sock = self._connect(timeout)
        try:
            send_message(sock, request)
            answer = recv_message(sock)
        except OSError as exc:
            raise RuntimeUnavailableError(f"GPU runtime on {self.socket_path} did not answer: {exc}") from None
        finally:
            sock.close()
        if answer is None:
            raise RuntimeUnavailableError(f"GPU runtime on {self.socket_path} closed the connection")
        if answer.get("type") == "error":
            raise remote_error(answer)
        return answer

    def ping(self, timeout: float = 2.0) -> Optional[dict[str, Any]]:
        """The runtime's identity (device, pid, busy, queued), or None when it does not answer."""
        try:
            return self._ask({"op": "ping"}, timeout)
        except RuntimeUnavailableError:
            return None

    def wait_until_answering(self, seconds: float) -> bool:
        """True once the runtime answers a ping; gives up after ``seconds`` (it may be restarting)."""
        deadline = time.monotonic() + seconds
        while True:
            if self.ping() is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        return self._ask({"op": "status"}, timeout)

    def preload(self, models: list[str], model_root: Optional[str] = None) -> dict[str, Any]:
        """Loads the models in the runtime (after the jobs queued before); waits until they are warm."""
        return self._ask({"op": "preload", "models": models, "model_root": model_root}, None)

    def run_graph(self, request: dict[str, Any], *, logger: logging.Logger, cancel_event: threading.Event,
                  on_progress: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
        """Runs a (sub)graph in the runtime, logging its lines and progress here; returns its result message.

        Setting ``cancel_event`` (the operator's on_kill) cancels the job at its next denoising step; any
        exception here (a timeout) closes the connection, which cancels it too.
        """
        sock = self._connect(None)
        send_lock = threading.Lock()
        finished = threading.Event()

        def forward_cancel() -> None:
            while not finished.is_set():
                if cancel_event.wait(0.2):
                    with send_lock:
                        try:
                            send_message(sock, {"op": "cancel"})
                        except OSError:
                            pass
                    return

        watcher = threading.Thread(target=forward_cancel, name="runtime-cancel", daemon=True)
        try:
            with send_lock:
                send_message(sock, {"op": "run", **request})
            watcher.start()
            while True:
                try:
                    message = recv_message(sock)
                except OSError as exc:
                    raise RuntimeCrashedError(f"GPU runtime on {self.socket_path}: connection lost while it ran "
                                              f"this task's nodes ({exc})") from None
                if message is None:
                    raise RuntimeCrashedError(
                        f"GPU runtime on {self.socket_path} exited while it ran this task's nodes; this try fails "
                        "and Airflow retries it (the runtime is restarted by its supervisor)")
                kind = message.get("type")
                if kind == "log":
                    logger.log(int(message.get("level") or logging.INFO), "%s", message.get("message"))
                elif kind == "progress":
                    event = message.get("event") or {}
                    if on_progress is not None:
                        on_progress(event)
                    else:
                        logger.info("%s: %s", event.get("node_id"), event.get("message"))
                elif kind == "result":
                    return message
                elif kind == "error":
                    raise remote_error(message)
        finally:
            finished.set()
            sock.close()

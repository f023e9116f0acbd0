"""The wire format between GPU tasks and the per-GPU runtime: length-prefixed JSON over a Unix socket.

Every message is a JSON object preceded by its length (4 bytes, big-endian). JSON and not pickle: the
runtime executes on behalf of any task process of the host, and nothing it receives may run code.

A client opens one connection per request and sends one of:

- ``{"op": "ping"}`` -> ``{"type": "pong", ...}`` (device, pid, busy, queued)
- ``{"op": "status"}`` -> ``{"type": "status", ...}`` (model cache statistics, loaded models, jobs)
- ``{"op": "preload", "models": [...], "model_root": ...}`` -> ``{"type": "preloaded", ...}``
- ``{"op": "run", "graph": ..., "env": ..., "persist": [...], "call": ...}`` -> any number of ``log`` and
  ``progress`` messages, then one ``result`` (the serialised execution state) or ``error``. While it runs, the
  client may send ``{"op": "cancel"}``; closing the connection cancels too. ``persist`` names the outputs whose
  objects leave the job (the rest stay in memory); jobs with one ``call`` id (a chunk's items) share a store,
  node cache and those in-memory objects while any of them is queued or running.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Optional

from invokeai_provider.errors import InvokeAIProviderError

PROTOCOL_VERSION = 1
_HEADER = struct.Struct("!I")
MAX_MESSAGE_BYTES = 512 << 20  # a segment's graph and state are JSON of node values, never tensors


class RuntimeProtocolError(InvokeAIProviderError):
    """A message on the runtime socket was malformed or too large."""


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    payload = json.dumps(message, separators=(",", ":")).encode()
    if len(payload) > MAX_MESSAGE_BYTES:
        raise RuntimeProtocolError(f"runtime message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _recv_exactly(sock: socket.socket, size: int) -> Optional[bytes]:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            if chunks:
                raise RuntimeProtocolError(f"connection closed after {size - remaining} of {size} bytes")
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> Optional[dict[str, Any]]:
    """The next message, or None when the peer closed the connection between messages."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise RuntimeProtocolError(f"runtime message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    payload = _recv_exactly(sock, size)
    if payload is None:
        raise RuntimeProtocolError("connection closed between a message's header and its body")
    message = json.loads(payload)
    if not isinstance(message, dict):
        raise RuntimeProtocolError(f"runtime message is a {type(message).__name__}, expected an object")
    return message


def error_message(exc: BaseException) -> dict[str, Any]:
    """An exception as a message; `raise_remote_error` turns it back into the same error class."""
    return {"type": "error", "error": type(exc).__name__, "message": str(exc),
            "node_id": getattr(exc, "node_id", None), "field": getattr(exc, "field", None)}


def remote_error(message: dict[str, Any]) -> InvokeAIProviderError:
    """The runtime's error as this package's exception of the same class (generic when unknown), so a task
    fails the same way whether its segment ran in-process or in the runtime."""
    from invokeai_provider import errors
    from invokeai_provider.models.model_manager import manager, registry

    name = str(message.get("error") or "InvokeAIProviderError")
    cls = next((getattr(module, name) for module in (errors, manager, registry)
                if isinstance(getattr(module, name, None), type)), None)
    text = str(message.get("message") or name)
    if cls is None or not issubclass(cls, InvokeAIProviderError):
        text = f"{name}: {text}"
        cls = InvokeAIProviderError
    error = cls.__new__(cls)
    Exception.__init__(error, text)  # the subclasses' own constructors take structured arguments
    error.node_id = message.get("node_id")
    error.field = message.get("field")
    return error

"""InvokeAI's invocation cache (``services/invocation_cache``) for one engine call.

A node whose hydrated inputs equal an earlier node's (its JSON without the ``id``) gets that node's output
without running: e.g. the sessions of a chunk that share one prompt encode it once. The output is the same
object references (tensor, conditioning and latents names) as the first node's. As in InvokeAI, nodes with
``use_cache`` off (on the class, as random nodes have it, or on the instance) and iterate/collect are never
cached, nor are ifs; unlike InvokeAI, nodes whose output carries an image are never cached either: they
produce one image record per session here. The cache keeps the ``max_size`` most recently used outputs.

The sessions of one engine call run in threads that may share a cache. A thread that needs an output
another thread is computing waits for it instead of computing it twice, off the device meanwhile (the
``waiting`` it is given, the device's `waiting`), and computes it itself when the other fails.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from contextlib import nullcontext
from typing import Callable, ContextManager, Optional

from invokeai_provider.core.invocation import BaseInvocation, BaseInvocationOutput
from invokeai_provider.errors import CanceledError
from invokeai_provider.graph.graph import COLLECT, IF, ITERATE

__all__ = ["NodeCache", "cacheable"]

_NEVER_CACHED = (ITERATE, COLLECT, IF)
_CANCEL_POLL_SECONDS = 0.05


@functools.lru_cache(maxsize=None)
def _produces_images(node_class: type[BaseInvocation]) -> bool:
    return node_class.produces_images()  # once per class: this runs for every executed node


def cacheable(invocation: BaseInvocation) -> bool:
    """Whether a node's output may come from the cache (and go into it)."""
    node_class = type(invocation)
    return (invocation.use_cache and node_class.model_fields["use_cache"].default is not False
            and invocation.get_type() not in _NEVER_CACHED and not _produces_images(node_class))


class NodeCache:
    """Outputs of cacheable nodes by their hydrated inputs: an LRU of ``max_size`` entries (0: nothing cached),
    shared safely by threads, with ``hits`` and ``misses`` counts."""

    def __init__(self, max_size: int = 512) -> None:
        if max_size < 0:
            raise ValueError(f"node cache size: expected 0 or more, got {max_size}")
        self.max_size = max_size
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._outputs: OrderedDict[str, BaseInvocationOutput] = OrderedDict()
        self._computing: dict[str, threading.Event] = {}  # key -> set when the thread computing it is done

    def __len__(self) -> int:
        return len(self._outputs)

    def key(self, invocation: BaseInvocation) -> Optional[str]:
        """The node's cache key (a sha256 of its JSON without ``id``); None: it is not cached."""
        if self.max_size == 0 or not cacheable(invocation):
            return None
        try:
            text = invocation.model_dump_json(exclude={"id"})
        except Exception:  # noqa: BLE001 - an input that is not JSON (an object passed in memory): not cached
            return None
        return hashlib.sha256(text.encode()).hexdigest()

    def get_or_compute(self, key: str, compute: Callable[[], BaseInvocationOutput], *,
                       waiting: Optional[Callable[[], ContextManager[object]]] = None,
                       cancel_event: Optional[threading.Event] = None,
                       keep: Callable[[], bool] = lambda: True) -> tuple[BaseInvocationOutput, bool]:
        """``(a copy of the cached output, True)``, or ``(compute(), False)`` when nobody computed it yet.

        While another thread computes the key this one waits inside ``waiting()`` (raising CanceledError when
        ``cancel_event`` is set); if that thread fails, a waiter computes it. ``keep()``, asked after
        ``compute``, may refuse to store the output (the node wrote image records after all)."""
        while True:
            with self._lock:
                cached = self._outputs.get(key)
                if cached is not None:
                    self._outputs.move_to_end(key)
                    self.hits += 1
                else:
                    running = self._computing.get(key)
                    if running is None:
                        done = self._computing[key] = threading.Event()
                        self.misses += 1
                        break
            if cached is not None:
                return cached.model_copy(deep=True), True  # stored outputs are never changed: copied unlocked
            with waiting() if waiting is not None else nullcontext():
                while not running.wait(_CANCEL_POLL_SECONDS if cancel_event is not None else None):
                    if cancel_event is not None and cancel_event.is_set():
                        raise CanceledError("run canceled while waiting for a node output another session computes")
        stored: Optional[BaseInvocationOutput] = None
        try:
            output = compute()
            if keep():
                stored = output.model_copy(deep=True)
        finally:  # failed or not, the waiters go on: to the output, or to computing it themselves
            with self._lock:
                del self._computing[key]
                if stored is not None:
                    self._outputs[key] = stored
                    while len(self._outputs) > self.max_size:
                        self._outputs.popitem(last=False)
            done.set()
        return output, False

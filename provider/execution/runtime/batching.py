"""The GPU runtime's device: one job on it at a time, except that denoise nodes of one DAG run meet and
share their UNet passes (and latents-to-image nodes their VAE passes).

Jobs run in threads of the runtime, each holding the device for its whole run. A denoise node hands its
prepared item to `DeviceScheduler.denoise` and gives the device up while it waits (parks). When nobody
else holds or wants the device, the oldest parked item's thread takes it back and denoises every parked
item with the same key (same run, UNet, shapes and timesteps, up to ``max_batch``) in one batch, then
hands each its latents. So batches form by themselves when tasks of a mapped run queue at the runtime,
and a lone task waits for nobody. Each item keeps its own scheduler and seeds (see
`models.stable_diffusion.denoise_loop`), so a batched item gives the same image as an unbatched one.

A node doing CPU-only work (parsing a prompt) steps off the device meanwhile (`DeviceScheduler.released`);
so does a job waiting for a node output that another job is computing (`DeviceScheduler.waiting`, the node
cache), without holding back parked denoise items, since the output it waits for may come from one of them.
A canceled job that does not stop in time is abandoned (`DeviceScheduler.abandon`): its thread loses the
device at once and can never take it again, so the next job starts while the old thread finishes the
step it is in and then stops at its next cancel check.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from invokeai_provider.errors import CanceledError, InvokeAIProviderError


class RuntimeConfigError(InvokeAIProviderError):
    """A runtime setting that cannot be used."""


def configured_max_batch() -> int:
    """``[invokeai] runtime_max_batch`` (checked by the config: a whole number of at least 1)."""
    from invokeai_provider.config import ConfigError, settings

    try:
        return settings().runtime_max_batch
    except ConfigError as exc:
        raise RuntimeConfigError(str(exc)) from None


@dataclass(eq=False)
class _Parked:
    item: Any  # a DenoiseItem, a DecodeItem
    key: str
    runner: Any  # items of one key -> their outcomes
    taken: bool = False  # in a batch that is running
    done: bool = False
    outcome: Any = None


@dataclass
class BatchStats:
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    def add(self, size: int) -> None:
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"batches": sum(self.sizes.values()), "items": sum(k * v for k, v in self.sizes.items()),
                "largest": max(self.sizes, default=0), "sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


class DeviceScheduler:
    """Who is on the runtime's device, and the parked denoise items waiting to share a batch."""

    def __init__(self, max_batch: int = 1) -> None:
        if max_batch < 1:
            raise RuntimeConfigError(f"runtime --max-batch: expected a whole number of at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._busy = False  # a job's thread is on the device
        self._holder: Optional[int] = None  # that thread's ident
        self._wanting = 0  # job threads waiting to get on the device (not parked ones)
        self._away = 0  # job threads off the device for CPU work (`released`); they come back to it
        self._parked: list[_Parked] = []
        self._abandoned: set[int] = set()  # threads of abandoned jobs: never on the device again

    @contextmanager
    def job(self) -> Iterator[None]:
        """The device, for one job's run (given up while its denoise node is parked or it is `released`)."""
        self._take_device()
        try:
            yield
        finally:
            self._give_device()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Off the device for CPU-only work inside a job, so other jobs use it meanwhile; back on it after.
        Parked denoise items still wait for such a job, as for one on the device: it may bring an item to batch."""
        self._give_device()
        with self._cond:
            self._away += 1
        try:
            yield
        finally:
            self._take_device(returning=True)

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Off the device while this job waits for another job's result (a node output it computes: the node
        cache); back on it after. Unlike `released`, parked denoise items do not wait for such a job: the result
        it waits for may be one of theirs."""
        self._give_device()
        try:
            yield
        finally:
            self._take_device()

    def abandon(self, thread_ident: int) -> None:
        """Takes the device from a canceled job's thread that did not stop; that thread cannot take it again
        (it raises CanceledError where it would) until `forget` is called for it."""
        with self._cond:
            self._abandoned.add(thread_ident)
            if self._holder == thread_ident:
                self._busy, self._holder = False, None
            self._cond.notify_all()

    def forget(self, thread_ident: int) -> None:
        """The abandoned thread has finished (its ident may be reused by a new thread)."""
        with self._cond:
            self._abandoned.discard(thread_ident)

    def for_run(self, run_key: str) -> "RunDevice":
        """The ``device`` service of one job: its denoise items only batch with items of the same run."""
        return RunDevice(self, run_key)

    def denoise(self, item: Any, run_key: str, runner: Any = None) -> Any:
        """The item's latents, denoised with the other parked items of its key; called on the device. ``runner``
        runs a batch of the item's kind (default: SD's denoise_latents items)."""
        if runner is None:
            from invokeai_provider.models.stable_diffusion.denoise_loop import run_denoise as runner

        return self.batched(item, run_key, runner, counted=True)

    def decode(self, item: Any, run_key: str) -> Any:
        """The item's image tensor, VAE-decoded with the other parked items of its key; called on the device."""
        from invokeai_provider.models.stable_diffusion.vae_decode import run_decode

        return self.batched(item, run_key, run_decode)

    def batched(self, item: Any, run_key: str, runner: Any, counted: bool = False) -> Any:
        """Parks the item (its ``batch_key()`` says which others it may share a pass with) until its batch runs;
        ``runner`` takes the batch's items and returns their outcomes. ``counted``: in `stats` (denoise)."""
        me = threading.get_ident()
        mine = _Parked(item, f"{run_key}\n{type(item).__name__}\n{item.batch_key()}", runner)
        with self._cond:
            self._parked.append(mine)
            if self._holder == me:
                self._busy, self._holder = False, None
            self._cond.notify_all()
            while not mine.done and (mine.taken or self._parked[0] is not mine or self._busy or self._wanting
                                     or self._away):
                if me in self._abandoned and not mine.taken:
                    self._parked.remove(mine)
                    raise CanceledError("the job was abandoned while its denoise item waited for a batch")
                self._cond.wait()
            if mine.done:  # another thread ran it in its batch; back on the device for the rest of the job
                self._take_device(counted=True)
                return _unwrap(mine.outcome)
            group = [p for p in self._parked if p.key == mine.key][:self.max_batch]
            self._parked = [p for p in self._parked if p not in group]
            for parked in group:
                parked.taken = True
            self._busy, self._holder = True, me
        try:
            outcomes: list[Any] = mine.runner([p.item for p in group])
        except BaseException as exc:  # noqa: BLE001 - a failing pass fails every item of the batch
            outcomes = [exc] * len(group)
        with self._cond:
            for parked, outcome in zip(group, outcomes):
                parked.outcome, parked.done = outcome, True
            # the batch's other threads want the device back from now on, before they even wake: the next item this
            # thread parks (its decode after its denoise) waits for them, so their items can join its batch
            self._wanting += len(group) - 1
            if counted:
                self.stats.add(len(group))
            self._cond.notify_all()
        return _unwrap(mine.outcome)

    def _take_device(self, returning: bool = False, counted: bool = False) -> None:
        """``returning``: from `released` (away until it is wanting, in one step, so no batch starts between);
        ``counted``: a thread whose item another ran in a batch, already counted as wanting by that thread."""
        me = threading.get_ident()
        with self._cond:
            if returning:
                self._away -= 1
            if not counted:
                self._wanting += 1
            try:
                while self._busy or me in self._abandoned:
                    if me in self._abandoned:
                        raise CanceledError("the job was abandoned: its thread may not take the device again")
                    self._cond.wait()
            finally:
                self._wanting -= 1
            self._busy, self._holder = True, me

    def _give_device(self) -> None:
        with self._cond:
            if self._holder == threading.get_ident():  # an abandoned thread no longer holds it
                self._busy, self._holder = False, None
                self._cond.notify_all()


@dataclass
class RunDevice:
    """One job's view of the runtime's device: denoise items share batches within the job's run, and CPU-only
    work steps off the device."""

    scheduler: DeviceScheduler
    run_key: str

    def denoise(self, item: Any, runner: Any = None) -> Any:
        return self.scheduler.denoise(item, self.run_key, runner)

    def decode(self, item: Any) -> Any:
        return self.scheduler.decode(item, self.run_key)

    def released(self) -> Any:
        return self.scheduler.released()

    def waiting(self) -> Any:
        return self.scheduler.waiting()


def _unwrap(outcome: Optional[Any]) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome

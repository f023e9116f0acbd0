"""`DeviceScheduler.waiting`: a job waiting for another job's node output steps off the device without holding
back parked denoise items (the output it waits for may be theirs), unlike `released`."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from invokeai_provider.errors import CanceledError
from invokeai_provider.execution.runtime.batching import DeviceScheduler


class Item:
    """A denoise item as the scheduler sees it: a batch key (asked as the item parks) and its latents."""

    def __init__(self, latents: str) -> None:
        self.latents = latents
        self.parking = threading.Event()

    def batch_key(self) -> str:
        self.parking.set()
        return "unet|64x64|steps"


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """run_denoise replaced: each item's latents, and the batches it was called with."""
    from invokeai_provider.models.stable_diffusion import denoise_loop

    seen: list[list[str]] = []

    def run_denoise(items: list[Item]) -> list[Any]:
        seen.append([i.latents for i in items])
        return [i.latents for i in items]

    monkeypatch.setattr(denoise_loop, "run_denoise", run_denoise)
    return seen


def start(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_waiting_lets_another_job_on_and_takes_the_device_back() -> None:
    scheduler = DeviceScheduler(1)
    order: list[str] = []
    in_wait, other_done, waiter_back = threading.Event(), threading.Event(), threading.Event()

    def waiter() -> None:
        with scheduler.job():
            with scheduler.waiting():
                in_wait.set()
                assert other_done.wait(5)
            order.append("back on the device")
            waiter_back.set()
            assert third_waits.wait(5)
            order.append("waiter's job ends")

    def other() -> None:
        assert in_wait.wait(5)
        with scheduler.job():
            order.append("other")
        other_done.set()

    third_waits = threading.Event()

    def third() -> None:
        assert waiter_back.wait(5)
        third_waits.set()
        with scheduler.job():  # the waiter holds the device again: this job waits for its end
            order.append("third")

    threads = [start(waiter), start(other), start(third)]
    for thread in threads:
        thread.join(10)
    assert order == ["other", "back on the device", "waiter's job ends", "third"]


def test_a_parked_denoise_runs_while_another_job_waits_for_its_result(batches: list[list[str]]) -> None:
    """The would-be deadlock: job A computes a cached node that is a denoise and parks for a batch; job B needs
    the same output and waits for A. Off the device with `released`, B would hold A's batch back for ever (parked
    items wait for away jobs); with `waiting` A's item runs and B gets on once A is done."""
    scheduler = DeviceScheduler(4)
    item = Item("latents-A")
    b_on, a_done = threading.Event(), threading.Event()
    order: list[str] = []

    def job_a() -> None:
        assert b_on.wait(5)
        with scheduler.job():
            order.append(scheduler.denoise(item, "run"))
            a_done.set()

    def job_b() -> None:
        with scheduler.job():
            b_on.set()
            with scheduler.waiting():  # the node cache's wait for A's output
                assert a_done.wait(5), "A's parked denoise never ran"
            order.append("B has A's output")

    threads = [start(job_b), start(job_a)]
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
    assert order == ["latents-A", "B has A's output"] and batches == [["latents-A"]]


def test_released_would_hold_the_parked_denoise_back(batches: list[list[str]]) -> None:
    """The contrast: while B is away (`released`), A's parked item does not run, so B waiting there for it
    would never end. Here B gives up after a moment and A's item runs once B is back."""
    scheduler = DeviceScheduler(4)
    item = Item("latents-A")
    b_on, a_done = threading.Event(), threading.Event()
    held_back: list[bool] = []

    def job_a() -> None:
        assert b_on.wait(5)
        with scheduler.job():
            scheduler.denoise(item, "run")
            a_done.set()

    def job_b() -> None:
        with scheduler.job():
            b_on.set()
            with scheduler.released():
                assert item.parking.wait(5)  # A got the device and parked its item
                held_back.append(not a_done.wait(0.3))

    threads = [start(job_b), start(job_a)]
    for thread in threads:
        thread.join(10)
    assert held_back == [True] and a_done.is_set() and batches == [["latents-A"]]


def test_an_abandoned_job_may_not_come_back_from_waiting() -> None:
    scheduler = DeviceScheduler(1)
    ident: list[int] = []
    in_wait, abandoned = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def stuck() -> None:
        ident.append(threading.get_ident())
        with scheduler.job():
            try:
                with scheduler.waiting():
                    in_wait.set()
                    assert abandoned.wait(5)
            except CanceledError as exc:
                raised.append(exc)

    thread = start(stuck)
    assert in_wait.wait(5)
    scheduler.abandon(ident[0])
    abandoned.set()
    thread.join(5)
    assert raised and "abandoned" in str(raised[0])
    scheduler.forget(ident[0])
    with scheduler.job():  # the device is free
        pass


def test_run_device_waiting_is_the_schedulers() -> None:
    scheduler = DeviceScheduler(1)
    device = scheduler.for_run("r")
    with scheduler.job():
        with device.waiting():
            with scheduler.job():  # another job could take the device meanwhile
                pass

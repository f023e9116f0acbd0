"""The host-local disk cache: one fetch per host under concurrency, atomic entries, LRU eviction by bytes."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from invokeai_provider.models.model_manager.disk_cache import DiskCache


def _write(size: int, log: Path | None = None):
    def fetch(destination: Path) -> None:
        if log is not None:
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(0.3)  # a slow download, so the other processes arrive while it runs
        destination.write_bytes(b"x" * size)
    return fetch


def _worker(root: str, log: str, results: "multiprocessing.Queue[str]") -> None:
    cache = DiskCache(root, budget_bytes=10_000)
    with cache.use("model-a", _write(100, Path(log))) as path:
        results.put(path.read_bytes().decode()[:3])


def test_concurrent_processes_fetch_once(tmp_path):
    # spawned, not forked: a fork of this many-threaded test process (torch, Airflow, boto3) can inherit a
    # held lock and hang, which is not what this test is about
    spawn = multiprocessing.get_context("spawn")
    log = tmp_path / "fetches.log"
    results: "multiprocessing.Queue[str]" = spawn.Queue()
    workers = [spawn.Process(target=_worker, args=(str(tmp_path / "cache"), str(log), results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert len(log.read_text().splitlines()) == 1
    assert sorted(results.get() for _ in range(4)) == ["xxx"] * 4


def test_a_failed_fetch_leaves_nothing(tmp_path):
    cache = DiskCache(tmp_path, budget_bytes=1000)

    def broken(destination: Path) -> None:
        destination.write_bytes(b"partial")
        raise ConnectionError("network down")

    with pytest.raises(ConnectionError):
        with cache.use("m", broken):
            pass
    assert cache.keys() == [] and list((tmp_path / "staging").iterdir()) == []
    with cache.use("m", _write(10)) as path:
        assert path.read_bytes() == b"x" * 10


def test_least_recently_used_entries_go_past_the_budget(tmp_path):
    cache = DiskCache(tmp_path, budget_bytes=250)
    for key in ("a", "b"):
        with cache.use(key, _write(100)):
            pass
        time.sleep(0.02)
    with cache.use("a", _write(100)):  # a is now more recent than b
        pass
    time.sleep(0.02)
    with cache.use("c", _write(100)):
        pass
    assert cache.keys() == ["a", "c"]


def test_an_entry_in_use_is_not_evicted(tmp_path):
    cache = DiskCache(tmp_path, budget_bytes=150)
    with cache.use("busy", _write(100)) as busy:
        time.sleep(0.02)
        with cache.use("other", _write(100)):
            assert busy.exists()
    assert "busy" in cache.keys()


def test_folders_are_cached_whole(tmp_path):
    def folder(destination: Path) -> None:
        (destination / "unet").mkdir(parents=True)
        (destination / "unet" / "w.safetensors").write_bytes(b"w" * 50)

    cache = DiskCache(tmp_path, budget_bytes=1000)
    with cache.use("pipe", folder) as path:
        assert (path / "unet" / "w.safetensors").read_bytes() == b"w" * 50


def test_an_evicted_folder_goes_whole_and_keys_are_single_segments(tmp_path):
    def folder(destination: Path) -> None:
        (destination / "unet").mkdir(parents=True)
        for name in ("a.safetensors", "b.safetensors"):
            (destination / "unet" / name).write_bytes(b"w" * 50)

    cache = DiskCache(tmp_path, budget_bytes=150)
    with cache.use("old", folder):
        pass
    time.sleep(0.02)
    with cache.use("new", folder) as path:
        assert (path / "unet" / "b.safetensors").read_bytes() == b"w" * 50
    assert cache.keys() == ["new"]
    assert list((tmp_path / "staging").iterdir()) == []  # moved aside, then removed: nothing left over
    with pytest.raises(ValueError, match="single path segment"):
        with cache.use("models/new", folder):
            pass

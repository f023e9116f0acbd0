"""The model cache: hits and misses, LRU eviction by bytes, models in use are kept, one build per key."""

from __future__ import annotations

import threading
import time

import torch

from invokeai_provider.models.model_manager.ram_cache import ModelCache, model_bytes


def linear(n: int) -> torch.nn.Module:
    return torch.nn.Linear(n, n, bias=False)  # n*n float32 parameters


def test_hits_misses_and_load_seconds():
    cache = ModelCache(ram_bytes=1 << 20)
    first = cache.get("a", lambda: linear(4))
    again = cache.get("a", lambda: linear(4))
    assert first is again
    assert (cache.stats.hits, cache.stats.misses) == (1, 1) and cache.stats.load_seconds >= 0


def test_least_recently_used_is_evicted_by_bytes():
    size = model_bytes(linear(16))
    cache = ModelCache(ram_bytes=2 * size)
    cache.get("a", lambda: linear(16))
    cache.get("b", lambda: linear(16))
    cache.get("a", lambda: linear(16))  # a is now the most recent
    cache.get("c", lambda: linear(16))
    assert cache.keys() == ["a", "c"] and cache.stats.evictions == 1


def test_a_model_in_use_is_not_evicted():
    size = model_bytes(linear(16))
    cache = ModelCache(ram_bytes=size)
    with cache.use("busy", lambda: linear(16)) as model:
        cache.get("other", lambda: linear(16))
        assert "busy" in cache and model.weight.shape == (16, 16)
    assert "other" in cache


def test_concurrent_callers_build_once():
    cache = ModelCache(ram_bytes=1 << 20)
    builds = []

    def build():
        builds.append(threading.get_ident())
        time.sleep(0.05)
        return linear(4)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", build))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len({id(r) for r in results}) == 1
    assert cache.stats.misses == 1 and cache.stats.hits == 5


def test_state_dicts_count_their_bytes():
    assert model_bytes({"w": torch.zeros(10, dtype=torch.float16), "note": "x"}) == 20

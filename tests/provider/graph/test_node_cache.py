"""InvokeAI's invocation cache in the engine: equal nodes of one engine call share one output."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
from helpers import edge, graph, node
from nodes_for_tests import CountedInvocation, ValueTestOutput

from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.errors import CanceledError
from invokeai_provider.graph.engine import run_graph
from invokeai_provider.graph.graph import Graph
from invokeai_provider.graph.node_cache import NodeCache, cacheable


@pytest.fixture(autouse=True)
def _reset_counter() -> None:
    CountedInvocation.calls.clear()


def counted_pair(**second: Any) -> dict:
    return graph(node("a", "test_counted", value="banana"), node("b", "test_counted", value="banana", **second))


def test_a_node_with_the_inputs_of_an_earlier_one_is_a_hit(run_context):
    run_context.node_cache = cache = NodeCache(8)
    doc = graph(node("p", "test_prompt", prompt="banana"), node("a", "test_counted", value="banana"),
                node("b", "test_counted"), edges=[edge("p", "prompt", "b", "value")])
    state = run_graph(Graph.from_dict(doc), run_context)
    assert CountedInvocation.calls == [("a", "banana")]  # b's hydrated inputs equal a's: it did not run
    assert (cache.hits, cache.misses) == (1, 2)
    assert state.history == ["p", "a", "b"] and set(state.timings) == {"p", "a", "b"}
    assert state.results["b"] == state.results["a"] and state.results["b"] is not state.results["a"]
    assert not state.records


def test_a_cache_is_shared_by_engine_runs_and_a_different_input_misses(run_context):
    run_context.node_cache = cache = NodeCache(8)
    run_graph(Graph.from_dict(graph(node("a", "test_counted", value=1))), run_context)
    run_graph(Graph.from_dict(graph(node("other-id", "test_counted", value=1))), run_context)
    run_graph(Graph.from_dict(graph(node("a", "test_counted", value=2))), run_context)
    assert CountedInvocation.calls == [("a", 1), ("a", 2)]
    assert (cache.hits, cache.misses, len(cache)) == (1, 2, 2)


def test_use_cache_false_on_the_node_runs_it(run_context):
    run_context.node_cache = cache = NodeCache(8)
    run_graph(Graph.from_dict(counted_pair(use_cache=False)), run_context)
    assert [exec_id for exec_id, _ in CountedInvocation.calls] == ["a", "b"]
    assert cache.hits == 0


def test_never_cached_node_classes():
    classes = InvocationRegistry.invocation_classes()
    assert not cacheable(classes["rand_int"](id="r"))  # use_cache=False on the class: never cached
    assert not cacheable(classes["rand_int"](id="r", use_cache=True))
    assert not cacheable(classes["iterate"](id="i")) and not cacheable(classes["collect"](id="c"))
    assert not cacheable(classes["blank_image"](id="b"))  # its output carries an image
    assert cacheable(classes["test_counted"](id="t")) and cacheable(classes["add"](id="m"))


def test_an_image_node_makes_one_image_per_session(run_context):
    run_context.node_cache = cache = NodeCache(8)
    doc = graph(node("one", "blank_image", width=8, height=8), node("two", "blank_image", width=8, height=8))
    state = run_graph(Graph.from_dict(doc), run_context)
    names = [state.results[n].image.image_name for n in ("one", "two")]
    assert names[0] != names[1] and set(state.records) == {"one", "two"}
    assert (cache.hits, cache.misses) == (0, 0)


def test_size_zero_disables_the_cache(run_context):
    run_context.node_cache = cache = NodeCache(0)
    run_graph(Graph.from_dict(counted_pair()), run_context)
    assert len(CountedInvocation.calls) == 2 and (cache.hits, cache.misses, len(cache)) == (0, 0, 0)


def computed(value: Any, calls: list[Any]) -> Any:
    def compute() -> ValueTestOutput:
        calls.append(value)
        return ValueTestOutput(value=value)
    return compute


def test_the_least_recently_used_output_goes_first():
    cache, calls = NodeCache(2), []
    for key in ["a", "b", "a", "c", "a", "b"]:  # c evicts b (a was used since), b evicts c
        cache.get_or_compute(key, computed(key, calls))
    assert calls == ["a", "b", "c", "b"] and len(cache) == 2
    assert (cache.hits, cache.misses) == (2, 4)


def test_a_hit_is_a_copy():
    cache = NodeCache(4)
    first, hit = cache.get_or_compute("k", lambda: ValueTestOutput(value=["x"]))
    first.value.append("changed")
    second, hit = cache.get_or_compute("k", lambda: ValueTestOutput(value=["never"]))
    assert hit and second.value == ["x"]
    second.value.append("changed too")
    assert cache.get_or_compute("k", lambda: ValueTestOutput(value=["never"]))[0].value == ["x"]


def test_an_output_that_keep_refuses_is_not_stored():
    cache, calls = NodeCache(4), []
    cache.get_or_compute("k", computed(1, calls), keep=lambda: False)
    cache.get_or_compute("k", computed(2, calls))
    assert calls == [1, 2]


class Waiting:
    """A device's ``waiting``: counts who stepped off the device to wait, and says when one did."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.count = 0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        self.count += 1
        self.entered.set()
        yield


def test_two_threads_compute_a_key_once():
    cache, calls, waiting = NodeCache(4), [], Waiting()
    release = threading.Event()
    results: dict[str, Any] = {}

    def slow() -> ValueTestOutput:
        calls.append("slow")
        assert release.wait(5)
        return ValueTestOutput(value=42)

    def first() -> None:
        results["first"] = cache.get_or_compute("k", slow, waiting=waiting)

    def second() -> None:
        results["second"] = cache.get_or_compute("k", computed(0, calls), waiting=waiting)

    one = threading.Thread(target=first)
    one.start()
    while not calls:  # the first thread computes
        threading.Event().wait(0.001)
    two = threading.Thread(target=second)
    two.start()
    assert waiting.entered.wait(5)  # the second waits for it, off the device
    release.set()
    one.join(5)
    two.join(5)
    assert calls == ["slow"] and waiting.count == 1
    assert results["first"][0].value == results["second"][0].value == 42
    assert (results["first"][1], results["second"][1]) == (False, True)


def test_a_failing_compute_does_not_hang_the_waiter():
    cache, calls, waiting = NodeCache(4), [], Waiting()
    errors: list[BaseException] = []
    results: list[Any] = []

    def failing() -> ValueTestOutput:
        calls.append("failing")
        assert waiting.entered.wait(5)  # fail only once the other thread waits for this key
        raise RuntimeError("boom")

    def first() -> None:
        try:
            cache.get_or_compute("k", failing, waiting=waiting)
        except RuntimeError as exc:
            errors.append(exc)

    one = threading.Thread(target=first)
    one.start()
    while not calls:
        threading.Event().wait(0.001)
    two = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", computed(7, calls),
                                                                              waiting=waiting)))
    two.start()
    one.join(5)
    two.join(5)
    assert not one.is_alive() and not two.is_alive()
    assert [str(e) for e in errors] == ["boom"]
    assert calls == ["failing", 7] and results[0][0].value == 7  # the waiter computed it itself
    assert cache.get_or_compute("k", computed(8, calls))[0].value == 7


def test_a_canceled_waiter_stops_waiting():
    cache, release = NodeCache(4), threading.Event()
    started = threading.Event()

    def slow() -> ValueTestOutput:
        started.set()
        assert release.wait(5)
        return ValueTestOutput(value=1)

    one = threading.Thread(target=lambda: cache.get_or_compute("k", slow))
    one.start()
    assert started.wait(5)
    canceled = threading.Event()
    canceled.set()
    with pytest.raises(CanceledError):
        cache.get_or_compute("k", lambda: ValueTestOutput(value=2), cancel_event=canceled)
    release.set()
    one.join(5)
    assert cache.get_or_compute("k", lambda: ValueTestOutput(value=3))[0].value == 1


def test_sessions_in_threads_share_one_cache_on_one_device(run_context):
    """As a chunk's sessions run (graph_runs): threads taking turns on one device, one cache for all."""
    from invokeai_provider.execution.runtime.batching import DeviceScheduler

    scheduler, cache = DeviceScheduler(4), NodeCache(8)
    doc = graph(node("p", "test_prompt", prompt="shared"), node("c", "test_counted"),
                edges=[edge("p", "prompt", "c", "value")])
    states: list[Any] = []

    def session(number: int) -> None:
        from dataclasses import replace

        run = replace(run_context, name_prefix=f"s{number}-", services={"device": scheduler.for_run("r")},
                      node_cache=cache, cancel_event=threading.Event())
        with scheduler.job():
            states.append(run_graph(Graph.from_dict(doc), run))

    threads = [threading.Thread(target=session, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(states) == 6 and all(s.results["c"].value == "shared" for s in states)
    assert len(CountedInvocation.calls) == 1 and (cache.hits, cache.misses) == (10, 2)

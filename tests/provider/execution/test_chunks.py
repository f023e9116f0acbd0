"""Mapped tasks in chunks: grouping, the plan's chunk listing, and a chunk's items run in one engine call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import sd1_graph
from invokeai_provider.compiler.dag_docs import planned_chunks
from invokeai_provider.compiler.dags import load_compiled
from invokeai_provider.execution.chunks import chunk_instances, chunk_ranges, describe_ranges, effective_chunk_size
from invokeai_provider.execution.graph_runs import TaskEnvironment
from invokeai_provider.execution.task_runtime import run_task
from invokeai_provider.storage.library.names import run_image_name
from invokeai_provider.execution.usage import UsageMeter

TINY_SD1: Any = {"key": "tiny-sd1", "hash": "", "name": "tiny-sd1", "base": "sd-1", "type": "main"}


# --- grouping -----------------------------------------------------------------------------------------------

def test_effective_size_keeps_the_instance_count_within_max_map_length() -> None:
    assert effective_chunk_size(64, 16, 1024) == 16
    assert effective_chunk_size(10_000, 1, 1024) == 10  # ceil(10000 / 1024)
    assert effective_chunk_size(10_000, 16, 1024) == 16
    assert effective_chunk_size(0, 4, 1024) == 4
    assert len(chunk_ranges(10_000, effective_chunk_size(10_000, 1, 1024))) == 1000


def test_ranges_cover_every_item_once_in_order() -> None:
    ranges = chunk_ranges(10, 4)
    assert ranges == [(0, 3), (4, 7), (8, 9)]
    assert describe_ranges(chunk_ranges(10_000, 16)) == "0-15, 16-31, 32-47, …, 9984-9999"
    assert describe_ranges([(0, 0)]) == "0"


def test_chunk_instances_keep_items_and_label_the_range() -> None:
    items = [{"path": [i], "label": f"s{i} pos.prompt=prompt {i}", "inputs": {}, "field_values": [], "skip": None}
             for i in range(5)]
    chunks = chunk_instances(items, 2)
    assert [c["first"] for c in chunks] == [0, 2, 4]
    assert [[i["path"] for i in c["items"]] for c in chunks] == [[[0], [1]], [[2], [3]], [[4]]]
    assert chunks[0]["label"] == "items 0-1: s0 pos.prompt=prompt 0 … s1 pos.prompt=prompt 1"
    assert chunks[2]["label"] == "s4 pos.prompt=prompt 4"  # a chunk of one keeps its item's label
    long = [{**items[0], "label": "x" * 500}, {**items[1], "label": "y" * 500}]
    assert len(chunk_instances(long, 2)[0]["label"]) <= 240


# --- compiling a large batch --------------------------------------------------------------------------------

def prompt_batch(count: int, *, steps: int = 2, size: int = 32) -> dict[str, Any]:
    """A text-to-image graph with a batch over the positive prompt (InvokeAI's enqueue_batch shape)."""
    graph = sd1_graph(TINY_SD1, steps=steps, size=size)
    graph["nodes"]["decode"]["is_intermediate"] = False
    return {"graph": graph, "runs": 1,
            "data": [[{"node_path": "pos", "field_name": "prompt", "items": [f"prompt {i}" for i in range(count)]}]]}


def test_a_10000_prompt_batch_compiles_to_at_most_1024_mapped_instances_and_lists_its_chunks() -> None:
    document = prompt_batch(10_000)
    default = load_compiled(document, model_names=None)
    [mapped] = planned_chunks(default)
    assert mapped.items == 10_000 and mapped.size == 16 and len(mapped.ranges) == 625
    assert mapped.ranges[0] == (0, 15) and mapped.ranges[-1] == (9984, 9999)
    assert "10,000 items in 625 chunks of 16 (0-15, 16-31, 32-47, …, 9984-9999)" in default.doc_md

    unchunked = load_compiled(document, model_names=None, chunk_size=1)  # one per item would be 10,000 > 1,024
    [mapped] = planned_chunks(unchunked)
    assert mapped.size == 10 and len(mapped.ranges) == 1000 <= 1024

    sessions = unchunked.plan.tasks[0]
    env = TaskEnvironment(dag_id="big", run_id="r", task_id=sessions.task_id)
    _, emitted = run_task(unchunked, env)
    [chunks] = emitted.values()
    assert len(chunks) == 1000
    assert [item["path"] for item in chunks[-1]["items"]] == [[i] for i in range(9990, 10_000)]
    assert chunks[-1]["items"][0]["field_values"][0]["value"] == "prompt 9990"


def test_compile_refuses_a_bad_chunk_size() -> None:
    from invokeai_provider.errors import InvokeAIProviderError

    with pytest.raises(InvokeAIProviderError, match="chunk_size: expected a whole number of at least 1, got 0"):
        load_compiled(prompt_batch(2), model_names=None, chunk_size=0)


# --- running chunks -----------------------------------------------------------------------------------------

def run_batch(tmp_path: Path, tiny_registry, document: dict[str, Any], chunk_size: int,
              run_id: str) -> tuple[list[dict[str, Any]], Path]:
    """The batch's sessions task, then every chunk of its mapped task: the outputs of the chunks, in order."""
    compiled = load_compiled(document, model_names=None, chunk_size=chunk_size)
    sessions, mapped = compiled.plan.tasks
    artifacts = tmp_path / run_id

    def env(task_id: str, map_index: Any = None) -> TaskEnvironment:
        return TaskEnvironment(dag_id="chunks", run_id=run_id, task_id=task_id, map_index=map_index,
                               artifact_root=artifacts.as_uri(), model_root=tiny_registry.root.as_uri(),
                               tenant="acme", usage=UsageMeter())

    _, emitted = run_task(compiled, env(sessions.task_id))
    outputs = [run_task(compiled, env(mapped.task_id, index), instance=chunk)[0]
               for index, chunk in enumerate(emitted[mapped.task_id])]
    return outputs, artifacts / "acme" / "runs" / "chunks" / run_id


def decoded(record: dict[str, Any]) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(record["uri"].removeprefix("file://")), dtype=np.int16)


def test_chunks_give_the_unchunked_images_names_and_records(tmp_path: Path, tiny_registry) -> None:
    document = prompt_batch(5, size=64)
    chunked, chunked_root = run_batch(tmp_path, tiny_registry, document, 2, "chunked")
    single, single_root = run_batch(tmp_path, tiny_registry, document, 1, "single")
    assert len(chunked) == 3 and len(single) == 5
    chunked_images = [r for output in chunked for r in output["images"]]
    single_images = [r for output in single for r in output["images"]]
    # each item's image has its slot's name in its run (chunked or not): m<item>.decode-0
    assert [r["image_name"] for r in chunked_images] == [
        run_image_name("acme/runs/chunks/chunked", f"m{i}.decode-0.png") for i in range(5)]
    assert [r["image_name"] for r in single_images] == [
        run_image_name("acme/runs/chunks/single", f"m{i}.decode-0.png") for i in range(5)]
    assert [r["item_index"] for r in chunked_images] == list(range(5))
    assert [r["map_index"] for r in chunked_images] == [0, 0, 1, 1, 2]  # the Airflow task instance's
    for together, alone in zip(chunked_images, single_images):  # batched UNet passes round a little differently
        difference = abs(decoded(together) - decoded(alone))
        assert difference.max() <= 1 and difference.mean() < 0.01, \
            f"{together['image_name']}: a chunk's image differs by up to {difference.max()} levels"
    assert abs(decoded(chunked_images[0]) - decoded(chunked_images[1])).max() > 10  # different prompts differ
    # the same PNG text chunks (graph, workflow, metadata): the session's own graph
    from PIL import Image

    for together, alone in zip(chunked_images, single_images):
        with Image.open(together["uri"].removeprefix("file://")) as a, Image.open(alone["uri"].removeprefix("file://")) as b:
            assert a.info == b.info
        assert json.loads(a.info["invokeai_graph"])["nodes"]["pos"]["prompt"] == f"prompt {together['item_index']}"
    # one record per item, in item order
    assert [record["path"] for output in chunked for record in output["records"]] == [[i] for i in range(5)]
    # the run stores its images, no tensors or conditioning; the library one record and thumbnail each
    for root in (chunked_root, single_root):
        kinds = sorted({p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file()})
        assert kinds == ["images"], kinds
        assert len(list((root / "images").iterdir())) == 5
    library = chunked_root.parents[2] / "library"
    assert len(list((library / "images").iterdir())) == len(list((library / "thumbnails").iterdir())) == 5


def test_a_retried_chunk_overwrites_its_own_images(tmp_path: Path, tiny_registry) -> None:
    document = prompt_batch(4)
    run_batch(tmp_path, tiny_registry, document, 2, "retry")
    outputs, root = run_batch(tmp_path, tiny_registry, document, 2, "retry")  # every chunk again
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(
        run_image_name("acme/runs/chunks/retry", f"m{i}.decode-0.png") for i in range(4))
    assert len(list((root.parents[2] / "library" / "images").iterdir())) == 4


def test_a_chunks_items_share_their_unet_and_vae_passes(tmp_path: Path, tiny_registry,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from invokeai_provider.models.stable_diffusion import denoise_loop, vae_decode

    batches: list[tuple[str, int]] = []

    def counting(kind: str, runner: Any) -> Any:
        def run(items: list[Any]) -> Any:
            batches.append((kind, len(items)))
            return runner(items)
        return run

    monkeypatch.setattr(denoise_loop, "run_denoise", counting("unet", denoise_loop.run_denoise))
    monkeypatch.setattr(vae_decode, "run_decode", counting("vae", vae_decode.run_decode))
    monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_MAX_BATCH", "3")
    outputs, _ = run_batch(tmp_path, tiny_registry, prompt_batch(3), 3, "shared")
    assert len(outputs) == 1 and len(outputs[0]["images"]) == 3
    assert sorted(batches) == [("unet", 3), ("vae", 3)]

"""Intermediate tensors and conditioning held in memory for one engine call; only what is read outside it is stored."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from invokeai_provider.core.context import InvocationContext, RunContext
from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.errors import ArtifactNotFoundError
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from invokeai_provider.storage.intermediates import IntermediateObjects


def _store(root: Path) -> RunStore:
    return RunStore(LocalArtifactBackend(root), dag_id="d", run_id="r")


def _context(run: RunContext, exec_id: str = "node#0") -> InvocationContext:
    node = InvocationRegistry.get_invocation_class("test_prompt")(id="node")
    return InvocationContext(run, node, exec_id)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


class CountingStore(RunStore):
    """A local run store that counts its writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(LocalArtifactBackend(root), dag_id="d", run_id="r")
        self.writes: list[tuple[str, str]] = []

    def write(self, kind: str, name: str, data: bytes) -> str:
        self.writes.append((kind, name))
        return super().write(kind, name, data)


def _save_the_objects(run: RunContext) -> dict[str, str]:
    """What a text-to-image task saves: conditioning with metadata (a prompt node), latents with two dtypes and
    a noise tensor (a denoise node)."""
    prompt, denoise = _context(run, "prompt#0"), _context(run, "denoise#0")
    return {
        "conditioning": prompt.conditioning.save_dict({"embeds": torch.randn(1, 77, 16)},
                                                      metadata={"kind": "basic"}),
        "latents": denoise.tensors.save_dict({"latents": torch.randn(1, 4, 8, 8),
                                              "mask": torch.ones(1, 1, 8, 8, dtype=torch.float16)}),
        "noise": denoise.tensors.save(torch.arange(12, dtype=torch.int64).reshape(3, 4)),
    }


# --- the holder --------------------------------------------------------------------------------------


def test_put_and_get_round_trip_with_metadata() -> None:
    held = IntermediateObjects()
    latents = torch.randn(2, 3)
    held.put("tensors", "n-0", {"tensor": latents})
    held.put("conditioning", "n-0", {"embeds": torch.ones(1, 2)}, {"kind": "basic"})

    tensors, metadata = held.get("tensors", "n-0")
    assert torch.equal(tensors["tensor"], latents) and metadata == {}
    tensors, metadata = held.get("conditioning", "n-0")
    assert torch.equal(tensors["embeds"], torch.ones(1, 2)) and metadata == {"kind": "basic"}
    assert held.metadata("conditioning", "n-0") == {"kind": "basic"}
    assert held.get("tensors", "missing") is None and held.metadata("tensors", "missing") is None
    assert held.get("conditioning", "other") is None
    assert len(held) == 2 and held.names() == {"n-0"} and ("tensors", "n-0") in held
    assert held.bytes_held == 2 * 3 * 4 + 2 * 4


def test_held_objects_are_cpu_contiguous_and_detached() -> None:
    held = IntermediateObjects()
    source = torch.randn(4, 3, requires_grad=True)
    held.put("tensors", "t", {"tensor": source.t()})  # a non-contiguous view with grad
    tensor = held.get("tensors", "t")[0]["tensor"]
    assert tensor.is_contiguous() and not tensor.requires_grad and tensor.device.type == "cpu"
    assert torch.equal(tensor, source.detach().t())


def test_readers_and_the_saver_cannot_change_what_is_held() -> None:
    held = IntermediateObjects()
    source = torch.zeros(3)
    held.put("tensors", "t", {"tensor": source}, {"k": "v"})
    source += 5  # the node changes its tensor in place after saving it
    first, metadata = held.get("tensors", "t")
    first["tensor"] += 1
    first["extra"] = torch.ones(1)
    metadata["k"] = "changed"
    second, metadata = held.get("tensors", "t")
    assert torch.equal(second["tensor"], torch.zeros(3)) and set(second) == {"tensor"}
    assert metadata == {"k": "v"}
    assert second["tensor"].data_ptr() != first["tensor"].data_ptr()


def test_bad_kinds_and_metadata_are_refused_at_put() -> None:
    held = IntermediateObjects()
    with pytest.raises(ValueError, match="unknown intermediate kind 'images'"):
        held.put("images", "x", {"tensor": torch.ones(1)})
    with pytest.raises(TypeError, match="str to str"):
        held.put("tensors", "x", {"tensor": torch.ones(1)}, {"steps": 30})  # type: ignore[dict-item]
    assert len(held) == 0


def test_persist_writes_only_the_named_objects_with_the_bytes_the_store_would_have(tmp_path: Path) -> None:
    old = RunContext(store=_store(tmp_path / "old"))
    torch.manual_seed(0)
    old_names = _save_the_objects(old)

    held = IntermediateObjects()
    new = RunContext(store=_store(tmp_path / "new"), intermediates=held)
    torch.manual_seed(0)
    new_names = _save_the_objects(new)
    assert new_names == old_names  # the deterministic names do not change
    assert _files(tmp_path / "new") == []
    assert len(held) == 3

    assert held.persist(new.store, [new_names["latents"], "not-held"]) == 1
    assert _files(tmp_path / "new") == [f"default/runs/d/r/tensors/{new_names['latents']}.safetensors"]
    assert held.persist(new.store, [new_names["noise"], new_names["conditioning"]]) == 2
    assert _files(tmp_path / "new") == _files(tmp_path / "old")
    for path in _files(tmp_path / "old"):
        assert (tmp_path / "new" / path).read_bytes() == (tmp_path / "old" / path).read_bytes(), path


def test_persisted_metadata_with_several_keys_is_the_same_header(tmp_path: Path) -> None:
    """safetensors writes a metadata map of several keys in an arbitrary order on every save (the old way too):
    the header means the same and the tensor data is the same bytes."""
    metadata = {"kind": "sdxl", "extra": "{\"a\": 1}", "z": ""}
    old = RunContext(store=_store(tmp_path / "old"))
    held = IntermediateObjects()
    new = RunContext(store=_store(tmp_path / "new"), intermediates=held)
    tensors = {"embeds": torch.randn(1, 77, 16), "pooled": torch.randn(1, 8, dtype=torch.bfloat16)}
    name = _context(old).conditioning.save_dict(tensors, metadata)
    assert _context(new).conditioning.save_dict(tensors, metadata) == name
    assert held.persist(new.store, [name]) == 1
    old_bytes = old.store.read("conditioning", name + ".safetensors")
    new_bytes = new.store.read("conditioning", name + ".safetensors")
    header = int.from_bytes(old_bytes[:8], "little")
    assert len(new_bytes) == len(old_bytes) and new_bytes[:8] == old_bytes[:8]
    assert json.loads(new_bytes[8:8 + header]) == json.loads(old_bytes[8:8 + header])
    assert new_bytes[8 + header:] == old_bytes[8 + header:]


def test_persist_referenced_finds_names_in_any_field_of_json_values(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    held = IntermediateObjects()
    for name in ("denoise-0", "noise-0", "unused-0"):
        held.put("tensors", name, {"tensor": torch.ones(2)})
    held.put("conditioning", "prompt-0", {"embeds": torch.ones(2)}, {"kind": "basic"})
    outputs = {
        "l2i": {"type": "latents_output", "latents": {"latents_name": "denoise-0", "seed": 3}, "width": 64},
        "cond": [{"conditioning": {"conditioning_name": "prompt-0", "mask": None}}],
        "mask": {"masked_latents_name": "noise-0", "note": "unused-1", "tags": ("unused-2",)},
    }
    assert held.persist_referenced(store, outputs) == 3
    assert sorted(store.writes) == [("conditioning", "prompt-0.safetensors"), ("tensors", "denoise-0.safetensors"),
                                    ("tensors", "noise-0.safetensors")]
    assert not store.exists("tensors", "unused-0.safetensors")
    assert held.persist_referenced(store, "unused-0") == 1  # a bare string is a value too
    assert held.persist_referenced(store, {"unused-0": 1, "n": [1, 2.5, None, True]}) == 0  # keys are not values


def test_a_name_persists_both_kinds_that_share_it(tmp_path: Path) -> None:
    """A node's first tensor and its first conditioning have the same name; a reference cannot tell which is
    meant, so both are written (more than needed, never less)."""
    store = CountingStore(tmp_path)
    held = IntermediateObjects()
    ctx = _context(RunContext(store=store, intermediates=held))
    tensor_name = ctx.tensors.save(torch.ones(2))
    cond_name = ctx.conditioning.save_dict({"embeds": torch.zeros(2)})
    assert tensor_name == cond_name
    assert held.persist_referenced(store, {"latents_name": tensor_name}) == 2
    assert sorted(store.writes) == [("conditioning", cond_name + ".safetensors"),
                                    ("tensors", tensor_name + ".safetensors")]


def test_persist_writes_each_object_once_unless_it_is_put_again(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    held = IntermediateObjects()
    held.put("tensors", "a-0", {"tensor": torch.ones(2)})
    held.put("tensors", "b-0", {"tensor": torch.ones(2)})
    assert held.persist(store, ["a-0"]) == 1
    assert held.persist(store, ["a-0"]) == 0
    assert held.persist_referenced(store, {"latents_name": "a-0"}) == 0
    assert held.persist_all(store) == 1  # only b-0 is left
    assert held.persist_all(store) == 0
    assert store.writes == [("tensors", "a-0.safetensors"), ("tensors", "b-0.safetensors")]
    assert held.get("tensors", "a-0") is not None  # persisted objects stay readable in memory

    held.put("tensors", "a-0", {"tensor": torch.zeros(2)})  # a re-run node replaces its object
    assert held.persist(store, ["a-0"]) == 1
    assert torch.equal(_context(RunContext(store=store)).tensors.load("a-0"), torch.zeros(2))

    held.clear()
    assert len(held) == 0 and held.bytes_held == 0 and held.persist_all(store) == 0


def test_persist_all_writes_every_held_object(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    held = IntermediateObjects()
    names = _save_the_objects(RunContext(store=store, intermediates=held))
    assert store.writes == []
    assert held.persist_all(store) == 3
    reader = _context(RunContext(store=store))  # no intermediates: everything comes from the store
    assert reader.conditioning.load_metadata(names["conditioning"]) == {"kind": "basic"}
    assert torch.equal(reader.tensors.load(names["noise"]), torch.arange(12).reshape(3, 4))


def test_threads_share_one_holder(tmp_path: Path) -> None:
    held = IntermediateObjects()
    store = CountingStore(tmp_path)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def graph(index: int) -> None:
        try:
            run = RunContext(store=store, intermediates=held, name_prefix=f"g{index}.")
            start.wait()
            for step in range(25):
                ctx = _context(run, f"node#{step}")
                name = ctx.tensors.save(torch.full((4,), float(index * 100 + step)))
                assert torch.equal(ctx.tensors.load(name), torch.full((4,), float(index * 100 + step)))
                if step % 5 == 0:
                    held.persist(store, [name])
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=graph, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(held) == 8 * 25 and held.bytes_held == 8 * 25 * 4 * 4
    assert len(store.writes) == len(set(store.writes)) == 8 * 5
    assert held.persist_all(store) == 8 * 20
    assert len(store.writes) == len(set(store.writes)) == 8 * 25


def test_the_module_imports_without_torch() -> None:
    code = ("import sys, invokeai_provider.storage.intermediates as m\n"
            "m.IntermediateObjects().persist_referenced(None, {'a': ['b']})\n"
            "print(sorted(x for x in sys.modules if x.split('.')[0] in ('torch', 'safetensors')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_tensors_are_held_on_the_cpu() -> None:
    held = IntermediateObjects()
    source = torch.randn(2, 3, device="cuda")
    held.put("tensors", "t", {"tensor": source})
    tensor = held.get("tensors", "t")[0]["tensor"]
    assert tensor.device.type == "cpu" and torch.equal(tensor, source.cpu())


# --- through the node context ---------------------------------------------------------------------------


def test_a_node_save_stays_in_memory_and_loads_back(tmp_path: Path) -> None:
    held = IntermediateObjects()
    run = RunContext(store=_store(tmp_path), intermediates=held)
    latents = torch.randn(1, 4, 8, 8)
    name = _context(run).tensors.save(latents)
    assert _files(tmp_path) == []
    with pytest.raises(ArtifactNotFoundError):
        run.store.read("tensors", name + ".safetensors")
    loaded = _context(run, "node#1").tensors.load(name)
    assert torch.equal(loaded, latents)
    loaded += 1  # a consumer changing its copy does not change the next consumer's
    assert torch.equal(_context(run, "node#2").tensors.load(name), latents)


def test_conditioning_metadata_and_tensors_load_from_memory(tmp_path: Path) -> None:
    held = IntermediateObjects()
    run = RunContext(store=_store(tmp_path), intermediates=held)
    ctx = _context(run)
    name = ctx.conditioning.save_dict({"embeds": torch.ones(1, 2), "pooled": torch.zeros(1, 3)},
                                      metadata={"kind": "sdxl"})
    plain = ctx.conditioning.save_dict({"embeds": torch.ones(1)})
    assert _files(tmp_path) == []
    assert ctx.conditioning.load_metadata(name) == {"kind": "sdxl"}
    assert ctx.conditioning.load_metadata(plain) == {}  # as from a safetensors header without metadata
    loaded = ctx.conditioning.load_dict(name)
    assert set(loaded) == {"embeds", "pooled"} and torch.equal(loaded["pooled"], torch.zeros(1, 3))
    with pytest.raises(ArtifactNotFoundError):  # the same name as a tensor is another object
        ctx.tensors.load(name)


def test_names_not_in_memory_load_from_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    upstream = _context(RunContext(store=store), "upstream#0")  # another task wrote these
    tensor_name = upstream.tensors.save(torch.arange(4.0))
    cond_name = upstream.conditioning.save_dict({"embeds": torch.ones(2)}, metadata={"kind": "basic"})

    held = IntermediateObjects()
    ctx = _context(RunContext(store=store, intermediates=held))
    assert torch.equal(ctx.tensors.load(tensor_name), torch.arange(4.0))
    assert ctx.conditioning.load_metadata(cond_name) == {"kind": "basic"}
    assert torch.equal(ctx.conditioning.load_dict(cond_name)["embeds"], torch.ones(2))
    assert len(held) == 0  # reading does not copy into memory
    with pytest.raises(ArtifactNotFoundError):
        ctx.tensors.load("nowhere-0")

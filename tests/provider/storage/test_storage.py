"""The local artifact store: layout, atomic writes, deterministic names, no escaping a prefix."""

from __future__ import annotations

import io
import json

import pytest

from helpers import run_image_records
from invokeai_provider.storage.library.names import run_image_name
from invokeai_provider.core.context import METADATA_CHUNK, WORKFLOW_CHUNK, InvocationContext, RunContext
from invokeai_provider.errors import ArtifactNotFoundError, InvalidArtifactKeyError
from invokeai_provider.core.registry import InvocationRegistry
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore, backend_for_uri


def test_run_layout_and_uris(tmp_path):
    store = RunStore(LocalArtifactBackend(tmp_path), tenant="acme", dag_id="t2i", run_id="manual__2026-01-01")
    key = store.write("images", "x.png", b"png")
    assert key == "acme/runs/t2i/manual__2026-01-01/images/x.png"
    assert (tmp_path / key).read_bytes() == b"png"
    assert store.uri("images", "x.png") == (tmp_path / key).as_uri()
    assert store.url("images", "x.png") == store.uri("images", "x.png")  # nothing to sign locally


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "", "a\\b", "a/./b"])
def test_keys_cannot_escape(tmp_path, bad):
    with pytest.raises(InvalidArtifactKeyError):
        LocalArtifactBackend(tmp_path).write_bytes(bad, b"x")


@pytest.mark.parametrize("tenant", ["..", "a/b", "/root", ""])
def test_tenants_must_be_one_plain_segment(tmp_path, tenant):
    with pytest.raises(InvalidArtifactKeyError):
        RunStore(LocalArtifactBackend(tmp_path), tenant=tenant)


def test_names_must_be_single_segments(tmp_path):
    store = RunStore(LocalArtifactBackend(tmp_path))
    with pytest.raises(InvalidArtifactKeyError):
        store.write("images", "../../other/x.png", b"x")


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    backend = LocalArtifactBackend(tmp_path)
    backend.write_bytes("t/a.bin", b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        backend.write_bytes("t/a.bin", b"new")
    assert backend.read_bytes("t/a.bin") == b"old"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["a.bin"]


def test_missing_artifact_error_names_the_uri(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="no artifact at file://"):
        LocalArtifactBackend(tmp_path).read_bytes("t/none")
    with pytest.raises(ArtifactNotFoundError, match="no artifact at file://"):
        LocalArtifactBackend(tmp_path).download_file("t/none", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_upload_and_download_files(tmp_path):
    backend = LocalArtifactBackend(tmp_path / "root")
    source = tmp_path / "weights.bin"
    source.write_bytes(bytes(range(256)) * 4096)
    backend.upload_file("models/m/weights.bin", source)
    assert list(backend.list("models")) == ["models/m/weights.bin"]
    target = tmp_path / "cache" / "deep" / "weights.bin"
    backend.download_file("models/m/weights.bin", target)
    assert target.read_bytes() == source.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["weights.bin"]
    with pytest.raises(InvalidArtifactKeyError):
        backend.upload_file("../escape.bin", source)


def test_failed_download_leaves_the_previous_file(tmp_path, monkeypatch):
    backend = LocalArtifactBackend(tmp_path / "root")
    backend.write_bytes("m.bin", b"new")
    target = tmp_path / "m.bin"
    target.write_bytes(b"old")

    def broken_copy(src, dst, length=0):
        dst.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("shutil.copyfileobj", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        backend.download_file("m.bin", target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["m.bin"]


def test_backend_for_uri(tmp_path):
    assert isinstance(backend_for_uri(tmp_path.as_uri()), LocalArtifactBackend)
    with pytest.raises(ValueError, match="unsupported scheme 'gs'"):
        backend_for_uri("gs://bucket/x")
    s3 = backend_for_uri("s3://my-conn@my-bucket/some/prefix")  # no connection is looked up until used
    assert (s3.conn_id, s3.bucket, s3.prefix) == ("my-conn", "my-bucket", "some/prefix")
    assert s3.uri("a/b.png") == "s3://my-bucket/some/prefix/a/b.png"


def _context(run: RunContext, exec_id: str = "node#0") -> InvocationContext:
    node = InvocationRegistry.get_invocation_class("test_prompt")(id="node")
    return InvocationContext(run, node, exec_id)


def test_images_carry_invokeai_chunks_and_names_repeat_on_retry(tmp_path):
    from PIL import Image

    workflow = {"name": "wf"}
    run = RunContext(store=RunStore(LocalArtifactBackend(tmp_path), dag_id="d", run_id="r"),
                     name_prefix="task.0.", workflow_json=workflow, graph_json={"nodes": {}})
    first = _context(run).images.save(Image.new("RGB", (8, 4), "red"), metadata={"seed": 7})
    retry = _context(run).images.save(Image.new("RGB", (8, 4), "blue"), metadata={"seed": 7})
    name = run_image_name("default/runs/d/r", "task.0.node_0-0.png")  # the slot's name: the same on a retry
    assert first["image_name"] == retry["image_name"] == name
    assert (first["width"], first["height"]) == (8, 4) and first["node_id"] == "node#0"
    stored = list((tmp_path / "default/runs/d/r/images").iterdir())
    assert [p.name for p in stored] == [name]
    with Image.open(io.BytesIO(stored[0].read_bytes())) as png:
        assert json.loads(png.info[METADATA_CHUNK]) == {"seed": 7}
        assert json.loads(png.info[WORKFLOW_CHUNK]) == workflow
        assert png.getpixel((0, 0)) == (0, 0, 255)  # the retry overwrote the first try
    assert _context(run).images.get_metadata(first["image_name"]).root == {"seed": 7}
    assert first["url"] == first["uri"] == (tmp_path / f"default/runs/d/r/images/{name}").as_uri()
    [entry] = run_image_records(run.store)  # the retry overwrote its library record
    assert (entry["image_name"], entry["key"], entry["dag_id"], entry["run_id"]) == (
        name, f"default/runs/d/r/images/{name}", "d", "r")
    assert "metadata" not in entry and not (tmp_path / "default/runs/d/r/manifest").exists()
    assert [p.name for p in (tmp_path / "default/library/thumbnails").iterdir()] == [name.replace(".png", ".webp")]


def test_tensors_round_trip_as_safetensors(tmp_path):
    import torch

    run = RunContext(store=RunStore(LocalArtifactBackend(tmp_path)))
    ctx = _context(run)
    name = ctx.tensors.save(torch.arange(6, dtype=torch.float32).reshape(2, 3))
    data = run.store.read("tensors", name + ".safetensors")
    assert not data.startswith(b"\x80")  # not a pickle
    assert torch.equal(_context(run).tensors.load(name), torch.arange(6, dtype=torch.float32).reshape(2, 3))

    described = ctx.conditioning.save_dict({"embeds": torch.ones(1, 2)}, metadata={"kind": "basic"})
    assert ctx.conditioning.load_metadata(described) == {"kind": "basic"}
    assert torch.equal(ctx.conditioning.load_dict(described)["embeds"], torch.ones(1, 2))

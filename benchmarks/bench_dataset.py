"""Data sets at scale: a mapped DAG run of N prompts on the local cluster against the engine running the same N
sessions in one process, side by side in one run.

    .venv/bin/python benchmarks/bench_dataset.py                          # N = 64 and 1,000, cpu-smoke
    .venv/bin/python benchmarks/bench_dataset.py --counts 64 --chunk-sizes 1,4,16,32

Needs PostgreSQL and Redis on 127.0.0.1 (the local cluster's backing services). For each N (``--counts``) and
chunk size (``--chunk-sizes``, default ``[invokeai] map_chunk_size``):

- cluster: one run of an InvokeAI batch over N prompts and seeds (tiny SD1.5 at 64x64, 4 steps in cpu-smoke
  mode; full-size SD1.5 at 512x512, 25 steps in gpu mode), triggered over REST, trigger to success; the mapped
  task runs the sessions in chunks, its items' denoise and decode passes batched in the GPU runtime;
- engine: the same N sessions run in this process the way ``invokeai-airflow graph run`` runs a batch (one engine
  call per chunk: shared node cache, intermediates in memory, batched denoise and decode; warm model cache);
  both are warmed first (the engine by one session, each cluster by an untimed run of 4 prompts);
- gpu mode also runs the plain diffusers loop, one pipeline call per prompt.

Printed: images/s of each and the cluster/engine ratio, per-image overhead (cluster s/img - engine s/img), objects
written per image in the run's prefix, and the peak resident memory of the runtime, the workers (with the task
processes they fork), the scheduler and the S3 server during each run (sampled every 0.2 s), so memory growth
with N shows, and the CPU seconds each spent, which says where the cluster's time went. The engine and cluster
runs of one N alternate (engine, cluster) and each is timed once: the cluster run of 1,000 images takes minutes,
which is long against the machine's noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runtime  # noqa: E402 - the cluster wrapper and the batch documents
import bench_sd  # noqa: E402 - the model builders and the engine path

SERVICES = ("runtime", "worker-gpu", "worker-default", "scheduler", "s3")
MODES = {"cpu-smoke": (64, 4), "gpu": (512, 25)}  # size, steps
WARM_UP = 4  # prompts of the untimed first run on each cluster


class ServiceUsage:
    """Peak RSS (MiB) and CPU seconds of each service's process tree while the block runs.

    CPU seconds are the user + system time each process of the tree spent during the block (a process that ends
    between two samples loses at most its last 0.2 s): on a machine with few cores, every CPU second Airflow
    spends is one the runtime does not get, so this says where the cluster's time went."""

    def __init__(self, state_dir: Path) -> None:
        from invokeai_provider.cluster.cluster import read_pids

        self.pids = {name: pid for name, pid in read_pids(state_dir).get("services", {}).items() if name in SERVICES}
        self.peaks = {name: 0.0 for name in self.pids}
        self._cpu_first: dict[tuple[str, int, float], float] = {}
        self._cpu_last: dict[tuple[str, int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _tree(self, pid: int) -> list[Any]:
        import psutil

        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _sample_once(self, first: bool) -> None:
        import psutil

        for name, pid in self.pids.items():
            total = 0
            for process in self._tree(pid):
                try:
                    total += process.memory_info().rss
                    times = process.cpu_times()
                    key = (name, process.pid, process.create_time())
                except psutil.Error:
                    continue
                seconds = times.user + times.system
                self._cpu_first.setdefault(key, seconds if first else 0.0)
                self._cpu_last[key] = seconds
            self.peaks[name] = max(self.peaks[name], total / 2**20)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self._sample_once(first=False)

    @property
    def cpu_seconds(self) -> dict[str, float]:
        totals = {name: 0.0 for name in self.pids}
        for key, last in self._cpu_last.items():
            totals[key[0]] += last - self._cpu_first[key]
        return totals

    def __enter__(self) -> "ServiceUsage":
        self._sample_once(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample_once(first=False)


def write_batch(folder: Path, model: dict[str, Any], count: int, *, size: int, steps: int) -> str:
    """An InvokeAI batch over ``count`` prompts and seeds; its dag id."""
    spec = bench_sd.SPECS["sd15"]
    graph = bench_sd.t2i_graph(spec, model, size=size, steps=steps, seed=0)  # type: ignore[arg-type]
    graph["nodes"]["decode"]["is_intermediate"] = False
    dag_id = f"dataset-{count}"
    data = [[{"node_path": "pos", "field_name": "prompt", "items": bench_runtime.prompts(count)},
             {"node_path": "noise", "field_name": "seed", "items": list(range(count))}]]
    (folder / f"{dag_id}.json").write_text(json.dumps({"batch": {"graph": graph, "data": data, "runs": 1}}))
    return dag_id


def engine_sessions(engine: bench_sd.EnginePath, count: int) -> list[dict[str, Any]]:
    sessions = engine.sessions(list(range(count)))
    for session, text in zip(sessions, bench_runtime.prompts(count)):
        session["nodes"]["pos"]["prompt"] = text
    return sessions


def objects_per_image(cluster: bench_runtime.Cluster, dag_id: str, run_id: str, images: int) -> tuple[float, str]:
    client = cluster.settings.seaweed.client()
    prefix = f"default/runs/{dag_id}/{run_id}/"
    kinds: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="invokeai-artifacts", Prefix=prefix):
        for entry in page.get("Contents", []):
            kind = entry["Key"][len(prefix):].split("/", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    return sum(kinds.values()) / max(images, 1), ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))


def print_per_service(title: str, rows: list[dict[str, Any]], key: str, number: str,
                      engine: Optional[str] = None) -> None:
    """A table of one figure per service (and the engine's, when named) for each N and chunk size."""
    print()
    print(title)
    print(f"{'N':>6} {'chunk':>5}  " + (f"{'engine':>8}  " if engine else "") + "  ".join(f"{n:>14}" for n in SERVICES))
    for row in rows:
        print(f"{row['count']:>6} {row['chunk']:>5}  " + (f"{row[engine]:>8{number}}  " if engine else "")
              + "  ".join(f"{row[key].get(name, 0.0):>14{number}}" for name in SERVICES))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=tuple(MODES), default=None, help="default: gpu with CUDA, else cpu-smoke")
    parser.add_argument("--counts", default=None, help="comma-separated prompt counts (default 64,1000; gpu 256)")
    parser.add_argument("--chunk-sizes", default=None,
                        help="comma-separated chunk sizes to compare (default: [invokeai] map_chunk_size)")
    parser.add_argument("--max-batch", type=int, default=None, help="the runtime's max batch (default: the config's)")
    parser.add_argument("--gpu-concurrency", type=int, default=4, help="task processes of the gpu worker (default 4)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the built model here between runs")
    return parser.parse_args()


def main() -> None:
    bench_sd.check_packages()
    bench_sd.quiet_libraries()
    args = parse_args()
    import torch

    from invokeai_provider.config import settings
    from invokeai_provider.core.registry import load_node_packs
    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    args.mode = args.mode or ("gpu" if torch.cuda.is_available() else "cpu-smoke")
    device = "cuda" if args.mode == "gpu" else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    size, steps = MODES[args.mode]
    counts = [int(c) for c in (args.counts or ("256" if args.mode == "gpu" else "64,1000")).split(",")]
    chunk_sizes = [int(c) for c in (args.chunk_sizes or str(settings().map_chunk_size)).split(",")]
    if device == "cpu":
        torch.set_num_threads(bench_sd.cpu_cores())
    load_node_packs()
    print(f"bench_dataset  mode={args.mode}  device={device}  SD1.5 {size}x{size}, {steps} steps  counts {counts}  "
          f"chunk sizes {chunk_sizes}  cpu cores {bench_sd.cpu_cores()}", flush=True)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-dataset-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = bench_sd.SPECS["sd15"]
    folder, _, _ = bench_sd.model_folder(spec, args.mode, work, device=device, dtype=dtype)
    model_root = work / "model-root"
    registry = ModelRegistry(model_root.as_uri())
    config = next((c for c in registry.all() if c.name == "bench-sd15"), None) or install_model(
        registry, str(folder), name="bench-sd15", inplace=True)
    identifier = {"key": config.key, "hash": config.hash, "name": config.name, "base": config.base.value,
                  "type": "main"}
    diffusers = bench_sd.DiffusersPath(spec, folder, device=device, dtype=dtype, size=size, steps=steps) \
        if args.mode == "gpu" else None
    for stale in (work / "registry-sd15", work / "artifacts-sd15"):  # the engine path's, from an earlier run
        shutil.rmtree(stale, ignore_errors=True)
    engine = bench_sd.EnginePath(spec, folder, work, device=device, dtype=dtype, size=size, steps=steps)
    engine.run(engine.sessions([0]))  # warm

    rows = []
    for chunk_size in chunk_sizes:
        dags = work / f"dags-chunks{chunk_size}"
        (dags / "documents").mkdir(parents=True, exist_ok=True)
        (dags / "bench_dags.py").write_text(bench_runtime.DAG_FILE.replace(
            "globals())", f"globals(), chunk_size={chunk_size})"))  # compile_dag's per-workflow override
        dag_ids = {count: write_batch(dags / "documents", identifier, count, size=size, steps=steps)
                   for count in {*counts, WARM_UP}}
        os.environ["AIRFLOW__INVOKEAI__MAP_CHUNK_SIZE"] = str(chunk_size)  # this process's engine chunks
        cluster = bench_runtime.Cluster(work, dags, runtime=True, model_root=model_root.as_uri(),
                                        gpu_concurrency=args.gpu_concurrency, label=f"chunks{chunk_size}",
                                        max_batch=args.max_batch)
        try:
            cluster.wait_for_dag(dag_ids[WARM_UP])
            cluster.run(dag_ids[WARM_UP], {})  # as the engine: the runtime's imports and model load are not timed
            for count in counts:
                cluster.wait_for_dag(dag_ids[count])
                sessions = engine_sessions(engine, count)
                started, cpu_started = time.perf_counter(), time.process_time()
                engine.run(sessions)
                engine_seconds = time.perf_counter() - started
                engine_cpu = time.process_time() - cpu_started
                diffusers_seconds = None
                if diffusers is not None:
                    diffusers_seconds = bench_runtime.diffusers_loop(diffusers, bench_runtime.prompts(count),
                                                                     bench_sd.make_timer(device))
                with ServiceUsage(cluster.state) as usage:
                    result = cluster.run(dag_ids[count], {}, timeout=7200)
                per_image, kinds = objects_per_image(cluster, dag_ids[count], result.run_id, count)
                rows.append({"count": count, "chunk": chunk_size, "engine": engine_seconds, "engine_cpu": engine_cpu, "cluster": result.wall,
                             "diffusers": diffusers_seconds, "tasks": len(result.task_seconds),
                             "objects": per_image, "kinds": kinds, "memory": dict(usage.peaks), "cpu": usage.cpu_seconds,
                             "batches": bench_runtime.batch_sizes(cluster)})
                print(f"  N={count} chunk {chunk_size}: engine {engine_seconds:.1f} s, cluster {result.wall:.1f} s "
                      f"({len(result.task_seconds)} mapped task instances), {kinds}", flush=True)
        finally:
            cluster.down()

    print()
    print("images/s; cluster/engine = cluster img/s / engine img/s; overhead = cluster s/img - engine s/img")
    header = (f"{'N':>6} {'chunk':>5} {'tasks':>5}  {'engine img/s':>12} {'cluster img/s':>13} {'cluster/engine':>14}"
              f"  {'overhead ms/img':>15}  {'objects/img':>11}")
    print(header)
    print("-" * len(header))
    for row in rows:
        engine_rate, cluster_rate = row["count"] / row["engine"], row["count"] / row["cluster"]
        print(f"{row['count']:>6} {row['chunk']:>5} {row['tasks']:>5}  {engine_rate:>12.2f} {cluster_rate:>13.2f} "
              f"{cluster_rate / engine_rate:>13.2f}x  {(row['cluster'] - row['engine']) / row['count'] * 1000:>15.1f}"
              f"  {row['objects']:>11.2f}")
        if row["diffusers"] is not None:
            print(f"{'':>18}diffusers loop {row['count'] / row['diffusers']:.2f} img/s")
    print_per_service("peak RSS (MiB) per service during the cluster run (process trees: a worker with its task "
                      "processes)", rows, "memory", ".0f")
    print_per_service("CPU seconds per service during the cluster run (engine: this process during the engine run)",
                      rows, "cpu", ".1f", engine="engine_cpu")
    for row in rows:
        print(f"  N={row['count']} chunk {row['chunk']}: objects {row['kinds']}; runtime denoise batches "
              f"{row['batches']}")


if __name__ == "__main__":
    main()

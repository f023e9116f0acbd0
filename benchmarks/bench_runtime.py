"""Warm models across tasks: DAG runs through the local cluster and its GPU runtime, against plain diffusers.

    .venv/bin/python benchmarks/bench_runtime.py                       # --mode gpu when CUDA is available
    .venv/bin/python benchmarks/bench_runtime.py --mode cpu-smoke      # tiny models on the CPU

Needs PostgreSQL and Redis on 127.0.0.1 (the local cluster's backing services). Three parts, one run:

a) throughput (``--parts throughput``): per model (SD1.5 512x512 and SDXL 1024x1024, 30 steps, random fp16
   weights in gpu mode; the tiny models at 64x64, 4 steps in cpu-smoke mode), images/s of
   - diffusers: the plain pipeline, one call per prompt (batch 1), over the P prompts;
   - engine: our InvokeAI text-to-image graph run in this process with a warm model cache, one session per prompt;
   - DAG, batch 1: a one-prompt DAG run triggered over REST, trigger to success (latency, 1/s);
   - DAG, P prompts: one run of an InvokeAI batch over the P prompts (P mapped gpu tasks), trigger to success,
     Airflow scheduling included;
   - diffusers, one call with all P prompts in batches of ``--batch-size`` (what batching in the runtime could
     gain at most), and the denoise batches the runtime formed during the mapped runs.
   The three single-image paths are interleaved (ABBA) over ``--repeats`` rounds; medians are printed.
b) cold vs warm (``--parts warm``): the first DAG run after the runtime started loads the models; the next
   ones find them warm. Task seconds and the model cache's misses and load seconds, from the usage records.
c) per-task overhead (``--parts overhead``): the same one-image DAG run ``--runs`` times on a cluster with
   the runtime and on one without it (``cluster up --no-runtime``): task seconds, node seconds, model load
   seconds, trigger-to-success seconds (medians).
d) batching (``--parts batching``): the P-prompt mapped run, ``--repeats`` times, on the runtime cluster
   (denoise batches of up to ``--max-batch``) and on a cluster whose runtime runs one task after the other
   (``--max-batch 1``): trigger-to-success medians, their ratio and the batch sizes formed.

The cluster is the one `invokeai-airflow cluster up` starts (CeleryExecutor, PostgreSQL, Redis, SeaweedFS
for artifacts), in a scratch state directory with its own database; its model root is a local folder here
(the models are large; the S3 model root is exercised by the tests), and the gpu worker runs
``--gpu-concurrency`` task processes that queue at the runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sd  # noqa: E402 - the model builders, the t2i graph and the two in-process paths

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = '''"""Benchmark DAGs: every JSON document beside this file (airflow dag discovery needs both words)."""
from pathlib import Path

from invokeai_provider.compiler.dag_factory import load_workflow_dags

load_workflow_dags(Path(__file__).with_name("documents"), globals())
'''


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base and value == value else "n/a"


# --- the cluster ---------------------------------------------------------------------------------------------------


class Cluster:
    """A local cluster in a scratch directory, and the few REST calls the benchmark needs."""

    def __init__(self, work: Path, dags: Path, *, runtime: bool, model_root: str, gpu_concurrency: int,
                 label: str, max_batch: Optional[int] = None) -> None:
        from invokeai_provider.cluster import cluster
        from invokeai_provider.cluster.seaweed import free_port

        self.cluster = cluster
        self.state = work / f"cluster-{label}"
        shutil.rmtree(self.state, ignore_errors=True)
        settings = cluster.ClusterSettings.new(self.state, dags, database=f"bench_runtime_{secrets.token_hex(4)}",
                                               api_port=free_port(), redis_db=12, runtime=runtime)
        settings.model_root = model_root
        settings.gpu_worker_concurrency = gpu_concurrency
        settings.runtime_max_batch = max_batch
        settings.save()
        started = time.perf_counter()
        self.settings = cluster.up(self.state, dags, demo_model=False, timeout=600)
        self.startup_seconds = time.perf_counter() - started
        self.token = self._token()

    def down(self) -> None:
        self.cluster.down(self.state, purge=True)

    def _token(self) -> str:
        body = {"username": self.cluster.ADMIN_USER, "password": self.settings.admin_password}
        return self._call("POST", "/auth/token", body, auth=False)["access_token"]

    def _call(self, method: str, path: str, body: Optional[dict[str, Any]] = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.settings.api_url + path, method=method, headers=headers,
                                         data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", f"/api/v2/dags/{dag_id}")
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(2)
        self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def run(self, dag_id: str, conf: dict[str, Any], timeout: float = 3600) -> "RunResult":
        """Triggers a run and waits for it; trigger-to-success seconds measured here, at 0.1 s resolution."""
        started = time.perf_counter()
        run = self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        run_id = run["dag_run_id"]
        deadline = time.monotonic() + timeout
        while True:
            state = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")
            time.sleep(0.1)
        wall = time.perf_counter() - started
        if state != "success":
            raise RuntimeError(f"{dag_id} run {run_id} failed; logs in {self.settings.home}/logs")
        tis = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")["task_instances"]
        gpu = [ti for ti in tis if ti["queue"] == "gpu"]
        usages = [self.xcom(dag_id, run_id, ti["task_id"], "invokeai_usage", ti["map_index"]) for ti in gpu]
        return RunResult(run_id, wall, [_seconds(ti) for ti in gpu], usages)

    def denoise_batches(self) -> dict[str, Any]:
        """The runtime's count of the denoise batches it ran since it started (sizes -> how many)."""
        return (self.cluster.runtime_report(self.settings) or {}).get("denoise_batches") or {}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1) -> Any:
        entry = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                                  f"{key}?map_index={map_index}&deserialize=true")
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value


def _seconds(ti: dict[str, Any]) -> float:
    start, end = (datetime.fromisoformat(ti[k].replace("Z", "+00:00")) for k in ("start_date", "end_date"))
    return (end - start).total_seconds()


@dataclass
class RunResult:
    run_id: str
    wall: float  # trigger to success, seconds
    task_seconds: list[float]  # start to end of each gpu task instance
    usages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def load_seconds(self) -> float:
        return sum(u["model_cache"]["load_seconds"] for u in self.usages)

    @property
    def misses(self) -> int:
        return sum(u["model_cache"]["misses"] for u in self.usages)

    @property
    def node_seconds(self) -> float:
        return sum(u["node_seconds"] for u in self.usages)


# --- documents -----------------------------------------------------------------------------------------------------


def prompts(count: int) -> list[str]:
    subjects = ["a lighthouse at dusk", "a red fox in snow", "a glass teapot", "an old tram in Lisbon",
                "a bowl of lemons", "a mountain lake", "a paper boat", "a copper kettle"]
    return [f"{subjects[i % len(subjects)]}, study {i}" for i in range(count)]


def write_documents(folder: Path, spec: bench_sd.ModelSpec, model: dict[str, Any], *, size: int, steps: int,
                    count: int) -> tuple[str, str]:
    """A one-image graph and an InvokeAI batch over ``count`` prompts and seeds; returns their dag ids."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = bench_sd.t2i_graph(spec, model, size=size, steps=steps, seed=0)  # type: ignore[arg-type]
    graph["nodes"]["decode"]["is_intermediate"] = False
    single, batch = f"bench-{spec.key}-single", f"bench-{spec.key}-batch{count}"
    (folder / f"{single}.json").write_text(json.dumps(graph))
    data = [[{"node_path": "pos", "field_name": "prompt", "items": prompts(count)},
             {"node_path": "noise", "field_name": "seed", "items": list(range(count))}]]
    (folder / f"{batch}.json").write_text(json.dumps({"batch": {"graph": graph, "data": data, "runs": 1}}))
    return single, batch


# --- the parts -----------------------------------------------------------------------------------------------------


def diffusers_loop(path: bench_sd.DiffusersPath, texts: list[str], timed: Callable[[Callable[[], Any]], float],
                   batch_size: int = 1) -> float:
    import torch

    def loop() -> None:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            images = path.pipe(chunk, negative_prompt=None, num_inference_steps=path.steps,
                               guidance_scale=bench_sd.CFG_SCALE, height=path.size, width=path.size,
                               generator=[torch.Generator(device="cpu").manual_seed(start + i) for i in range(len(chunk))],
                               output_type="pil").images
            assert len(images) == len(chunk)

    return timed(loop)


def engine_loop(engine: bench_sd.EnginePath, texts: list[str], timed: Callable[[Callable[[], Any]], float]) -> float:
    sessions = []
    for i, text in enumerate(texts):
        [doc] = engine.sessions([i])
        doc["nodes"]["pos"]["prompt"] = text
        sessions.append(doc)
    return timed(lambda: engine.run(sessions))


def bench_throughput(cluster: Cluster, spec: bench_sd.ModelSpec, folder: Path, dags: tuple[str, str], work: Path,
                     args: argparse.Namespace, *, device: str, dtype: Any, size: int, steps: int) -> list[str]:
    timed = bench_sd.make_timer(device)
    texts = prompts(args.prompts)
    single, batch = dags
    for dag_id in dags:
        cluster.wait_for_dag(dag_id)
    engine = bench_sd.EnginePath(spec, folder, work, device=device, dtype=dtype, size=size, steps=steps)
    diffusers = bench_sd.DiffusersPath(spec, folder, device=device, dtype=dtype, size=size, steps=steps)
    # warm-up, untimed: every path loads its models once (the runtime's first run is part b)
    diffusers_loop(diffusers, texts[:1], timed)
    engine_loop(engine, texts[:1], timed)
    cluster.run(single, {})
    samples: dict[str, list[float]] = {k: [] for k in ("diffusers", "engine", "dag1", "dagP", "diffusers_batched")}
    for r in range(args.repeats):
        order = ["diffusers", "engine", "dag"] if r % 2 == 0 else ["dag", "engine", "diffusers"]
        for path in order:
            if path == "diffusers":
                samples["diffusers"].append(diffusers_loop(diffusers, texts, timed))
            elif path == "engine":
                samples["engine"].append(engine_loop(engine, texts, timed))
            else:
                samples["dag1"].append(cluster.run(single, {}).wall)
                result = cluster.run(batch, {})
                assert len(result.task_seconds) == len(texts), result
                samples["dagP"].append(result.wall)
        samples["diffusers_batched"].append(diffusers_loop(diffusers, texts, timed, args.batch_size))
        print(f"  {spec.label} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in samples.items()),
              flush=True)
    count = len(texts)
    rates = {"diffusers": count / median(samples["diffusers"]), "engine": count / median(samples["engine"]),
             "dag1": 1 / median(samples["dag1"]), "dagP": count / median(samples["dagP"]),
             "diffusers_batched": count / median(samples["diffusers_batched"])}
    base = rates["diffusers"]
    return [
        f"{spec.label} {size}x{size} {steps} steps, {count} prompts, {args.repeats} rounds (medians):",
        f"  diffusers loop, batch 1          {rates['diffusers']:8.3f} img/s  1.00x",
        f"  engine in-process, warm          {rates['engine']:8.3f} img/s  {ratio(rates['engine'], base)}   (target >= 0.95x)",
        f"  DAG run, 1 prompt (latency {median(samples['dag1']):.2f} s) {rates['dag1']:8.3f} img/s  {ratio(rates['dag1'], base)}",
        f"  DAG run, {count} mapped prompts       {rates['dagP']:8.3f} img/s  {ratio(rates['dagP'], base)}   (target >= 0.8x)",
        f"  diffusers, batches of {args.batch_size:<3}        {rates['diffusers_batched']:8.3f} img/s  "
        f"{ratio(rates['diffusers_batched'], base)}   (the most batching in the runtime could give)",
        f"  runtime denoise batches so far: {batch_sizes(cluster)}",
    ]


def batch_sizes(cluster: Cluster) -> str:
    batches = cluster.denoise_batches()
    sizes = ", ".join(f"{count} of {size}" for size, count in (batches.get("sizes") or {}).items())
    return f"{batches.get('batches', 0)} batches for {batches.get('items', 0)} denoise nodes ({sizes or 'none'})"


def mapped_walls(cluster: Cluster, dag_id: str, count: int, repeats: int) -> tuple[list[float], str]:
    """Trigger-to-success seconds of ``repeats`` mapped runs after a warm-up run, and the batches they formed."""
    cluster.wait_for_dag(dag_id)
    cluster.run(dag_id, {})  # warm-up: the runtime loads the model
    before = cluster.denoise_batches()
    walls = []
    for _ in range(repeats):
        result = cluster.run(dag_id, {})
        assert len(result.task_seconds) == count, result
        walls.append(result.wall)
    after = cluster.denoise_batches()
    sizes = {size: n - (before.get("sizes") or {}).get(size, 0) for size, n in (after.get("sizes") or {}).items()}
    formed = ", ".join(f"{n} of {size}" for size, n in sizes.items() if n) or "none"
    print(f"  batching, --max-batch {cluster.settings.runtime_max_batch}: "
          f"{', '.join(f'{w:.2f} s' for w in walls)}; denoise batches {formed}", flush=True)
    return walls, formed


def batching_lines(dag_id: str, count: int, batched: tuple[list[float], str], unbatched: tuple[list[float], str],
                   max_batch: int) -> list[str]:
    fast, slow = median(batched[0]), median(unbatched[0])
    return [f"batching ({dag_id}, {count} mapped prompts, {len(batched[0])} runs each, trigger to success, medians):",
            f"  runtime --max-batch {max_batch:<3} {fast:7.2f} s  {count / fast:8.3f} img/s  1.00x   denoise batches "
            f"{batched[1]}",
            f"  runtime --max-batch 1   {slow:7.2f} s  {count / slow:8.3f} img/s  {ratio(fast, slow)}   denoise batches "
            f"{unbatched[1]}"]


def bench_warm(cluster: Cluster, dag_id: str, runs: int) -> tuple[list[str], list[RunResult]]:
    cluster.wait_for_dag(dag_id)
    results = [cluster.run(dag_id, {}) for _ in range(runs)]
    cold, warm = results[0], results[1:]
    lines = [f"cold vs warm ({dag_id}, runtime on {cluster.settings.runtime_device}):",
             f"  first run after the runtime started: task {cold.task_seconds[0]:.2f} s, {cold.misses} model parts "
             f"loaded in {cold.load_seconds:.2f} s, trigger to success {cold.wall:.2f} s"]
    if warm:
        lines.append(f"  next {len(warm)} runs (median): task {median([r.task_seconds[0] for r in warm]):.2f} s, "
                     f"{sum(r.misses for r in warm)} model parts loaded ({sum(r.load_seconds for r in warm):.2f} s), "
                     f"cache hits {median([float(r.usages[0]['model_cache']['hits']) for r in warm]):.0f} per task, "
                     f"trigger to success {median([r.wall for r in warm]):.2f} s")
    return lines, results


def overhead_lines(label: str, results: list[RunResult]) -> str:
    task = median([r.task_seconds[0] for r in results])
    nodes = median([r.node_seconds for r in results])
    load = median([r.load_seconds for r in results])
    return (f"  {label:<16} task {task:6.2f} s  nodes {nodes:6.2f} s  model loading {load:6.2f} s  "
            f"task minus nodes {task - nodes:6.2f} s  trigger to success {median([r.wall for r in results]):6.2f} s")


# --- main ----------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("gpu", "cpu-smoke"), default=None,
                        help="gpu: full-size random-weight models on CUDA; cpu-smoke: tiny models (default: gpu when "
                             "CUDA is available)")
    parser.add_argument("--models", default=None, help="comma-separated: sd15,sdxl (default: both in gpu mode, sd15 "
                                                        "in cpu-smoke)")
    parser.add_argument("--parts", default="warm,overhead,throughput,batching",
                        help="which of warm,overhead,throughput,batching")
    parser.add_argument("--prompts", type=int, default=None, help="prompts of the mapped run (default: 32; 8 in "
                                                                  "cpu-smoke)")
    parser.add_argument("--batch-size", type=int, default=8, help="diffusers batch size for the batching bound")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the throughput part")
    parser.add_argument("--runs", type=int, default=5, help="one-image runs per cluster in the overhead part")
    parser.add_argument("--gpu-concurrency", type=int, default=8, help="task processes of the gpu worker")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="most denoise nodes per batch in the runtime (default: the gpu worker's concurrency)")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default=None)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (models are reused from it)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    bench_sd.check_packages()
    bench_sd.quiet_libraries()
    import torch

    mode = args.mode or ("gpu" if torch.cuda.is_available() else "cpu-smoke")
    device = "cuda" if mode == "gpu" else "cpu"
    if mode == "gpu" and not torch.cuda.is_available():
        sys.exit("bench_runtime: --mode gpu needs CUDA")
    dtype = getattr(torch, args.dtype or ("float16" if mode == "gpu" else "float32"))
    sizes, steps, _ = bench_sd.MODE_DEFAULTS[mode]
    steps = 30 if mode == "gpu" else steps
    models = (args.models or ("sd15,sdxl" if mode == "gpu" else "sd15")).split(",")
    parts = set(args.parts.split(","))
    args.prompts = args.prompts or (32 if mode == "gpu" else 8)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench_runtime: mode {mode}, device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, "
          f"{dtype}, models {models}, parts {sorted(parts)}, scratch {work}", flush=True)

    from invokeai_provider.models.model_manager.install import install_model
    from invokeai_provider.models.model_manager.registry import ModelRegistry

    registry = ModelRegistry((work / "model-root").as_uri())
    dags = work / "dags"
    (dags / "documents").mkdir(parents=True, exist_ok=True)
    (dags / "bench_dags.py").write_text(DAG_FILE)
    dag_ids: dict[str, tuple[str, str]] = {}
    folders: dict[str, Path] = {}
    for key in models:
        spec = bench_sd.SPECS[key]
        folder, built, reused = bench_sd.model_folder(spec, mode, work, device=device, dtype=dtype)
        folders[key] = folder
        name = f"bench-{key}"
        config = next((c for c in registry.all() if c.name == name), None) or install_model(
            registry, str(folder), name=name, inplace=True)
        identifier = {"key": config.key, "hash": config.hash, "name": name, "base": config.base.value, "type": "main"}
        dag_ids[key] = write_documents(dags / "documents", spec, identifier, size=sizes[key], steps=steps,
                                       count=args.prompts)
        print(f"  model {spec.label}: {'reused' if reused else f'built in {built:.1f} s'} ({folder})", flush=True)

    report: list[str] = []
    try:
        if "overhead" in parts:
            first = models[0]
            plain = Cluster(work, dags, runtime=False, model_root=registry.root.as_uri(), gpu_concurrency=1,
                            label="no-runtime")
            try:
                plain.wait_for_dag(dag_ids[first][0])
                without = [plain.run(dag_ids[first][0], {}) for _ in range(args.runs)]
            finally:
                plain.down()
        with_runtime = Cluster(work, dags, runtime=True, model_root=registry.root.as_uri(),
                               gpu_concurrency=args.gpu_concurrency, label="runtime",
                               max_batch=args.max_batch or args.gpu_concurrency)
        report.append(f"cluster with runtime up in {with_runtime.startup_seconds:.1f} s "
                      f"(gpu worker concurrency {args.gpu_concurrency})")
        try:
            for index, key in enumerate(models):
                single = dag_ids[key][0]
                if "warm" in parts or ("overhead" in parts and index == 0):
                    lines, results = bench_warm(with_runtime, single, max(args.runs, 2))
                    if "warm" in parts:
                        report += lines
                    if "overhead" in parts and index == 0:
                        report += [f"per-task overhead ({single}, {args.runs} one-image runs per cluster, medians):",
                                   overhead_lines("without runtime", without),
                                   overhead_lines("with runtime", results[1:])]
                if "throughput" in parts:
                    report += bench_throughput(with_runtime, bench_sd.SPECS[key], folders[key], dag_ids[key], work,
                                               args, device=device, dtype=dtype, size=sizes[key], steps=steps)
            if "batching" in parts:
                batched = {key: mapped_walls(with_runtime, dag_ids[key][1], args.prompts, args.repeats)
                           for key in models}
        finally:
            with_runtime.down()
        if "batching" in parts:  # after the first cluster is down: one cluster at a time on the machine
            unbatched = Cluster(work, dags, runtime=True, model_root=registry.root.as_uri(),
                                gpu_concurrency=args.gpu_concurrency, label="runtime-unbatched", max_batch=1)
            try:
                for key in models:
                    report += batching_lines(dag_ids[key][1], args.prompts, batched[key],
                                             mapped_walls(unbatched, dag_ids[key][1], args.prompts, args.repeats),
                                             args.max_batch or args.gpu_concurrency)
            finally:
                unbatched.down()
    finally:
        print("\n" + "\n".join(report), flush=True)
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

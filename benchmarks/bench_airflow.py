"""Airflow-side benchmarks: compile time, DAG-file parse time, and scheduler wall time against the engine alone.

    .venv/bin/python benchmarks/bench_airflow.py [--quick] [--repeats 5] [--parse-repeats 5] [--runs 3]
                                                 [--skip-compile] [--skip-parse] [--skip-scheduler]

Figures (medians; these machines are shared, so no single timing counts):
- compile time for synthetic graphs of 10, 100 and 1,000 nodes (a chain of ``add`` nodes, and
  integer_collection → iterate → chain of mul/add → collect): ``build_plan`` on a validated Graph,
  ``load_compiled`` (parse + validate + plan + Params, plan cache cleared) and ``compile_dag`` (the Airflow
  DAG objects too), segment and node granularity;
- parse time of the example dags folder in fresh interpreters (``DagBag(folder)``; the airflow import is
  timed apart), per workflow DAG (target < 0.5 s), and with a worker's parsing context set to one DAG;
- wall time of the SD1.5 tiny-model workflow through Airflow's real scheduler (LocalExecutor, SQLite,
  everything on 127.0.0.1), segment and node granularity, against the engine alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO / "dags"
WORKFLOW = DAGS_FOLDER / "workflows" / "sd15-text-to-image.json"
VENV_BIN = Path(sys.executable).parent
DEMO_MODEL = "tiny-sd15"
CONF = {"model": DEMO_MODEL, "noise_width": 64, "noise_height": 64, "denoise_steps": 4, "seed": 1}
ENGINE_SETS = [f"model.model={DEMO_MODEL}", "noise.width=64", "noise.height=64", "denoise.steps=4", "seed.value=1"]
GRANULARITIES = ("segment", "node")


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and why."""


# --------------------------------------------------------------------------------------------- helpers

def median_seconds(fn: Callable[[], Any], repeats: int, setup: Optional[Callable[[], Any]] = None) -> float:
    samples = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def fmt_ratio(value: float, base: float) -> str:
    return f"x{value / base:6.2f}" if base > 0 else "     -"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: ours, minus any parsing context, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("_AIRFLOW_PARSING_CONTEXT")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------- 1. compile

def chain_graph(n: int) -> dict[str, Any]:
    nodes = {f"n{i}": {"id": f"n{i}", "type": "add", "b": 1} for i in range(n)}
    edges = [{"source": {"node_id": f"n{i}", "field": "value"}, "destination": {"node_id": f"n{i + 1}", "field": "a"}}
             for i in range(n - 1)]
    return {"id": f"chain-{n}", "nodes": nodes, "edges": edges}


def iterate_graph(n: int) -> dict[str, Any]:
    """integer_collection → iterate → (n - 3) alternating mul/add nodes → collect: n nodes in all."""
    body = max(1, n - 3)
    nodes: dict[str, Any] = {
        "items": {"id": "items", "type": "integer_collection", "collection": [1, 2, 3, 4]},
        "it": {"id": "it", "type": "iterate"},
        "c": {"id": "c", "type": "collect"},
    }
    edges = [{"source": {"node_id": "items", "field": "collection"},
              "destination": {"node_id": "it", "field": "collection"}}]
    previous, field = "it", "item"
    for i in range(body):
        node_id = f"m{i}"
        nodes[node_id] = {"id": node_id, "type": "mul" if i % 2 == 0 else "add", "b": 2 if i % 2 == 0 else 1}
        edges.append({"source": {"node_id": previous, "field": field}, "destination": {"node_id": node_id, "field": "a"}})
        previous, field = node_id, "value"
    edges.append({"source": {"node_id": previous, "field": field}, "destination": {"node_id": "c", "field": "item"}})
    return {"id": f"iterate-{n}", "nodes": nodes, "edges": edges}


def bench_compile(sizes: tuple[int, ...], repeats: int) -> None:
    from invokeai_provider.compiler import dags as compile_module
    from invokeai_provider.graph.graph import Graph
    from invokeai_provider.compiler.plan import build_plan
    from invokeai_provider.core.registry import load_node_packs

    load_node_packs()
    no_models: Callable[[str, str], list[str]] = lambda node_type, field_name: []  # noqa: E731

    def clear_cache() -> None:
        with compile_module._CACHE_LOCK:
            compile_module._CACHE.clear()

    # airflow import (and the operator classes) outside the timings
    t0 = time.perf_counter()
    compile_module.compile_dag(chain_graph(3), dag_id="bench_warmup", model_names=no_models)
    compile_module.compile_dag(iterate_graph(5), dag_id="bench_warmup_it", granularity="node", model_names=no_models)
    warmup = time.perf_counter() - t0
    clear_cache()

    print(f"compile time (median of {repeats}; plan cache cleared before each repeat; first compile_dag, "
          f"with the airflow import, took {warmup:.2f} s and is excluded)")
    header = (f"  {'graph':<9} {'nodes':>5} {'gran.':<8} {'tasks':>5} {'build_plan ms':>14} {'load_compiled ms':>17} "
              f"{'compile_dag ms':>15} {'us/node':>8} {'x per x10 nodes':>16}")
    print(header)
    for label, builder in (("chain", chain_graph), ("iterate", iterate_graph)):
        for granularity in GRANULARITIES:
            previous: Optional[float] = None
            for n in sizes:
                doc = builder(n)
                graph = Graph.from_dict(doc)
                graph.validate()
                tasks = len(build_plan(graph, granularity=granularity).tasks)
                plan_s = median_seconds(lambda: build_plan(graph, granularity=granularity), repeats)
                load_s = median_seconds(
                    lambda: compile_module.load_compiled(doc, granularity=granularity, model_names=no_models),
                    repeats, setup=clear_cache)
                dag_s = median_seconds(
                    lambda: compile_module.compile_dag(doc, dag_id=f"bench_{label}_{n}_{granularity}",
                                                       granularity=granularity, model_names=no_models),
                    repeats, setup=clear_cache)
                growth = f"x{dag_s / previous:5.1f}" if previous else ""
                print(f"  {label:<9} {n:>5} {granularity:<8} {tasks:>5} {plan_s * 1000:14.2f} {load_s * 1000:17.2f} "
                      f"{dag_s * 1000:15.2f} {dag_s / n * 1e6:8.1f} {growth:>16}")
                previous = dag_s
    clear_cache()
    print("  (x per x10 nodes: compile_dag time over the previous size's; 10 would be linear)")


# --------------------------------------------------------------------------------------------- 2. parse

PARSE_CODE = r"""
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(sys.argv[1])
t2 = time.perf_counter()
print("BENCH_JSON " + json.dumps({
    "import_s": t1 - t0, "parse_s": t2 - t1, "dags": sorted(bag.dag_ids),
    "tasks": {d: len(bag.dags[d].tasks) for d in bag.dag_ids},
    "errors": {k: v.strip().splitlines()[-1] if v.strip() else "" for k, v in bag.import_errors.items()},
    "files": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats},
}))
"""


def parse_once(path: Path, env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PARSE_CODE, str(path)], env=env, capture_output=True, text=True,
                            timeout=300)
    wall = time.perf_counter() - start
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"parsing {path} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    data = json.loads(line[len("BENCH_JSON "):])
    data["wall_s"] = wall
    return data


def parse_median(path: Path, env: dict[str, str], repeats: int) -> dict[str, Any]:
    runs = [parse_once(path, env) for _ in range(repeats)]
    first = runs[0]
    if first["errors"]:
        raise BenchError(f"import errors parsing {path}: {json.dumps(first['errors'], indent=2)}")
    files = {f: statistics.median(r["files"].get(f, 0.0) for r in runs) for f in first["files"]}
    return {"import_s": statistics.median(r["import_s"] for r in runs),
            "parse_s": statistics.median(r["parse_s"] for r in runs),
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "dags": first["dags"], "tasks": first["tasks"], "files": files}


def bench_parse(repeats: int, scratch: Path) -> None:
    from invokeai_provider.compiler.dags import dag_id_for, load_compiled

    model_root = scratch / "parse-models"
    model_root.mkdir(parents=True, exist_ok=True)
    home = scratch / "parse-home"
    home.mkdir(parents=True, exist_ok=True)
    env = clean_env(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                    AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
                    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
                    AIRFLOW__INVOKEAI__MODEL_ROOT=f"file://{model_root}")
    env.pop("AIRFLOW__INVOKEAI__WORKFLOW_GRANULARITY", None)
    workflows = sorted((DAGS_FOLDER / "workflows").glob("*.json"))
    factory = DAGS_FOLDER / "invokeai_workflows.py"
    print(f"DAG-file parse time (fresh interpreter each, median of {repeats}; airflow import timed apart; "
          f"empty model root)")
    parse_once(DAGS_FOLDER, env)  # warm the OS file cache (and .pyc files); not counted
    bare = median_seconds(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True, env=env), repeats)
    full = parse_median(DAGS_FOLDER, env, repeats)
    wf_file = next((s for f, s in full["files"].items() if f.endswith("invokeai_workflows.py")), None)
    print(f"  bare interpreter start                          {bare:7.3f} s")
    print(f"  import airflow.dag_processing.dagbag            {full['import_s']:7.3f} s")
    print(f"  DagBag(dags/) total parse                       {full['parse_s']:7.3f} s  "
          f"({len(full['dags'])} DAGs, {sum(full['tasks'].values())} tasks; process wall {full['wall_s']:.2f} s)")
    for f, seconds in sorted(full["files"].items()):
        print(f"    {f:<45} {seconds:7.3f} s")
    print("    (per-file times are in parse order: the first file to import invokeai_provider pays for it)")
    print(f"  per DAG (total parse / {len(full['dags'])})                       "
          f"{full['parse_s'] / max(1, len(full['dags'])):7.3f} s")
    single = parse_median(factory, env, repeats)  # the workflows file alone: it pays the provider import itself
    if workflows:
        for label, seconds in (("in the folder parse", wf_file), ("parsed alone, imports included", single["parse_s"])):
            if seconds is None:
                continue
            per = seconds / len(workflows)
            verdict = "OK" if per < 0.5 else "OVER TARGET"
            print(f"  per workflow DAG, {label:<31} {per:7.3f} s  ({len(workflows)} workflows; target < 0.5 s: "
                  f"{verdict})")

    # a worker running one task: the parsing context names the DAG and task
    target = WORKFLOW
    dag_id = dag_id_for(target)
    task_id = load_compiled(target, model_names=lambda *a: []).plan.tasks[0].task_id
    ctx_env = dict(env, _AIRFLOW_PARSING_CONTEXT_DAG_ID=dag_id, _AIRFLOW_PARSING_CONTEXT_TASK_ID=task_id)
    print(f"  with the parsing context of one task ({dag_id} / {task_id}):")
    single_ctx = parse_median(factory, ctx_env, repeats)
    folder_ctx = parse_median(DAGS_FOLDER, ctx_env, repeats)
    print(f"    DagBag(dags/) with context                    {folder_ctx['parse_s']:7.3f} s  "
          f"({len(folder_ctx['dags'])} DAGs)  {fmt_ratio(folder_ctx['parse_s'], full['parse_s'])} of no context")
    print(f"    DagBag(invokeai_workflows.py), no context     {single['parse_s']:7.3f} s  ({len(single['dags'])} DAGs)")
    print(f"    DagBag(invokeai_workflows.py), with context   {single_ctx['parse_s']:7.3f} s  "
          f"({len(single_ctx['dags'])} DAG: {', '.join(single_ctx['dags'])})  "
          f"{fmt_ratio(single_ctx['parse_s'], single['parse_s'])} of no context")


# --------------------------------------------------------------------------------------------- 3. scheduler

def engine_in_process(model_root: str, artifacts: str) -> float:
    """One run of the workflow through the engine in this process (what `graph run` does, minus startup)."""
    from invokeai_provider.cli.overrides import apply_overrides, parse_set
    from invokeai_provider.core.context import RunContext
    from invokeai_provider.graph.engine import Engine, ExecutionState
    from invokeai_provider.graph.graph import Graph
    from invokeai_provider.models.model_manager.binding import bind_model_fields
    from invokeai_provider.models.model_manager.manager import ModelManager
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.storage.base import open_run_store
    from invokeai_provider.graph.workflow import load_document

    start = time.perf_counter()
    document = load_document(WORKFLOW.read_text())
    graph_dict = apply_overrides(document.graph.to_dict(), parse_set(ENGINE_SETS))
    manager = ModelManager(ModelRegistry(model_root))  # a fresh model cache: the model is loaded from disk
    graph = Graph.from_dict(bind_model_fields(graph_dict, manager.registry))
    graph.validate()
    store = open_run_store(artifacts, dag_id="bench-engine", run_id=f"inproc-{secrets.token_hex(4)}")
    run = RunContext(store=store, graph_json=graph.to_dict(), services={"models": manager})
    Engine(run).run(ExecutionState(graph))
    return time.perf_counter() - start


def engine_probe(model_root: str, artifacts: str, runs: int) -> None:
    """Run in a fresh interpreter (``--engine-probe``): import time, first run, then warm runs, as JSON."""
    start = time.perf_counter()
    import invokeai_provider.graph.engine  # noqa: F401
    from invokeai_provider.core.registry import load_node_packs

    load_node_packs()
    imports = time.perf_counter() - start
    first = engine_in_process(model_root, artifacts)
    warm = [engine_in_process(model_root, artifacts) for _ in range(runs)]
    print("BENCH_JSON " + json.dumps({"imports_s": imports, "first_s": first, "warm_s": warm}))


def engine_probe_subprocess(model_root: str, artifacts: str, runs: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--engine-probe", model_root, artifacts, str(runs)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=clean_env())
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"the in-process engine probe failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(line[len("BENCH_JSON "):])


def engine_subprocess(model_root: str, artifacts: str) -> float:
    cmd = [str(VENV_BIN / "invokeai-airflow"), "graph", "run", str(WORKFLOW)]
    for assignment in ENGINE_SETS:
        cmd += ["--set", assignment]
    cmd += ["--model-root", model_root, "--artifacts", artifacts]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=clean_env())
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


DAG_FILE = '''"""Benchmark Airflow DAG file: compiles {workflow} into dag {dag_id!r} ({granularity} granularity)."""

from invokeai_provider.compiler.dags import compile_dag

dag = compile_dag({workflow!r}, dag_id={dag_id!r}, granularity={granularity!r})
'''


def parse_db_time(value: Any) -> Optional[datetime]:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class AirflowCluster:
    """api-server, scheduler and dag-processor of a temporary home, each in its own process group."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home, self.env, self.port = home, env, port
        self.db = home / "airflow.db"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def cli(self, *args: str, timeout: float = 180) -> str:
        cmd = [str(VENV_BIN / "airflow"), *args]
        try:
            result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"`airflow {' '.join(args)}` timed out after {timeout:.0f} s") from None
        if result.returncode != 0:
            raise BenchError(f"`airflow {' '.join(args)}` failed (exit {result.returncode}):\n"
                             f"{result.stdout[-1500:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def start(self, name: str, *args: str) -> None:
        log = open(self.home / f"{name}.log", "wb")
        try:
            self.procs[name] = subprocess.Popen([str(VENV_BIN / "airflow"), *args], env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True, cwd=self.home)
        finally:
            log.close()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"airflow {name} exited with {proc.returncode}; its log ends:\n"
                                 f"{tail(self.home / f'{name}.log')}")

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():  # stragglers (and the group's children: task processes, gunicorn/uvicorn)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        for attempt in range(20):
            try:
                with self.connect() as conn:
                    return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise BenchError(f"the Airflow database stayed locked: {sql}")

    def wait_api(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/api/v2/monitor/health"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1)
        raise BenchError(f"the api-server did not answer on {url} within {timeout:.0f} s; its log ends:\n"
                         f"{tail(self.home / 'api-server.log')}")

    def wait_dags(self, dag_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(sqlite3.OperationalError):
                found = {r[0] for r in self.query("SELECT dag_id FROM serialized_dag")}
                if set(dag_ids) <= found:
                    return
                errors = self.query("SELECT filename, stacktrace FROM import_error")
                if errors:
                    detail = "\n".join(f"{f}: {s.strip().splitlines()[-1] if s else ''}" for f, s in errors)
                    raise BenchError(f"the dag-processor recorded import errors:\n{detail}")
            time.sleep(1)
        raise BenchError(f"DAGs {dag_ids} were not parsed within {timeout:.0f} s; dag-processor log ends:\n"
                         f"{tail(self.home / 'dag-processor.log')}")

    def run_dag(self, dag_id: str, run_id: str, conf: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.cli("dags", "trigger", dag_id, "--conf", json.dumps(conf), "--run-id", run_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            rows = self.query("SELECT state, queued_at, start_date, end_date FROM dag_run WHERE dag_id=? AND run_id=?",
                              (dag_id, run_id))
            if rows and rows[0][0] in ("success", "failed"):
                state, queued, started, ended = rows[0]
                tis = self.query("SELECT task_id, map_index, state, queued_dttm, start_date, end_date FROM task_instance "
                                 "WHERE dag_id=? AND run_id=?", (dag_id, run_id))
                if state != "success":
                    failed = [f"{t[0]}[{t[1]}]={t[2]}" for t in tis if t[2] != "success"]
                    raise BenchError(f"run {dag_id}/{run_id} ended {state}; tasks: {', '.join(failed)}; see the task "
                                     f"logs under {self.home / 'logs'}")
                return {"queued": parse_db_time(queued), "start": parse_db_time(started),
                        "end": parse_db_time(ended),
                        "tis": [(t[0], t[1], parse_db_time(t[3]), parse_db_time(t[4]), parse_db_time(t[5]))
                                for t in tis]}
            time.sleep(0.5)
        raise BenchError(f"run {dag_id}/{run_id} did not finish within {timeout:.0f} s; scheduler log ends:\n"
                         f"{tail(self.home / 'scheduler.log')}")


def summarize_run(run: dict[str, Any], upstream: dict[str, list[str]]) -> dict[str, float]:
    """Run wall, task durations and latencies; ``upstream``: task id -> the task ids it waits for."""
    tis = run["tis"]
    durations = [(e - s).total_seconds() for _, _, _, s, e in tis if s and e]
    starts = sorted(s for _, _, _, s, _ in tis if s)
    ends = sorted(e for _, _, _, _, e in tis if e)
    ended: dict[str, datetime] = {}
    for task_id, _, _, _, end in tis:
        if end is not None:
            ended[task_id] = max(end, ended.get(task_id, end))
    ready_latency = []  # all upstream tasks done (or the run started) -> this task started
    for task_id, _, _, start, _ in tis:
        ups = [ended[u] for u in upstream.get(task_id, []) if u in ended]
        ready = max(ups) if ups else run["start"]
        if start is not None:
            ready_latency.append((start - ready).total_seconds())
    return {"wall": (run["end"] - run["start"]).total_seconds(),
            "queued_wall": (run["end"] - run["queued"]).total_seconds() if run["queued"] else float("nan"),
            "tis": float(len(tis)), "task_sum": sum(durations),
            "task_min": min(durations) if durations else float("nan"),
            "task_median": statistics.median(durations) if durations else float("nan"),
            "task_max": max(durations) if durations else float("nan"),
            "ready_latency": statistics.median(ready_latency) if ready_latency else float("nan"),
            "ready_latency_max": max(ready_latency) if ready_latency else float("nan"),
            "first_task_delay": (starts[0] - run["start"]).total_seconds() if starts else float("nan"),
            "tail_after_last_task": (run["end"] - ends[-1]).total_seconds() if ends else float("nan")}


def bench_scheduler(runs: int, scratch: Path, startup_timeout: float, run_timeout: float) -> None:
    from invokeai_provider.cli.demo import ensure_demo_model
    from invokeai_provider.compiler.dags import load_compiled

    model_dir = scratch / "sched-models"
    model_root = f"file://{model_dir}"
    artifacts = f"file://{scratch / 'sched-artifacts'}"
    print(f"SD1.5 tiny model, 64x64, 4 steps: engine alone vs Airflow scheduler + LocalExecutor "
          f"(median of {runs} runs)")
    start = time.perf_counter()
    ensure_demo_model(model_root)
    print(f"  (tiny model built/installed in {time.perf_counter() - start:.1f} s, not counted)")

    engine_cli = [engine_subprocess(model_root, artifacts) for _ in range(runs)]
    probe = engine_probe_subprocess(model_root, artifacts, runs)  # a fresh interpreter: imports, then runs
    engine_cold, engine_warm = probe["first_s"], probe["warm_s"]
    engine_s = statistics.median(engine_cli)

    home = scratch / "sched-home"
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    dag_ids = {g: f"bench_{g}" for g in GRANULARITIES}
    task_counts: dict[str, int] = {}
    upstreams: dict[str, dict[str, list[str]]] = {}
    for granularity, dag_id in dag_ids.items():
        (dags / f"{dag_id}.py").write_text(DAG_FILE.format(workflow=str(WORKFLOW), dag_id=dag_id,
                                                           granularity=granularity))
        plan = load_compiled(WORKFLOW, granularity=granularity, model_names=lambda *a: []).plan
        task_counts[granularity] = len(plan.tasks)
        upstreams[granularity] = {t.task_id: list(t.upstream) for t in plan.tasks}
    port = free_port()
    env = clean_env(
        AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(dags), AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor", AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__API__HOST="127.0.0.1", AIRFLOW__API__PORT=str(port), AIRFLOW__API__WORKERS="1",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__FERNET_KEY="", AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        AIRFLOW__INVOKEAI__MODEL_ROOT=model_root, AIRFLOW__INVOKEAI__ARTIFACT_ROOT=artifacts,
    )
    env.pop("AIRFLOW__INVOKEAI__WORKFLOW_GRANULARITY", None)
    cluster = AirflowCluster(home, env, port)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        start = time.perf_counter()
        cluster.cli("db", "migrate", timeout=300)
        migrate_s = time.perf_counter() - start
        start = time.perf_counter()
        cluster.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        cluster.wait_api(startup_timeout)
        cluster.wait_dags(list(dag_ids.values()), startup_timeout)
        ready_s = time.perf_counter() - start
        for dag_id in dag_ids.values():
            cluster.cli("dags", "unpause", dag_id)
        print(f"  (db migrate {migrate_s:.1f} s; api-server + scheduler + dag-processor up and both DAGs parsed "
              f"in {ready_s:.1f} s; api-server on 127.0.0.1:{port})")
        for granularity, dag_id in dag_ids.items():
            results[granularity] = []
            for i in range(runs):
                run = cluster.run_dag(dag_id, f"bench_{granularity}_{i}_{secrets.token_hex(3)}", CONF, run_timeout)
                results[granularity].append(summarize_run(run, upstreams[granularity]))
    finally:
        cluster.stop()

    def med(granularity: str, key: str) -> float:
        return statistics.median(r[key] for r in results[granularity])

    print(f"  {'':<48} {'seconds':>8} {'vs engine':>10} {'tasks':>6}")
    print(f"  {'engine alone: `invokeai-airflow graph run`':<48} {engine_s:8.2f} {fmt_ratio(engine_s, engine_s):>10} "
          f"{'-':>6}")
    for label, seconds in (("engine in-process: import provider + nodes", probe["imports_s"]),
                           ("engine in-process: first run (lazy imports)", engine_cold),
                           ("engine in-process: later run (model from disk)", statistics.median(engine_warm))):
        print(f"  {label:<48} {seconds:8.2f} {fmt_ratio(seconds, engine_s):>10} {'-':>6}")
    for granularity in GRANULARITIES:
        wall = med(granularity, "wall")
        label = f"{granularity} DAG run (dag_run start→end)"
        print(f"  {label:<48} {wall:8.2f} {fmt_ratio(wall, engine_s):>10} {task_counts[granularity]:>6}")
    for granularity in GRANULARITIES:
        wall = med(granularity, "queued_wall")
        label = f"{granularity} DAG run (queued→end)"
        print(f"  {label:<48} {wall:8.2f} {fmt_ratio(wall, engine_s):>10} {task_counts[granularity]:>6}")
    seg, node = med("segment", "wall"), med("node", "wall")
    print(f"  ratios: segment/engine {seg / engine_s:.2f}, node/engine {node / engine_s:.2f}, node/segment "
          f"{node / seg:.2f}")
    print("  per-task breakdown (medians over runs; ready→start: upstream tasks done, or run start, to task start)")
    print(f"    {'DAG':<8} {'TIs':>4} {'sum task s':>11} {'min task s':>11} {'median task s':>14} {'max task s':>11} "
          f"{'ready→start s':>14} {'max ready→start':>16} {'last task→run end':>18}")
    for granularity in GRANULARITIES:
        print(f"    {granularity:<8} {med(granularity, 'tis'):>4.0f} {med(granularity, 'task_sum'):11.2f} "
              f"{med(granularity, 'task_min'):11.2f} {med(granularity, 'task_median'):14.2f} "
              f"{med(granularity, 'task_max'):11.2f} {med(granularity, 'ready_latency'):14.2f} "
              f"{med(granularity, 'ready_latency_max'):16.2f} {med(granularity, 'tail_after_last_task'):18.2f}")
    if runs > 1:
        for granularity in GRANULARITIES:
            walls = ", ".join(f"{r['wall']:.2f}" for r in results[granularity])
            print(f"    {granularity} run walls: {walls}")
        print(f"    engine CLI walls: {', '.join(f'{s:.2f}' for s in engine_cli)}")


# --------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run: 2 compile and parse repeats, 1 DAG run per granularity")
    parser.add_argument("--repeats", type=int, default=None, help="compile repeats (default 5, quick 2)")
    parser.add_argument("--parse-repeats", type=int, default=None, help="parse subprocesses (default 5, quick 2)")
    parser.add_argument("--runs", type=int, default=None, help="DAG runs per granularity (default 3, quick 1)")
    parser.add_argument("--startup-timeout", type=float, default=240.0)
    parser.add_argument("--run-timeout", type=float, default=300.0)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-parse", action="store_true")
    parser.add_argument("--skip-scheduler", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, database)")
    parser.add_argument("--engine-probe", nargs=3, metavar=("MODEL_ROOT", "ARTIFACTS", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_probe:
        engine_probe(args.engine_probe[0], args.engine_probe[1], int(args.engine_probe[2]))
        return
    repeats = args.repeats or (2 if args.quick else 5)
    parse_repeats = args.parse_repeats or (2 if args.quick else 5)
    runs = args.runs or (1 if args.quick else 3)

    scratch = Path(tempfile.mkdtemp(prefix="bench-airflow-"))
    # Airflow reads its configuration on first import: point it at a scratch home before anything imports it.
    home = scratch / "bench-home"
    (home / "dags").mkdir(parents=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(home / "dags")
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    os.environ["AIRFLOW__INVOKEAI__MODEL_ROOT"] = f"file://{scratch / 'empty-models'}"
    (scratch / "empty-models").mkdir()
    if "airflow" in sys.modules:
        raise BenchError("airflow was imported before its home was set")
    print(f"bench_airflow: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, scratch {scratch}{' (quick)' if args.quick else ''}")
    started = time.perf_counter()
    try:
        if not args.skip_compile:
            bench_compile((10, 100, 1000), repeats)
        if not args.skip_parse:
            bench_parse(parse_repeats, scratch)
        if not args.skip_scheduler:
            bench_scheduler(runs, scratch, args.startup_timeout, args.run_timeout)
    except BenchError as exc:
        print(f"bench_airflow: FAILED: {exc}", file=sys.stderr)
        print(f"bench_airflow: scratch directory kept: {scratch}", file=sys.stderr)
        sys.exit(1)
    print(f"total benchmark time {time.perf_counter() - started:.0f} s; load average now {os.getloadavg()[0]:.2f} "
          f"(other work on this machine skews the timings)")
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"scratch directory kept: {scratch}")


if __name__ == "__main__":
    main()

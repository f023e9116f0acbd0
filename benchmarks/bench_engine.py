"""Engine and parse-time benchmarks; prints medians (these machines are shared, so no single timing counts).

    .venv/bin/python benchmarks/bench_engine.py [--repeats 7]

Figures:
- engine overhead per trivial node: a chain of N ``add`` nodes and an iterate over N items;
- validation + workflow conversion for 10, 100 and 1,000-node workflows (target: linear, < 0.2 s at 1,000);
- import time of the package (``import invokeai_provider.operators`` and loading every node family).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from invokeai_provider.core.context import RunContext
from invokeai_provider.graph.engine import Engine, ExecutionState
from invokeai_provider.graph.graph import Graph
from invokeai_provider.core.registry import load_node_packs
from invokeai_provider.storage.base import LocalArtifactBackend, RunStore
from invokeai_provider.graph.workflow import parse_workflow


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def chain_graph(n: int) -> dict[str, Any]:
    nodes = {f"n{i}": {"id": f"n{i}", "type": "add", "b": 1} for i in range(n)}
    edges = [{"source": {"node_id": f"n{i}", "field": "value"}, "destination": {"node_id": f"n{i + 1}", "field": "a"}}
             for i in range(n - 1)]
    return {"id": "chain", "nodes": nodes, "edges": edges}


def fan_out_graph(n: int) -> dict[str, Any]:
    return {"id": "fan", "nodes": {
        "r": {"id": "r", "type": "range", "start": 0, "stop": n, "step": 1},
        "it": {"id": "it", "type": "iterate"},
        "m": {"id": "m", "type": "mul", "b": 2},
        "c": {"id": "c", "type": "collect"},
    }, "edges": [
        {"source": {"node_id": "r", "field": "collection"}, "destination": {"node_id": "it", "field": "collection"}},
        {"source": {"node_id": "it", "field": "item"}, "destination": {"node_id": "m", "field": "a"}},
        {"source": {"node_id": "m", "field": "value"}, "destination": {"node_id": "c", "field": "item"}},
    ]}


def workflow_document(n: int) -> dict[str, Any]:
    """A saved workflow (meta 4.0.0) of n nodes: a chain of add nodes with a connector every tenth hop."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for i in range(n):
        nodes.append({"id": f"n{i}", "type": "invocation", "position": {"x": i, "y": 0},
                      "data": {"id": f"n{i}", "type": "add", "version": "1.0.1", "nodePack": "invokeai", "label": "",
                               "notes": "", "isOpen": True, "isIntermediate": True, "useCache": True,
                               "inputs": {"a": {"name": "a", "label": "", "value": 0},
                                          "b": {"name": "b", "label": "", "value": 1}}}})
        if i:
            edges.append({"id": f"e{i}", "type": "default", "source": f"n{i - 1}", "sourceHandle": "value",
                          "target": f"n{i}", "targetHandle": "a"})
    return {"name": f"chain-{n}", "meta": {"version": "4.0.0", "category": "user"}, "nodes": nodes, "edges": edges,
            "exposedFields": [{"nodeId": "n0", "fieldName": "b"}]}


def run_engine(doc: dict[str, Any], root: Path) -> ExecutionState:
    graph = Graph.from_dict(doc)
    graph.validate()
    run = RunContext(store=RunStore(LocalArtifactBackend(root)))
    return Engine(run).run(ExecutionState(graph))


def subprocess_seconds(code: str, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    load_node_packs()
    root = Path(tempfile.mkdtemp(prefix="bench-engine-"))

    print("engine overhead per trivial node (median of %d runs, parse+validate excluded)" % args.repeats)
    for label, builder, n in (("chain of add", chain_graph, 1000), ("iterate fan-out", fan_out_graph, 1000)):
        doc = builder(n)
        graph = Graph.from_dict(doc)
        graph.validate()
        run = RunContext(store=RunStore(LocalArtifactBackend(root)))
        state_nodes = len(run_engine(doc, root).exec_nodes)
        seconds = median_seconds(lambda: Engine(run).run(ExecutionState(graph)), args.repeats)
        print(f"  {label:<16} {state_nodes:>5} exec nodes  {seconds * 1000:8.1f} ms total  "
              f"{seconds / state_nodes * 1e6:7.1f} us/node")

    print("validation + workflow conversion (median)")
    previous = None
    for n in (10, 100, 1000):
        text = json.dumps(workflow_document(n))

        def convert(text: str = text) -> None:
            parse_workflow(json.loads(text)).graph.validate()

        seconds = median_seconds(convert, args.repeats)
        ratio = f"  x{seconds / previous:5.1f} for x10 nodes" if previous else ""
        print(f"  {n:>5} nodes  {seconds * 1000:8.2f} ms  {seconds / n * 1e6:6.1f} us/node{ratio}")
        previous = seconds

    print("import time (median of fresh interpreters, minus a bare interpreter)")
    bare = subprocess_seconds("pass", args.repeats)
    package = subprocess_seconds("import invokeai_provider.operators", args.repeats)
    families = subprocess_seconds("from invokeai_provider.core.registry import load_node_packs; load_node_packs()",
                                  args.repeats)
    print(f"  import invokeai_provider.operators        {(package - bare) * 1000:7.1f} ms")
    print(f"  + every node family registered            {(families - bare) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()

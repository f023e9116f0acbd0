"""What ``invokeai-airflow run`` prints: the run's tasks in plan order (mapped instances by map index) and records.

Airflow hands the task instances back by start time, and mapped instances start in any order, so they are put
back in order here: each task where it first started, its instances by map index.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence, TextIO

if TYPE_CHECKING:
    from invokeai_provider.cluster.local_airflow import RunResult

__all__ = ["ordered_tasks", "print_run"]


def ordered_tasks(tasks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks in the order each first started; a mapped task's instances together, by map index (numerically)."""
    first: dict[str, int] = {}
    for position, task in enumerate(tasks):
        first.setdefault(task["task_id"], position)
    return sorted(tasks, key=lambda t: (first[t["task_id"]], int(t.get("map_index") if t.get("map_index")
                                                                  is not None else -1)))


def print_run(result: "RunResult", *, as_json: bool, out: TextIO, err: TextIO) -> None:
    """``--json``: the whole run on ``out``; else the task states on ``err`` and the image records on ``out``."""
    result.tasks = ordered_tasks(result.tasks)
    if as_json:
        json.dump(result.to_dict(), out, indent=2, default=str)
        out.write("\n")
        return
    for task in result.tasks:
        label = f" [{task['label']}]" if task.get("label") else ""
        index = f"[{task['map_index']}]" if task["map_index"] >= 0 else ""
        print(f"task {task['task_id']}{index}{label}: {task['state']} (queue {task['queue']})", file=err)
    json.dump([{k: v for k, v in r.items() if k != "metadata"} for r in result.images], out, indent=2)
    out.write("\n")
    print(f"DAG run {result.run_id}: {result.state}, {len(result.images)} images", file=err)

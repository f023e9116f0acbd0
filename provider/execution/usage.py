"""Usage records: what each task of a run used, per tenant, for quotas and billing.

Every task that runs nodes records one usage object: images saved, denoising steps, GPU seconds, the
models it loaded and the nodes it ran, with the run's identity (tenant, dag, run, task, map index, try,
host, start and end). It goes to the task's XCom (key ``invokeai_usage``) and to the artifact store at
``<tenant>/usage/<dag_id>/<run_id>/<task_id>[-<map_index>].json``. The key does not depend on the try,
so a retried task overwrites its earlier try's object and a run's usage is never counted twice.

What is counted, and how:

- ``images``: images the task saved that are not intermediate (``intermediate_images``: the others);
- ``steps``: denoising steps that actually ran, one per progress event carrying ``step`` (the sampling
  loop reports after every UNet step). Not the nodes' ``steps`` input: strength, denoising start/end
  and second-order schedulers make the number of UNet steps differ from it;
- ``gpu_seconds``: wall seconds of the nodes whose class is marked ``gpu`` (the ones the plan routes to
  the GPU queue), as the engine times them around ``invoke``; ``node_seconds`` covers every node;
- ``models``: each model loaded through the model service (key, name, base, type, submodels);
- ``model_cache``: the model cache's hits, misses and load seconds during the task, and what it loaded;
  ``runtime`` names the GPU runtime that ran the task's nodes (device, pid, socket), None in-process.

Nothing heavy (nor Airflow) is imported here.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from invokeai_provider.errors import InvokeAIProviderError
from invokeai_provider.execution.tenants import check_tenant
from invokeai_provider.storage.base import safe_segment

if TYPE_CHECKING:
    from invokeai_provider.storage.base import ArtifactBackend

USAGE_XCOM_KEY = "invokeai_usage"
USAGE_VERSION = 1
_SUMMED = ("images", "intermediate_images", "steps", "nodes")
_SECONDS = ("gpu_seconds", "node_seconds")


def _value(item: Any) -> Any:
    return getattr(item, "value", item)


class UsageMeter:
    """Counts what one task's engine runs use; the task runtime feeds it, the operator records it."""

    def __init__(self) -> None:
        self.nodes = 0
        self.cached_nodes = 0  # of ``nodes``: outputs taken from the node cache (InvokeAI's invocation cache)
        self.node_types: Counter[str] = Counter()
        self.images = 0
        self.intermediate_images = 0
        self.steps = 0
        self.gpu_seconds = 0.0
        self.node_seconds = 0.0
        self.models: dict[str, dict[str, Any]] = {}
        self.model_cache: dict[str, Any] = {"hits": 0, "misses": 0, "load_seconds": 0.0, "loaded": []}
        self.runtime: Optional[dict[str, Any]] = None
        self._lock = threading.Lock()

    def progress_callback(self, logger: logging.Logger) -> Callable[[dict[str, Any]], None]:
        """A run context's ``on_progress``: counts denoising steps, and logs the event as the task log
        would without a callback."""

        def on_progress(event: dict[str, Any]) -> None:
            if event.get("step") is not None:
                with self._lock:
                    self.steps += 1
            percentage = event.get("percentage")
            logger.info("%s: %s%s", event.get("node_id"), event.get("message"),
                        f" ({percentage:.0%})" if isinstance(percentage, (int, float)) else "")

        return on_progress

    def models_service(self, manager: Any) -> "MeteredModels":
        return manager if isinstance(manager, MeteredModels) else MeteredModels(manager, self)

    def model_loaded(self, identifier: Any, submodel: Any) -> None:
        key = str(getattr(identifier, "key", "") or getattr(identifier, "name", ""))
        with self._lock:
            entry = self.models.setdefault(key, {
                "key": key, "name": getattr(identifier, "name", None),
                "base": _value(getattr(identifier, "base", None)), "type": _value(getattr(identifier, "type", None)),
                "submodels": []})
            part = _value(submodel)
            if part and part not in entry["submodels"]:
                entry["submodels"] = sorted([*entry["submodels"], part])

    def add_models(self, models: dict[str, dict[str, Any]]) -> None:
        """Models another process (the GPU runtime) loaded for this task, as its meter recorded them."""
        with self._lock:
            for key, entry in models.items():
                mine = self.models.setdefault(key, {**entry, "submodels": []})
                mine["submodels"] = sorted(set(mine["submodels"]) | set(entry.get("submodels") or []))

    def add_model_cache(self, cache: dict[str, Any], runtime: Optional[dict[str, Any]] = None) -> None:
        with self._lock:
            for name in ("hits", "misses"):
                self.model_cache[name] += int(cache.get(name, 0))
            self.model_cache["load_seconds"] = round(self.model_cache["load_seconds"]
                                                     + float(cache.get("load_seconds", 0.0)), 4)
            self.model_cache["loaded"] += list(cache.get("loaded") or [])
            if runtime is not None:
                self.runtime = dict(runtime)

    def add_state(self, state: Any) -> None:
        """Adds an engine run's executed nodes, their timings and the images they saved (the graphs of a chunk add
        theirs from their own threads)."""
        cached = set(getattr(state, "cached", ()))
        with self._lock:
            for exec_id in state.results:
                exec_node = state.exec_nodes.get(exec_id)
                invocation = state.graph.nodes[exec_node.source_id if exec_node is not None else exec_id]
                seconds = float(state.timings.get(exec_id, 0.0))
                self.nodes += 1
                self.node_types[invocation.get_type()] += 1
                self.node_seconds += seconds
                if exec_id in cached:  # it waited for another node's output at most: no device time of its own
                    self.cached_nodes += 1
                elif getattr(type(invocation).UIConfig, "gpu", False):
                    self.gpu_seconds += seconds
            for records in state.records.values():
                for record in records:
                    if record.get("is_intermediate"):
                        self.intermediate_images += 1
                    else:
                        self.images += 1

    def record(self, *, tenant: str, dag_id: str, run_id: str, task_id: str, map_index: Optional[int],
               try_number: Optional[int], hostname: Optional[str], started: datetime, ended: datetime
               ) -> dict[str, Any]:
        """The usage object of the task (JSON-ready)."""
        return {
            "version": USAGE_VERSION,
            "tenant": check_tenant(tenant),
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": map_index if map_index is not None and map_index >= 0 else None,
            "try_number": try_number,
            "hostname": hostname,
            "started": started.astimezone(timezone.utc).isoformat(),
            "ended": ended.astimezone(timezone.utc).isoformat(),
            "images": self.images,
            "intermediate_images": self.intermediate_images,
            "steps": self.steps,
            "gpu_seconds": round(self.gpu_seconds, 6),
            "node_seconds": round(self.node_seconds, 6),
            "nodes": self.nodes,
            "cached_nodes": self.cached_nodes,
            "node_types": dict(sorted(self.node_types.items())),
            "models": [self.models[k] for k in sorted(self.models)],
            "model_cache": dict(self.model_cache),
            "runtime": self.runtime,
        }


class MeteredModels:
    """The model service as nodes see it, telling the meter about every model a node loads."""

    def __init__(self, manager: Any, meter: UsageMeter) -> None:
        self._manager = manager
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    @contextmanager
    def load(self, identifier: Any, submodel: Any = None) -> Iterator[Any]:
        with self._manager.load(identifier, submodel) as model:
            self._meter.model_loaded(identifier, submodel or getattr(identifier, "submodel_type", None))
            yield model


# --- the store ------------------------------------------------------------------------------------


def usage_prefix(tenant: str, dag_id: Optional[str] = None, run_id: Optional[str] = None) -> str:
    """``<tenant>/usage/[<dag_id>/[<run_id>/]]``: what ``backend.list`` is given to find usage objects."""
    prefix = f"{check_tenant(tenant)}/usage/"
    if dag_id:
        prefix += f"{safe_segment(dag_id)}/"
        if run_id:
            prefix += f"{safe_segment(run_id)}/"
    return prefix


def usage_key(tenant: str, dag_id: str, run_id: str, task_id: str, map_index: Optional[int] = None) -> str:
    """``<tenant>/usage/<dag_id>/<run_id>/<task_id>[-<map_index>].json``: the same for every try."""
    suffix = f"-{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"{usage_prefix(tenant, dag_id, run_id)}{safe_segment(task_id)}{suffix}.json"


def write_usage(backend: "ArtifactBackend", record: dict[str, Any]) -> str:
    """Writes (or, for a retried task, overwrites) a task's usage object; returns its key."""
    key = usage_key(record["tenant"], record["dag_id"], record["run_id"], record["task_id"], record.get("map_index"))
    backend.write_bytes(key, json.dumps(record, sort_keys=True, indent=1).encode())
    return key


def store_usage(meter: UsageMeter, artifact_root: Optional[str], **identity: Any) -> Optional[dict[str, Any]]:
    """Records a task's usage in the artifact store and returns it; None when the task ran no nodes
    (bookkeeping tasks: batch sessions, fan-out, collect). ``identity``: the fields of UsageMeter.record."""
    if meter.nodes == 0:
        return None
    from invokeai_provider.storage.base import backend_for_uri, default_artifact_root

    record = meter.record(**identity)
    write_usage(backend_for_uri(artifact_root or default_artifact_root()), record)
    return record


def parse_since(text: str) -> datetime:
    """An ISO 8601 date or time as an aware datetime (a time without an offset is UTC)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvokeAIProviderError(f"--since {text!r}: expected an ISO 8601 date or time, e.g. 2025-06-01 or "
                                    "2025-06-01T12:00:00+00:00") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def read_usage(backend: "ArtifactBackend", tenant: str, *, dag_id: Optional[str] = None,
               run_id: Optional[str] = None, since: Optional[datetime] = None) -> list[dict[str, Any]]:
    """The tenant's usage objects, optionally of one DAG, one run, or of tasks started at or after ``since``."""
    records = []
    for key in backend.list(usage_prefix(tenant, dag_id, run_id)):
        if not key.endswith(".json"):
            continue
        try:
            record = json.loads(backend.read_bytes(key))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvokeAIProviderError(f"usage object {key} is not JSON: {exc}") from None
        if not isinstance(record, dict) or record.get("tenant") != tenant:
            raise InvokeAIProviderError(f"usage object {key} is not a usage record of tenant {tenant!r}")
        if dag_id is not None and record.get("dag_id") != dag_id:
            continue
        if run_id is not None and record.get("run_id") != run_id:
            continue
        if since is not None and parse_since(str(record.get("started"))) < since:
            continue
        records.append(record)
    return records


# --- summing --------------------------------------------------------------------------------------


def _index(record: dict[str, Any]) -> int:
    return -1 if record.get("map_index") is None else int(record["map_index"])


def _empty() -> dict[str, Any]:
    return {**{k: 0 for k in _SUMMED}, **{k: 0.0 for k in _SECONDS}}


def _add(total: dict[str, Any], record: dict[str, Any]) -> None:
    for name in _SUMMED:
        total[name] += int(record.get(name) or 0)
    for name in _SECONDS:
        total[name] += float(record.get(name) or 0.0)


def summarize(records: Iterable[dict[str, Any]], *, tenant: Optional[str] = None) -> dict[str, Any]:
    """Totals over usage records (runs, tasks, images, steps, GPU seconds, models) and one line per run.

    A task appears once however many records name it (the store holds one per task; this guards a caller
    that concatenates lists)."""
    seen: set[tuple[Any, ...]] = set()
    totals: dict[str, Any] = {"runs": 0, "tasks": 0, **_empty()}
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    models: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: (str(r.get("started")), str(r.get("dag_id")), str(r.get("run_id")),
                                                 str(r.get("task_id")), _index(r))):
        identity = (record.get("dag_id"), record.get("run_id"), record.get("task_id"), record.get("map_index"))
        if identity in seen:
            continue
        seen.add(identity)
        run_key = (str(record.get("dag_id")), str(record.get("run_id")))
        run = runs.setdefault(run_key, {"dag_id": run_key[0], "run_id": run_key[1], "started": record.get("started"),
                                        "ended": record.get("ended"), "tasks": 0, **_empty(), "models": []})
        run["tasks"] += 1
        totals["tasks"] += 1
        _add(run, record)
        _add(totals, record)
        run["started"] = min(str(run["started"]), str(record.get("started")))
        run["ended"] = max(str(run["ended"]), str(record.get("ended")))
        for model in record.get("models") or []:
            name = str(model.get("name") or model.get("key"))
            if name not in run["models"]:
                run["models"] = sorted([*run["models"], name])
            entry = models.setdefault(str(model.get("key")), {"key": model.get("key"), "name": model.get("name"),
                                                              "tasks": 0})
            entry["tasks"] += 1
    totals["runs"] = len(runs)
    for container in (totals, *runs.values()):
        for name in _SECONDS:
            container[name] = round(container[name], 3)
    totals["models"] = [models[k] for k in sorted(models)]
    ordered = sorted(runs.values(), key=lambda r: (r["started"], r["dag_id"], r["run_id"]))
    return {"tenant": tenant, "totals": totals, "runs": ordered}


def format_summary(summary: dict[str, Any]) -> str:
    """Totals, then one line per run, for people."""
    totals = summary["totals"]
    models = ", ".join(str(m["name"] or m["key"]) for m in totals["models"]) or "none"
    lines = [f"tenant {summary.get('tenant')}: {totals['runs']} runs, {totals['tasks']} tasks, {totals['images']} "
             f"images, {totals['steps']} steps, {totals['gpu_seconds']:.2f} GPU seconds, models: {models}"]
    if summary["runs"]:
        lines.append(f"{'started':<32}  {'dag_id / run_id':<60}  {'tasks':>5}  {'images':>6}  {'steps':>6}  "
                     f"{'gpu_s':>9}  models")
        for run in summary["runs"]:
            lines.append(f"{str(run['started']):<32}  {run['dag_id'] + ' / ' + run['run_id']:<60}  {run['tasks']:>5}  "
                         f"{run['images']:>6}  {run['steps']:>6}  {run['gpu_seconds']:>9.2f}  "
                         f"{', '.join(run['models']) or '-'}")
    return "\n".join(lines)


def usage_report(artifacts: str, tenant: str, *, dag_id: Optional[str] = None, run_id: Optional[str] = None,
                 since: Optional[str] = None) -> dict[str, Any]:
    """What ``invokeai-airflow usage`` prints: the summary of a tenant's usage objects under ``artifacts``."""
    from invokeai_provider.storage.base import backend_for_uri

    tenant = check_tenant(tenant, field="--tenant")
    records = read_usage(backend_for_uri(artifacts), tenant, dag_id=dag_id, run_id=run_id,
                         since=parse_since(since) if since else None)
    return summarize(records, tenant=tenant)

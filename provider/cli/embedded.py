"""Two corrections to what Airflow's ``dag.test()`` prints in the embedded ``run``/``demo``, and why each is sound.

* Asset events: a task emits its images' events through the ``invokeai_images`` alias to board assets that no DAG
  declares, so Airflow's asset manager creates each asset on the fly and warns "AssetModel ... not found" and
  "Emitting event for inactive AssetModel" (an asset is active once a parsed DAG references it; in a one-run
  embedded home none ever does, and nothing consumes the events there). The events are recorded all the same (the
  run summary lists them), so the embedded run sets that logger to ``error`` through Airflow's own
  ``[logging] namespace_levels``. A deployment's logging is untouched.
* Queues: ``dag.test()`` hands each task to the in-process supervisor with a task instance that only has the
  default queue, so the task's own log line reads ``queue='default'`` while the database row (and the summary)
  says ``gpu``. The task instance given to the supervisor gets the task's queue, as a worker's would.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

__all__ = ["QUIET_LOGGERS", "quiet_asset_warnings", "tasks_run_on_their_queue"]

QUIET_LOGGERS = "airflow.assets.manager=error"
_LEVELS_ENV = "AIRFLOW__LOGGING__NAMESPACE_LEVELS"


def quiet_asset_warnings() -> None:
    """Adds the asset manager's level to ``[logging] namespace_levels`` (before Airflow is imported), keeping any
    levels the user set, and theirs for that logger if they named it."""
    current = os.environ.get(_LEVELS_ENV, "").strip()
    if "airflow.assets" in current:
        return
    os.environ[_LEVELS_ENV] = f"{current} {QUIET_LOGGERS}".strip()


@contextlib.contextmanager
def tasks_run_on_their_queue() -> Iterator[None]:
    """Meanwhile, the in-process supervisor of ``dag.test()`` runs each task instance with its task's queue."""
    try:
        from airflow.sdk.execution_time import supervisor
    except ImportError:  # another Airflow layout: nothing to correct
        yield
        return
    original = getattr(supervisor, "run_task_in_process", None)
    if original is None:
        yield
        return

    def run_task_in_process(ti: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
        queue = getattr(task, "queue", None)
        if queue and hasattr(ti, "model_copy") and getattr(ti, "queue", queue) != queue:
            ti = ti.model_copy(update={"queue": queue})
        return original(ti, task, *args, **kwargs)

    supervisor.run_task_in_process = run_task_in_process
    try:
        yield
    finally:
        supervisor.run_task_in_process = original

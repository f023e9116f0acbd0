"""The Celery configuration of the provider's workers: Airflow's defaults, plus modules a worker imports once,
before it forks its pool.

Airflow forks a new process for every task, and a task process that parses an InvokeAI DAG file imports the
node packs (every node class: about half a second of CPU) before it can run. A worker that imported them
before forking hands them to every task process it forks. Set ``[celery] celery_config_options`` to
``invokeai_provider.cluster.celery_config.CELERY_CONFIG`` (the local cluster and docker-compose.yml do).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

WARM_IMPORTS = "invokeai_provider.execution.warm_imports"

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": [*DEFAULT_CELERY_CONFIG.get("imports", ()), WARM_IMPORTS],
}

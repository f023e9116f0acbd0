"""Imported by a Celery worker before it forks (`invokeai_provider.cluster.celery_config`): what every task
process of the provider needs, so the processes it forks start with it. Nothing here imports torch: a task
that hands its nodes to the GPU runtime never needs it."""

from __future__ import annotations

from invokeai_provider.core.registry import load_node_packs
from invokeai_provider.execution import graph_runs, task_runtime  # noqa: F401 - imported for the forks
from invokeai_provider.execution.runtime import client  # noqa: F401 - imported for the forks

load_node_packs()

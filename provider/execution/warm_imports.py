"""Imported by a Celery worker before it forks (`invokeai_provider.cluster.celery_config`): what every task
process of the provider needs, so the processes it forks start with it. Nothing here imports torch: a task
that hands its nodes to the GPU runtime never needs it."""

from __future__ import annotations

import importlib

from invokeai_provider.core.registry import load_node_packs

TASK_MODULES = ("invokeai_provider.execution.task_runtime", "invokeai_provider.execution.graph_runs",
                "invokeai_provider.execution.runtime.client")

for _module in TASK_MODULES:
    importlib.import_module(_module)
load_node_packs()

"""Airflow DAGs from InvokeAI workflows: every ``workflows/*.json`` next to this file becomes a DAG.

The dag_id is the file name (``workflows/sd15-text-to-image.json`` → ``sd15-text-to-image``); the
workflow's exposed fields are the trigger form. Drop a workflow saved from InvokeAI into the folder and
it appears in Airflow at the next parse. Set ``[invokeai] workflow_granularity = node`` (env
``AIRFLOW__INVOKEAI__WORKFLOW_GRANULARITY=node``) for one task per node instead of one per segment.
"""

from __future__ import annotations

from pathlib import Path

from invokeai_provider.compiler.dag_factory import load_workflow_dags
from invokeai_provider.config import settings

load_workflow_dags(Path(__file__).with_name("workflows"), globals(),
                   granularity=settings().workflow_granularity)

"""The workers' Celery configuration: Airflow's defaults plus the imports every forked task process inherits."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_celery_app_keeps_airflows_defaults_and_imports_the_node_packs_without_torch() -> None:
    script = """
import json, sys
from airflow.providers.celery.executors.celery_executor_utils import app
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
app.loader.import_default_modules()  # what a worker does before it forks its pool
from invokeai_provider.core.registry import BUILTIN_NODE_PACK
builtin = sys.modules.get(BUILTIN_NODE_PACK)
families = [f for f in getattr(builtin, "NODE_FAMILIES", ()) if f"{BUILTIN_NODE_PACK}.{f}" not in sys.modules]
from invokeai_provider.core.registry import InvocationRegistry
print(json.dumps({"packs_loaded": builtin is not None and not families, "imports": list(app.conf.imports), "acks_late": app.conf.task_acks_late,
                  "default_acks_late": DEFAULT_CELERY_CONFIG["task_acks_late"],
                  "denoise": InvocationRegistry.get_invocation_class("denoise_latents").__name__,
                  "torch": "torch" in sys.modules}))
"""
    env = {"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "invokeai_provider.cluster.celery_config.CELERY_CONFIG",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["packs_loaded"]
    assert answer["imports"] == ["invokeai_provider.execution.warm_imports"]
    assert answer["acks_late"] == answer["default_acks_late"]
    assert answer["denoise"] == "DenoiseLatentsInvocation" and answer["torch"] is False

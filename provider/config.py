"""The provider's ``[invokeai]`` configuration section.

Options are read from the environment (``AIRFLOW__INVOKEAI__<OPTION>``, Airflow's own convention) and,
inside a process that already loaded Airflow's configuration, from ``airflow.cfg``. Reading never imports
Airflow itself, so the CLI and the engine stay light.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

SECTION = "invokeai"

# option -> (default, description); also the source of get_provider_info()["config"].
OPTIONS: dict[str, tuple[Optional[str], str]] = {
    "artifact_root": (None, "Where images, tensors and run manifests are written: file:///path (default ./artifacts)."),
    "model_root": (None, "Where model files and their registry records live: file:///path."),
    "model_cache_dir": (None, "Host-local disk cache for model files from a remote model root."),
    "gpu_queue": ("gpu", "Celery queue that GPU nodes are routed to."),
    "default_tenant": ("default", "Tenant used for storage prefixes when a run names none."),
    "ram_cache_gb": ("8", "RAM budget of the in-process model cache, in GiB."),
    "vram_cache_gb": ("0", "VRAM budget of the model cache, in GiB (0: as much as the device allows)."),
    "runtime_socket": (None, "Unix socket of the per-GPU runtime; unset means tasks run in-process."),
}


def get_option(name: str) -> Optional[str]:
    if name not in OPTIONS:
        raise KeyError(f"unknown [invokeai] option {name!r}")
    env = os.environ.get(f"AIRFLOW__{SECTION.upper()}__{name.upper()}")
    if env:
        return env
    configuration = sys.modules.get("airflow.configuration")
    if configuration is not None:
        value = configuration.conf.get(SECTION, name, fallback=None)
        if value:
            return value
    return OPTIONS[name][0]

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
    "artifact_root": (None, "Where images, tensors and run manifests are written: file:///path (default ./artifacts) "
                            "or s3://[CONN_ID@]bucket/prefix."),
    "model_root": (None, "Where model files and their registry records live: file:///path or s3://bucket/prefix."),
    "model_cache_dir": (None, "Host-local disk cache for model files from a remote model root "
                              "(default ~/.cache/invokeai-airflow/models); shared by the workers of a host."),
    "model_cache_gb": ("200", "Byte budget of the model disk cache, in GiB; least recently used models go first."),
    "gpu_queue": ("gpu", "Celery queue that GPU nodes are routed to."),
    "default_tenant": ("default", "Tenant used for storage prefixes when a run names none."),
    "ram_cache_gb": ("8", "RAM budget of the in-process model cache, in GiB."),
    "vram_cache_gb": ("0", "VRAM budget of the model cache, in GiB (0: as much as the device allows)."),
    "task_retries": ("2", "Retries of every compiled workflow task (a DAG's default_args may override it)."),
    "task_retry_delay_seconds": ("10", "Seconds between a failed try of a compiled task and its retry."),
    "runtime_socket": (None, "Unix socket of this worker's GPU runtime (`invokeai-airflow runtime serve`); GPU segments "
                             "run there with warm models. Unset: tasks run their nodes in-process."),
    "runtime_connect_seconds": ("10", "How long a task waits for a configured runtime that does not answer (it may be "
                                      "restarting) before it runs its nodes in-process."),
    "runtime_max_batch": ("4", "Most denoise nodes of one DAG run (same UNet, size and steps) the GPU runtime runs as one "
                               "batch; also how many tasks it admits at a time. 1: one task after the other."),
    "runtime_preload": (None, "Comma-separated model names or keys the runtime loads at start and keeps warm."),
    "s3_conn_id": ("invokeai_s3", "Airflow connection (type invokeai_s3 or aws) holding the key id (login), secret "
                                  "(password) and extras endpoint_url / region_name for s3:// roots that name no "
                                  "connection; when it does not exist boto3's default credential chain (AWS_* "
                                  "environment, config files, instance role) is used."),
    "presign_expiry_seconds": ("604800", "Lifetime of the presigned GET URLs put in image records for s3:// roots, in "
                                         "seconds (at most 604800, the SigV4 maximum of 7 days)."),
    "s3_multipart_threshold_mb": ("64", "Files at least this large (MiB) are uploaded to S3 in parts of this size "
                                        "(at least 5, S3's smallest part)."),
    "s3_retry_seconds": ("120", "How long an S3 operation keeps retrying connection errors, 5xx and SlowDown "
                                "answers (exponential backoff with jitter) before failing, in seconds."),
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

"""The provider's ``[invokeai]`` configuration section: every option, its default and its parsing.

Options are read from the environment (``AIRFLOW__INVOKEAI__<OPTION>``, Airflow's own convention) and,
inside a process that already loaded Airflow's configuration, from ``airflow.cfg``. Reading never imports
Airflow itself, so the CLI and the engine stay light.

Code reads options through `settings()`, whose typed properties hold each option's default (including the
computed ones: ./artifacts, ./invokeai-models, ~/.cache/invokeai-airflow/models) and its parsing; a value
that does not parse raises `ConfigError` naming the option, its environment variable and the value.
``settings()`` reads the configuration afresh on every call, and each property parses its option when it
is read, so a bad value fails only where its option is used. `Settings.raw` gives an option's string.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, TypeVar
from urllib.parse import unquote, urlparse

from invokeai_provider.errors import InvokeAIProviderError

SECTION = "invokeai"
GIB = 1 << 30

# option -> (default, description); also the source of get_provider_info()["config"]. A default of None is
# either "unset" or computed per process (see the Settings property of the option).
OPTIONS: dict[str, tuple[Optional[str], str]] = {
    "artifact_root": (None, "Where images, tensors and image records are written: file:///path (default ./artifacts) "
                            "or s3://[CONN_ID@]bucket/prefix."),
    "model_root": (None, "Where model files and their registry records live: file:///path (default ./invokeai-models) "
                         "or s3://bucket/prefix."),
    "model_cache_dir": (None, "Host-local disk cache for model files from a remote model root "
                              "(default ~/.cache/invokeai-airflow/models); shared by the workers of a host."),
    "model_cache_gb": ("200", "Byte budget of the model disk cache, in GiB; least recently used models go first."),
    "gpu_queue": ("gpu", "Celery queue that GPU nodes are routed to."),
    "default_tenant": ("default", "Tenant used for storage prefixes when a run names none."),
    "ram_cache_gb": ("8", "RAM budget of the in-process model cache, in GiB (0: the default, 8)."),
    "vram_cache_gb": ("0", "VRAM budget of the model cache, in GiB (0: as much as the device allows)."),
    "task_retries": ("2", "Retries of every compiled workflow task (a DAG's default_args may override it)."),
    "task_retry_delay_seconds": ("10", "Seconds between a failed try of a compiled task and its retry."),
    "node_cache_size": ("512", "Node outputs kept per task (InvokeAI's invocation cache): a node whose inputs equal an "
                               "earlier node's in the same task reuses its output (e.g. one prompt encoded once for "
                               "a chunk of sessions). 0 disables it."),
    "runtime_socket": (None, "Unix socket of this worker's GPU runtime (`invokeai-airflow runtime serve`); GPU segments "
                             "run there with warm models. Unset: tasks run their nodes in-process."),
    "runtime_connect_seconds": ("10", "How long a task waits for a configured runtime that does not answer (it may be "
                                      "restarting) before it runs its nodes in-process."),
    "runtime_max_batch": ("4", "Most denoise nodes of one DAG run (same UNet, size and steps) the GPU runtime runs as one "
                               "batch; also how many tasks it admits at a time. 1: one task after the other."),
    "map_chunk_size": ("16", "Items (batch sessions or iteration paths) each mapped task runs in one engine call; their "
                             "denoise nodes share UNet passes. Larger chunks mean fewer Airflow tasks per image; a "
                             "run with more items than [core] max_map_length times this gets larger chunks. "
                             "compile_dag(chunk_size=...) and `compile --chunk-size` override it per workflow."),
    "runtime_preload": (None, "Comma-separated model names or keys the runtime loads at start and keeps warm."),
    "keep_intermediates": ("false", "Also write the tensors and conditioning that nodes pass to each other inside a task "
                                    "to the artifact store (for debugging); by default they stay in memory and only the "
                                    "ones another task or the run's outputs read are stored."),
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
    "task_execution_timeout_seconds": ("3600", "Execution timeout of every compiled task, in seconds (a DAG's default_args "
                                               "may override it; 0: none). A task past it is failed and retried, and its "
                                               "GPU runtime job is canceled."),
    "max_prompt_length": ("10000", "Most characters a prompt given to a text encoder may have; longer ones are refused "
                                   "before any model loads (the trigger form refuses them too)."),
    "max_image_side": ("16384", "Largest width or height, in pixels, that a node may be asked to make."),
    "max_image_pixels": ("67108864", "Largest width x height, in pixels, that a node may be asked to make "
                                     "(default 8192 x 8192)."),
    "runtime_cancel_grace_seconds": ("3", "How long the GPU runtime waits for a canceled job to stop before it gives the "
                                          "device to the next job anyway (a node in a long step without cancel checks)."),
    "library_index_dir": (None, "Folder of the image library's local index (a SQLite cache of the tenants' image records, "
                                "rebuilt from the artifact store when missing); default ~/.cache/invokeai-airflow/library."),
    "tenant_access": ('{"role:admin": ["*"]}', "Which tenants' images each Airflow user sees in the gallery and its HTTP "
                                              "API: a JSON object from a user name, or role:<role>, to a list of "
                                              "tenants (\"*\": all). A user matching no key sees none."),
    "t5_encoder_device": ("auto", "Where FLUX's T5 encoder runs: auto (the execution device, as the transformer) or "
                                  "cpu (kept in RAM and run there, leaving the GPU's memory to the transformer; "
                                  "slower prompts)."),
    "workflow_granularity": ("segment", "Tasks of the DAGs that dags/invokeai_workflows.py compiles from saved "
                                        "workflows: segment (connected nodes of one scope share a task) or node "
                                        "(one task per node)."),
}

_N = TypeVar("_N", int, float)
_BOOLEANS = {"true": True, "t": True, "1": True, "yes": True, "on": True,
             "false": False, "f": False, "0": False, "no": False, "off": False}


class ConfigError(InvokeAIProviderError, ValueError):
    """An ``[invokeai]`` option whose value cannot be used; the message names the option, its environment
    variable and the value."""


def env_var(name: str) -> str:
    """The environment variable of an option: ``AIRFLOW__INVOKEAI__<OPTION>``."""
    return f"AIRFLOW__{SECTION.upper()}__{name.upper()}"


def _check_name(name: str) -> None:
    if name not in OPTIONS:
        raise KeyError(f"unknown [invokeai] option {name!r}")


def _configured(name: str) -> Optional[str]:
    """The option's value from the environment, else from airflow.cfg (only when Airflow's configuration is
    already loaded); None when it is unset or empty."""
    env = os.environ.get(env_var(name))
    if env:
        return env
    configuration = sys.modules.get("airflow.configuration")
    if configuration is not None:
        value = configuration.conf.get(SECTION, name, fallback=None)
        if value:
            return value
    return None


def _invalid(name: str, value: object, expected: str) -> ConfigError:
    return ConfigError(f"[invokeai] {name}: expected {expected}, got {value!r} ({env_var(name)})")


@dataclass(frozen=True)
class Settings:
    """The ``[invokeai]`` section, one typed property per option (see OPTIONS for what each means).

    ``configured`` holds the options that are set (option -> raw string); every other option has its
    default. A property parses its option when read and raises `ConfigError` when it does not parse.
    """

    configured: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.configured:
            _check_name(name)

    def raw(self, name: str) -> Optional[str]:
        """An option's raw string: its configured value, else its OPTIONS default (None for the computed ones)."""
        _check_name(name)
        value = self.configured.get(name)
        return value if value else OPTIONS[name][0]

    # --- parsing ------------------------------------------------------------------------------------

    def _number(self, name: str, kind: Callable[[str], _N], expected: str, minimum: Optional[_N] = None) -> _N:
        value = self.raw(name)
        try:
            number = kind(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _invalid(name, value, expected) from None
        if minimum is not None and number < minimum:
            raise _invalid(name, value, expected)
        return number

    def _int(self, name: str, minimum: Optional[int] = None) -> int:
        expected = "a whole number" + (f" of at least {minimum}" if minimum is not None else "")
        return self._number(name, int, expected, minimum)

    def _float(self, name: str, unit: str = "") -> float:
        return self._number(name, float, f"a number{' of ' + unit if unit else ''}")

    def _text(self, name: str) -> str:
        """An option that always has a value (its default is a string)."""
        value = self.raw(name)
        if value is None:
            raise KeyError(f"[invokeai] {name} has no default")
        return value

    def _list(self, name: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in (self.raw(name) or "").split(",") if item.strip())

    def _bool(self, name: str) -> bool:
        """true/false (also 1/0, yes/no, on/off, t/f), in any case."""
        value = self.raw(name)
        answer = _BOOLEANS.get((value or "").strip().lower())
        if answer is None:
            raise _invalid(name, value, "true or false")
        return answer

    # --- storage ------------------------------------------------------------------------------------

    @property
    def configured_artifact_root(self) -> Optional[str]:
        """``artifact_root`` as set, None when unset (hand None to another process: it resolves its own default)."""
        return self.raw("artifact_root")

    @property
    def artifact_root(self) -> str:
        """``artifact_root``, else ./artifacts of this process's working directory, as a file URI."""
        return self.configured_artifact_root or Path("artifacts").resolve().as_uri()

    @property
    def default_tenant(self) -> str:
        return self._text("default_tenant")

    @property
    def s3_conn_id(self) -> str:
        return self._text("s3_conn_id")

    @property
    def presign_expiry_seconds(self) -> int:
        return self._int("presign_expiry_seconds")

    @property
    def s3_multipart_threshold_mb(self) -> int:
        return self._int("s3_multipart_threshold_mb")

    @property
    def s3_retry_seconds(self) -> float:
        return self._float("s3_retry_seconds", "seconds")

    @property
    def keep_intermediates(self) -> bool:
        """Whether the tensors and conditioning passed between nodes inside a task are stored too (debugging)."""
        return self._bool("keep_intermediates")

    # --- models -------------------------------------------------------------------------------------

    @property
    def t5_encoder_device(self) -> str:
        """``auto`` or ``cpu``."""
        value = self._text("t5_encoder_device").strip().lower()
        if value not in ("auto", "cpu"):
            raise _invalid("t5_encoder_device", value, "auto or cpu")
        return value

    @property
    def configured_model_root(self) -> Optional[str]:
        """``model_root`` as set, None when unset (hand None to another process: it resolves its own default)."""
        return self.raw("model_root")

    @property
    def model_root(self) -> str:
        """``model_root``, else ./invokeai-models of this process's working directory, as a file URI."""
        return self.configured_model_root or Path("invokeai-models").resolve().as_uri()

    def _cache_folder(self, name: str, default: str) -> Path:
        """A folder option (a path or a file:// URI; ``~`` expanded), else ~/.cache/invokeai-airflow/<default>."""
        value = self.raw(name)
        if not value:
            return Path.home() / ".cache" / "invokeai-airflow" / default
        parsed = urlparse(value)
        return Path(unquote(parsed.path) if parsed.scheme == "file" else value).expanduser()

    @property
    def library_index_dir(self) -> Path:
        return self._cache_folder("library_index_dir", "library")

    @property
    def model_cache_dir(self) -> Path:
        return self._cache_folder("model_cache_dir", "models")

    @property
    def model_cache_gb(self) -> float:
        return self._float("model_cache_gb", "GiB")

    @property
    def ram_cache_gb(self) -> float:
        return self._float("ram_cache_gb", "GiB")

    @property
    def vram_cache_gb(self) -> float:
        return self._float("vram_cache_gb", "GiB")

    def cache_bytes(self, name: str, override_gb: Optional[float] = None) -> int:
        """The byte budget of a GiB option (``model_cache_gb``, ``ram_cache_gb``, ``vram_cache_gb``):
        ``override_gb`` (a command-line flag) when given, else the option. A RAM budget of 0 is the default."""
        if name not in ("model_cache_gb", "ram_cache_gb", "vram_cache_gb"):
            raise KeyError(f"[invokeai] {name} is not a GiB budget")
        gib = override_gb if override_gb is not None else self._float(name, "GiB")
        size = int(gib * GIB)
        if size == 0 and name == "ram_cache_gb":
            size = int(float(OPTIONS[name][0] or 0) * GIB)
        return size

    @property
    def model_cache_bytes(self) -> int:
        return self.cache_bytes("model_cache_gb")

    @property
    def ram_cache_bytes(self) -> int:
        return self.cache_bytes("ram_cache_gb")

    @property
    def vram_cache_bytes(self) -> int:
        return self.cache_bytes("vram_cache_gb")

    # --- compiled DAGs and their tasks -------------------------------------------------------------

    @property
    def gpu_queue(self) -> str:
        return self._text("gpu_queue")

    @property
    def task_retries(self) -> int:
        return self._int("task_retries")

    @property
    def task_retry_delay_seconds(self) -> float:
        return self._float("task_retry_delay_seconds", "seconds")

    @property
    def node_cache_size(self) -> int:
        return self._int("node_cache_size", minimum=0)

    @property
    def workflow_granularity(self) -> str:
        return self._text("workflow_granularity")

    @property
    def task_execution_timeout_seconds(self) -> float:
        """0 means no timeout."""
        return self._number("task_execution_timeout_seconds", float, "a number of seconds (0: none)", 0.0)

    # --- limits on what a run may ask for (see invokeai_provider.core.limits) -------------------------

    @property
    def max_prompt_length(self) -> int:
        return self._int("max_prompt_length", minimum=1)

    @property
    def max_image_side(self) -> int:
        return self._int("max_image_side", minimum=8)

    @property
    def max_image_pixels(self) -> int:
        return self._int("max_image_pixels", minimum=64)

    # --- the GPU runtime ----------------------------------------------------------------------------

    @property
    def runtime_socket(self) -> Optional[str]:
        """``runtime_socket``; None: tasks run their nodes in-process."""
        return self.raw("runtime_socket")

    @property
    def runtime_connect_seconds(self) -> float:
        return self._float("runtime_connect_seconds", "seconds")

    @property
    def runtime_max_batch(self) -> int:
        return self._int("runtime_max_batch", minimum=1)

    @property
    def map_chunk_size(self) -> int:
        return self._int("map_chunk_size", minimum=1)

    @property
    def runtime_cancel_grace_seconds(self) -> float:
        return self._number("runtime_cancel_grace_seconds", float, "a number of seconds", 0.0)

    @property
    def tenant_access(self) -> dict[str, tuple[str, ...]]:
        """``tenant_access``: user name or ``role:<role>`` -> the tenants (or ``*``) they may see."""
        import json

        value = self.raw("tenant_access")
        expected = 'a JSON object of lists of tenants, e.g. {"role:admin": ["*"], "alice": ["acme"]}'
        try:
            parsed = json.loads(value or "{}")
        except json.JSONDecodeError:
            raise _invalid("tenant_access", value, expected) from None
        if not isinstance(parsed, dict) or not all(
                isinstance(v, list) and all(isinstance(t, str) for t in v) for v in parsed.values()):
            raise _invalid("tenant_access", value, expected)
        return {str(k): tuple(v) for k, v in parsed.items()}

    @property
    def runtime_preload(self) -> tuple[str, ...]:
        """``runtime_preload`` split at commas, blanks dropped."""
        return self._list("runtime_preload")


def settings(*only: str) -> Settings:
    """The ``[invokeai]`` section as it is configured now (read afresh on every call). ``only`` names the options
    a hot path needs (a node field's limit, checked on every validation): just those are read, the others keep
    their defaults."""
    for name in only:
        _check_name(name)
    return Settings({name: value for name in (only or OPTIONS) if (value := _configured(name)) is not None})


def airflow_max_map_length() -> int:
    """Airflow's ``[core] max_map_length`` (default 1024): the most mapped instances one task may have."""
    value = os.environ.get("AIRFLOW__CORE__MAX_MAP_LENGTH")
    configuration = sys.modules.get("airflow.configuration")
    if not value and configuration is not None:
        value = configuration.conf.get("core", "max_map_length", fallback=None)
    try:
        return max(int(value), 1) if value else 1024
    except ValueError:
        raise ConfigError(f"[core] max_map_length: expected a whole number, got {value!r}") from None


__all__ = ["OPTIONS", "SECTION", "ConfigError", "Settings", "airflow_max_map_length", "env_var", "settings"]

"""The ``[invokeai]`` section: one typed accessor per option, its default and its parsing in one place."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Optional

import pytest

from invokeai_provider import config
from invokeai_provider.config import OPTIONS, ConfigError, Settings, env_var, settings
from invokeai_provider.errors import InvokeAIProviderError

GIB = 1 << 30


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No option set: no AIRFLOW__INVOKEAI__* variable, no airflow.cfg; cwd and home in a temporary folder."""
    for name in OPTIONS:
        monkeypatch.delenv(env_var(name), raising=False)
    monkeypatch.delitem(sys.modules, "airflow.configuration", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_every_option_has_a_typed_accessor() -> None:
    for name in OPTIONS:
        accessor = inspect.getattr_static(Settings, name, None)
        assert isinstance(accessor, property), f"Settings has no property for [invokeai] {name}"
        returns = typing.get_type_hints(accessor.fget, vars(config))["return"]
        assert returns is not Any, name
        getattr(Settings(), name)  # each default parses


def test_defaults_when_nothing_is_set(unset: Path) -> None:
    s = settings()
    assert s.configured == {}
    assert s.runtime_max_batch == 4
    assert s.gpu_queue == "gpu"
    assert s.default_tenant == "default"
    assert s.artifact_root == (unset / "artifacts").as_uri()
    assert s.model_root == (unset / "invokeai-models").as_uri()
    assert s.configured_artifact_root is None and s.configured_model_root is None
    assert s.model_cache_dir == unset / "home" / ".cache" / "invokeai-airflow" / "models"
    assert (s.model_cache_gb, s.model_cache_bytes) == (200.0, 200 * GIB)
    assert (s.ram_cache_gb, s.ram_cache_bytes) == (8.0, 8 * GIB)
    assert (s.vram_cache_gb, s.vram_cache_bytes) == (0.0, 0)
    assert (s.task_retries, s.task_retry_delay_seconds) == (2, 10.0)
    assert (s.runtime_socket, s.runtime_connect_seconds, s.runtime_preload) == (None, 10.0, ())
    assert s.s3_conn_id == "invokeai_s3"
    assert (s.presign_expiry_seconds, s.s3_multipart_threshold_mb, s.s3_retry_seconds) == (604800, 64, 120.0)
    assert s.workflow_granularity == "segment"
    assert s == Settings()  # settings() with nothing set is the defaults


def test_the_typed_defaults_are_the_declared_ones(unset: Path) -> None:
    """The raw options and get_provider_info()["config"] show the same defaults the accessors use."""
    from invokeai_provider.get_provider_info import get_provider_info

    options = get_provider_info()["config"]["invokeai"]["options"]
    assert set(options) == set(OPTIONS)
    s = Settings()
    for name, (default, description) in OPTIONS.items():
        assert s.raw(name) == default == options[name]["default"]
        value = getattr(s, name)
        if default is None:  # unset, or computed per process: the description says which
            assert value in (None, ()) or "default" in description, name
        elif isinstance(value, bool):
            assert value is (default == "true"), name
        elif isinstance(value, (int, float)):
            assert value == float(default), name
        elif isinstance(value, dict):  # a JSON option
            assert value == {k: tuple(v) for k, v in json.loads(default).items()}, name
        else:
            assert value == default, name
    with pytest.raises(KeyError):
        s.raw("no_such_option")


def test_an_environment_override_is_parsed_and_read_afresh(unset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = settings()
    monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_MAX_BATCH", "2")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__TASK_RETRY_DELAY_SECONDS", "2.5")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_PRELOAD", " tiny-sd1, ,vae-1 ")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__MODEL_CACHE_DIR", "file:///srv/model%20cache")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__RAM_CACHE_GB", "0.5")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__VRAM_CACHE_GB", "4")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__MODEL_ROOT", "s3://models/root")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__GPU_QUEUE", "gpu-a100")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__DEFAULT_TENANT", "")  # empty: the default
    s = settings()
    assert before.runtime_max_batch == 4  # a Settings is a snapshot; settings() reads again
    assert s.runtime_max_batch == 2 and s.task_retry_delay_seconds == 2.5
    assert s.runtime_preload == ("tiny-sd1", "vae-1")
    assert s.model_cache_dir == Path("/srv/model cache")
    assert (s.ram_cache_bytes, s.vram_cache_bytes) == (GIB // 2, 4 * GIB)
    assert s.model_root == s.configured_model_root == "s3://models/root"
    assert s.gpu_queue == "gpu-a100" and s.default_tenant == "default"
    assert s.raw("runtime_max_batch") == "2"

    monkeypatch.setenv("AIRFLOW__INVOKEAI__MODEL_CACHE_DIR", "~/models")
    assert settings().model_cache_dir == unset / "home" / "models"


def test_cache_budgets_take_an_override_and_a_zero_ram_budget_is_the_default(unset: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings()
    assert s.cache_bytes("vram_cache_gb", 2) == 2 * GIB
    assert s.cache_bytes("ram_cache_gb", 0) == 8 * GIB
    monkeypatch.setenv("AIRFLOW__INVOKEAI__RAM_CACHE_GB", "0")
    assert settings().ram_cache_bytes == 8 * GIB
    with pytest.raises(KeyError):
        s.cache_bytes("gpu_queue")


def test_airflow_cfg_is_read_once_airflow_is_loaded_and_the_environment_wins(unset: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"gpu_queue": "cuda", "task_retries": "5"}

    class Conf:
        @staticmethod
        def get(section: str, name: str, fallback: Optional[str] = None) -> Optional[str]:
            assert section == "invokeai"
            return cfg.get(name, fallback)

    monkeypatch.setitem(sys.modules, "airflow.configuration", types.SimpleNamespace(conf=Conf))
    monkeypatch.setenv("AIRFLOW__INVOKEAI__TASK_RETRIES", "1")
    s = settings()
    assert (s.gpu_queue, s.task_retries, s.runtime_max_batch) == ("cuda", 1, 4)


@pytest.mark.parametrize("option, value, expected", [
    ("runtime_max_batch", "four", "a whole number of at least 1"),
    ("runtime_max_batch", "0", "a whole number of at least 1"),
    ("task_retries", "2.5", "a whole number"),
    ("presign_expiry_seconds", "soon", "a whole number"),
    ("s3_retry_seconds", "long", "a number of seconds"),
    ("model_cache_gb", "lots", "a number of GiB"),
    ("ram_cache_gb", "8G", "a number of GiB"),
    ("keep_intermediates", "sometimes", "true or false"),
])
def test_a_bad_value_names_the_option_its_variable_and_the_value(unset: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 option: str, value: str, expected: str) -> None:
    monkeypatch.setenv(env_var(option), value)
    s = settings()  # reading the section does not parse it: other options stay usable
    assert s.gpu_queue == "gpu"
    with pytest.raises(ConfigError) as caught:
        getattr(s, option)
    message = str(caught.value)
    assert f"[invokeai] {option}: expected {expected}, got {value!r}" in message
    assert f"AIRFLOW__INVOKEAI__{option.upper()}" in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, InvokeAIProviderError)


def test_the_call_sites_use_the_typed_settings(unset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invokeai_provider.execution.runtime.batching import RuntimeConfigError, configured_max_batch
    from invokeai_provider.execution.tenants import resolve_tenant
    from invokeai_provider.models.model_manager.manager import cache_budget_bytes
    from invokeai_provider.models.model_manager.registry import (default_model_cache_bytes, default_model_cache_dir,
                                                                 default_model_root)
    from invokeai_provider.storage.base import default_artifact_root

    assert configured_max_batch() == 4
    assert default_artifact_root() == (unset / "artifacts").as_uri()
    assert default_model_root() == (unset / "invokeai-models").as_uri()
    assert default_model_cache_dir() == unset / "home" / ".cache" / "invokeai-airflow" / "models"
    assert default_model_cache_bytes() == 200 * GIB
    assert cache_budget_bytes("ram_cache_gb") == 8 * GIB and cache_budget_bytes("vram_cache_gb", 1) == GIB
    assert resolve_tenant(None, None, None) == "default"
    monkeypatch.setenv("AIRFLOW__INVOKEAI__DEFAULT_TENANT", "acme")
    assert resolve_tenant(None, None, None) == "acme"
    monkeypatch.setenv("AIRFLOW__INVOKEAI__RUNTIME_MAX_BATCH", "many")
    with pytest.raises(RuntimeConfigError, match="runtime_max_batch: expected a whole number of at least 1, "
                                                 "got 'many' .AIRFLOW__INVOKEAI__RUNTIME_MAX_BATCH."):
        configured_max_batch()


def test_the_config_module_stays_light() -> None:
    code = ("import sys, invokeai_provider.config as c\n"
            "c.settings().model_cache_dir\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'torch', 'numpy', 'pydantic')"
            " or (m.startswith('invokeai_provider.') and m not in ('invokeai_provider.config', "
            "'invokeai_provider.errors'))))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_settings_can_read_just_the_options_a_hot_path_needs(monkeypatch):
    from invokeai_provider.config import settings

    monkeypatch.setenv("AIRFLOW__INVOKEAI__MAX_PROMPT_LENGTH", "77")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__TASK_RETRIES", "9")
    only = settings("max_prompt_length")
    assert only.max_prompt_length == 77 and only.task_retries == 2  # the option not asked for keeps its default
    assert settings().task_retries == 9
    with pytest.raises(KeyError, match="unknown"):
        settings("max_prompt_lenght")


@pytest.mark.parametrize("value, expected", [("true", True), ("TRUE", True), (" 1 ", True), ("yes", True),
                                             ("on", True), ("false", False), ("False", False), ("0", False),
                                             ("no", False), ("off", False)])
def test_keep_intermediates_is_a_boolean(unset: Path, monkeypatch: pytest.MonkeyPatch, value: str,
                                         expected: bool) -> None:
    assert settings().keep_intermediates is False
    monkeypatch.setenv("AIRFLOW__INVOKEAI__KEEP_INTERMEDIATES", value)
    assert settings().keep_intermediates is expected

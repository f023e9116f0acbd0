"""Every compiled task gets retries and an execution timeout from [invokeai]; 0 turns the timeout off."""

from __future__ import annotations

from datetime import timedelta

import pytest

from invokeai_provider.compiler.dags import default_task_args


def test_compiled_tasks_get_the_configured_execution_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_task_args()["execution_timeout"] == timedelta(hours=1)  # the documented default
    monkeypatch.setenv("AIRFLOW__INVOKEAI__TASK_EXECUTION_TIMEOUT_SECONDS", "90")
    assert default_task_args()["execution_timeout"] == timedelta(seconds=90)
    monkeypatch.setenv("AIRFLOW__INVOKEAI__TASK_EXECUTION_TIMEOUT_SECONDS", "0")
    assert "execution_timeout" not in default_task_args()


def test_a_bad_timeout_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from invokeai_provider.config import ConfigError

    monkeypatch.setenv("AIRFLOW__INVOKEAI__TASK_EXECUTION_TIMEOUT_SECONDS", "soon")
    with pytest.raises(ConfigError, match="task_execution_timeout_seconds: expected a number of seconds"):
        default_task_args()


def test_a_compiled_dag_carries_the_timeout_on_its_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import sd1_graph
    from invokeai_provider.compiler.dags import compile_dag

    monkeypatch.setenv("AIRFLOW__INVOKEAI__TASK_EXECUTION_TIMEOUT_SECONDS", "600")
    model = {"key": "tiny-sd1", "hash": "", "name": "tiny-sd1", "base": "sd-1", "type": "main"}
    dag = compile_dag(sd1_graph(model), dag_id="timeout_check", model_names=None)
    assert {task.execution_timeout for task in dag.tasks} == {timedelta(seconds=600)}

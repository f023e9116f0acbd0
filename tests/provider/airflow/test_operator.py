"""Operators made from node classes: names, keyword inputs, templating, queues, docstrings."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_every_node_type_has_an_operator_named_after_its_class() -> None:
    import invokeai_provider.operators as operators
    from invokeai_provider.airflow.operator import operator_classes
    from invokeai_provider.core.registry import InvocationRegistry

    classes = operator_classes()
    assert len(classes) == len(InvocationRegistry.invocation_classes())
    for name in ("DenoiseLatentsOperator", "CompelOperator", "MainModelLoaderOperator", "CollectOperator"):
        assert getattr(operators, name) is classes[name]
    assert {c.node_class.get_type() for c in classes.values()} == set(InvocationRegistry.invocation_classes())
    with pytest.raises(AttributeError):
        operators.NoSuchNodeOperator  # noqa: B018


def test_inputs_are_templated_keyword_arguments_and_gpu_nodes_default_to_the_gpu_queue(monkeypatch) -> None:
    from airflow.sdk import DAG

    from invokeai_provider.operators import DenoiseLatentsOperator, MainModelLoaderOperator, MetadataToStringOperator

    monkeypatch.setenv("AIRFLOW__INVOKEAI__GPU_QUEUE", "gpu-a100")
    with DAG("operator_test", schedule=None):
        loader = MainModelLoaderOperator(task_id="loader", model={"name": "{{ params.model }}"})
        denoise = DenoiseLatentsOperator(task_id="denoise", steps="{{ params.steps }}", unet=loader.output["unet"])
        label = MetadataToStringOperator(task_id="label", label="custom", default_value="x")
    assert denoise.queue == "gpu-a100" and loader.queue == "default"
    from invokeai_provider.operators import LatentsToImageOperator

    with DAG("operator_test_3", schedule=None):
        decode = LatentsToImageOperator(task_id="decode")
    assert [o.name for o in decode.outlets] == ["invokeai_images"] and denoise.outlets == []
    assert "steps" in DenoiseLatentsOperator.template_fields and "unet" in DenoiseLatentsOperator.template_fields
    assert denoise.steps == "{{ params.steps }}"
    assert loader in denoise.upstream_list  # the XComArg made the dependency
    assert label.node_inputs() == {"default_value": "x", "label": "custom"}  # 'label' is stored apart from
    assert label.label == "label"  # BaseOperator's own label property
    with pytest.raises(Exception, match="'id' is set from the task id"):
        with DAG("operator_test_2", schedule=None):
            MainModelLoaderOperator(task_id="x", id="y")


def test_docstrings_come_from_the_node_description_and_fields() -> None:
    from invokeai_provider.operators import DenoiseLatentsOperator

    doc = DenoiseLatentsOperator.__doc__
    assert doc.startswith("InvokeAI node ``denoise_latents``") and "GPU queue" in doc
    assert ":param steps: Number of steps to run" in doc
    assert "``latents``" in doc  # the output fields


def test_importing_the_operators_imports_no_torch() -> None:
    code = ("import sys; import invokeai_provider.operators as o; o.DenoiseLatentsOperator; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

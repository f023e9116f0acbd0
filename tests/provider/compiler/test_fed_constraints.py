"""A Param set on a primitive takes the constraints of the fields the primitive feeds (prompt length, image
size, multipleOf), for single values and batch items, so the trigger refuses what the nodes would refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from invokeai_provider.compiler.param_check import schema_problem
from invokeai_provider.compiler.params import airflow_params, param_specs
from invokeai_provider.errors import BatchItemsTypeError
from invokeai_provider.graph.workflow import load_document


def _batch_doc(width_items: list[Any], prompt_items: list[Any]) -> dict[str, Any]:
    """An InvokeAI batch: integer and string primitives feed noise.width/height and compel.prompt (a chain of two
    string primitives), with batch data on the primitives."""
    nodes = {
        "width": {"type": "integer", "value": 64},
        "prompt": {"type": "string", "value": "a cat"},
        "relay": {"type": "string"},
        "noise": {"type": "noise", "seed": 1, "height": 64},
        "pos": {"type": "compel"},
    }
    edges = [("width", "value", "noise", "width"), ("prompt", "value", "relay", "value"),
             ("relay", "value", "pos", "prompt")]
    graph = {"id": "g", "nodes": {k: {"id": k, **v} for k, v in nodes.items()},
             "edges": [{"source": {"node_id": a, "field": b}, "destination": {"node_id": c, "field": d}}
                       for a, b, c, d in edges]}
    data = [[{"node_path": "width", "field_name": "value", "items": width_items}],
            [{"node_path": "prompt", "field_name": "value", "items": prompt_items}]]
    return {"batch": {"graph": graph, "data": data, "runs": 1}}


def _specs(doc: dict[str, Any]) -> dict[str, Any]:
    return {s.name: s for s in param_specs(load_document(json.dumps(doc)))}


def test_batch_items_take_the_constraints_of_the_fields_they_reach() -> None:
    specs = _specs(_batch_doc([64, 72], ["a cat", "a dog"]))
    width = specs["integer_value_batch"].schema["items"]
    assert (width["multipleOf"], width["exclusiveMinimum"], width["maximum"]) == (8, 0, 16384)
    prompt = specs["string_value_batch"].schema["items"]
    assert prompt["maxLength"] == 10000  # through the relay primitive to compel.prompt
    assert schema_problem(specs["integer_value_batch"].schema, [64, 100]) == "item [1]: not a multiple of 8"
    assert schema_problem(specs["integer_value_batch"].schema, [100_000]) == "item [0]: above the maximum 16384"


def test_the_trigger_refuses_a_batch_width_of_100_and_an_over_long_prompt() -> None:
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamValidationError

    params = airflow_params(list(_specs(_batch_doc([64], ["a cat"])).values()))
    widths: Param = params["integer_value_batch"]
    assert widths.resolve([64, 128]) == [64, 128]
    with pytest.raises(ParamValidationError, match="100 is not a multiple of 8"):
        widths.resolve([64, 100])
    with pytest.raises(ParamValidationError, match="is too long"):
        params["string_value_batch"].resolve(["x" * 10_001])


def test_a_batch_document_whose_own_items_break_the_limits_does_not_compile() -> None:
    with pytest.raises(BatchItemsTypeError) as caught:
        _specs(_batch_doc([64, 100], ["a cat"]))
    assert str(caught.value) == "batch data for width.value: item 100: not a multiple of 8"
    assert (caught.value.node_id, caught.value.field) == ("width", "value")


def test_limits_in_params_follow_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__INVOKEAI__MAX_PROMPT_LENGTH", "500")
    monkeypatch.setenv("AIRFLOW__INVOKEAI__MAX_IMAGE_SIDE", "1024")
    specs = _specs(_batch_doc([64], ["a cat"]))
    assert specs["string_value_batch"].schema["items"]["maxLength"] == 500
    assert specs["integer_value_batch"].schema["items"]["maximum"] == 1024


def test_tighter_form_bounds_stay_and_looser_field_bounds_do_not_widen_them() -> None:
    from invokeai_provider.compiler.param_schema import apply_constraints
    from invokeai_provider.core.registry import InvocationRegistry

    schema = {"type": "integer", "minimum": 64, "maximum": 2048, "multipleOf": 16}
    info = InvocationRegistry.get_invocation_class("noise").input_fields()["width"]
    apply_constraints(schema, info, None, "noise", "width")
    assert schema == {"type": "integer", "minimum": 64, "maximum": 2048, "multipleOf": 16}

"""Unknown keys in a run's conf are refused, naming them, the closest Param and the accepted ones."""

from __future__ import annotations

import pytest

from invokeai_provider.compiler.run_conf import check_run_conf
from invokeai_provider.errors import RunConfError, is_input_error

PARAMS = ["model", "noise_height", "noise_width", "positive_prompt", "seed", "tenant"]


def test_known_keys_pass() -> None:
    check_run_conf({"noise_width": 64, "tenant": "acme"}, PARAMS)
    check_run_conf(None, PARAMS)
    check_run_conf({}, [])


def test_unknown_keys_are_listed_with_the_closest_param_and_the_accepted_ones() -> None:
    with pytest.raises(RunConfError) as caught:
        check_run_conf({"frobnicate": 1, "width": 64, "seed": 3}, PARAMS)
    assert str(caught.value) == ("run conf: unknown keys 'frobnicate', 'width' (did you mean 'noise_width'?); this "
                                 "DAG's Params are: model, noise_height, noise_width, positive_prompt, seed, tenant")
    assert is_input_error(caught.value)  # the task fails for good: a retry gets the same conf

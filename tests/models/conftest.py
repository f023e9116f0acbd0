"""Fixtures for the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _models_run_on_one_torch_thread(one_torch_thread: None) -> None:
    """Every model test module runs with one torch thread (see ``one_torch_thread``)."""

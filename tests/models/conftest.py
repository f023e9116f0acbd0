"""Fixtures for the model tests."""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core box OpenMP spinning makes tiny inferences crawl."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

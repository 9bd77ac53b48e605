"""The kernels under test, each skipping its tests where it cannot be built (no C compiler)."""

from __future__ import annotations

from typing import TypeVar

import pytest

from rainier.kernels.adamw import AdamWKernel
from rainier.kernels.layer_ops import LayerOps
from rainier.kernels.linear import LinearKernel
from rainier.kernels.paged_attention import PagedAttention

T = TypeVar("T")


def _built(found: T | None) -> T:
    if found is None:
        pytest.skip("no C compiler here: the PyTorch path is what runs")
    return found


@pytest.fixture(scope="session")
def kernel() -> PagedAttention:
    return _built(PagedAttention.load())


@pytest.fixture(scope="session")
def ops() -> LayerOps:
    return _built(LayerOps.load())


@pytest.fixture(scope="session")
def linear() -> LinearKernel:
    return _built(LinearKernel.load())


@pytest.fixture(scope="session")
def adamw() -> AdamWKernel:
    return _built(AdamWKernel.load())

"""Each test of the loop starts and ends with dynamo's caches and counters empty: compiled tests
count graphs and captures, and a cached graph from another test would hide a recompile."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()

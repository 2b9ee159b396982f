"""One intra-op thread for this area's tests: the tiny models here are dominated by thread
start-up and contention (a tiny UNet call drops from ~1 s to ~20 ms on a loaded 2-core box)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

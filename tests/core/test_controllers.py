"""Step-size controllers: the tensor rule (per-sample steps) is the float rule (shared steps)."""

import math

import pytest
import torch

from timestepper.core.controllers import PIDController

NORMS = [0.0, 1e-12, 0.3, 1.0, 1.0 + 1e-9, 1.7, 40.0, 1e6, math.inf, math.nan]


@pytest.mark.parametrize("gains", [(0.0, 1.0, 0.0), (0.4, 0.3, 0.0), (0.4, 0.3, 0.1)])
def test_tensor_propose_matches_float_propose(gains):
    p, i, d = gains
    ctrl = PIDController(1e-6, 1e-9, pcoeff=p, icoeff=i, dcoeff=d, factor_min_accept=0.5)
    norms = torch.tensor(NORMS, dtype=torch.float64)
    dt = torch.linspace(0.01, 0.1, len(NORMS), dtype=torch.float64)
    tstate = ctrl.init_state()
    fstates = [ctrl.init_state() for _ in NORMS]
    for step in range(3):  # the PID history advances only where accepted
        norms_k = norms.roll(step)
        accept, dt_next, tstate = ctrl.propose(norms_k, dt, tstate, 5)
        for j, nv in enumerate(norms_k.tolist()):
            acc, dtn, fstates[j] = ctrl.propose_float(nv, float(dt[j]), fstates[j], 5)
            assert bool(accept[j]) == acc
            # The bounds are exact (factor_min, safety, factor_min_accept, factor_max), not
            # rounded to float32; elsewhere pow may differ in the last bit.
            assert math.isclose(float(dt_next[j]), dtn, rel_tol=1e-14), (step, nv)
    big = ctrl.propose(torch.tensor([1e6, 1e-14], dtype=torch.float64),
                       torch.ones(2, dtype=torch.float64), ctrl.init_state(), 5)[1]
    assert big.tolist() == [0.2, 10.0]

"""Step-size controllers: the tensor rule (per-sample steps) is the float rule (shared steps);
a fixed grid is a controller that accepts every step."""

import math

import pytest
import torch

from timestepper.core.controllers import FixedGrid, PIDController, PIDState

NORMS = [0.0, 1e-12, 0.3, 1.0, 1.0 + 1e-9, 1.7, 40.0, 1e6, math.inf, math.nan]


@pytest.mark.parametrize("gains", [(0.0, 1.0, 0.0), (0.4, 0.3, 0.0), (0.4, 0.3, 0.1)])
def test_tensor_rule_matches_float_rule(gains):
    p, i, d = gains
    ctrl = PIDController(1e-6, 1e-9, pcoeff=p, icoeff=i, dcoeff=d, factor_min_accept=0.5)
    norms = torch.tensor(NORMS, dtype=torch.float64)
    dt = torch.linspace(0.01, 0.1, len(NORMS), dtype=torch.float64)
    t1 = torch.ones(len(NORMS), dtype=torch.float64)
    tstate = PIDState(dt, error_order=5)
    fstates = [PIDState(float(v), error_order=5) for v in dt]
    for step in range(3):  # the PID history advances only where accepted
        norms_k = norms.roll(step)
        accept, tstate, _ = ctrl._adapt_tensor(norms_k, dt, tstate, t1)
        for j, nv in enumerate(norms_k.tolist()):
            acc, fstates[j], _ = ctrl._adapt_float(nv, float(dt[j]), fstates[j], 1.0)
            assert bool(accept[j]) == acc
            # The bounds are exact (factor_min, safety, factor_min_accept, factor_max), not
            # rounded to float32; elsewhere pow may differ in the last bit.
            assert math.isclose(float(tstate.dt[j]), fstates[j].dt, rel_tol=1e-14), (step, nv)
    big = ctrl._adapt_tensor(torch.tensor([1e6, 1e-14], dtype=torch.float64),
                             torch.ones(2, dtype=torch.float64), PIDState(None, error_order=5),
                             torch.ones(2, dtype=torch.float64))[1]
    assert big.dt.tolist() == [0.2, 10.0]


def test_backward_steps_keep_their_sign():
    ctrl = PIDController(1e-6, 1e-9)
    accept, cs, under = ctrl._adapt_float(0.5, -0.1, PIDState(-0.1, error_order=5), 0.0)
    assert accept and cs.dt < -0.1 and not under
    assert ctrl.next_time(1.0, cs) == 1.0 + cs.dt


def test_fixed_grid_is_a_controller():
    grid = FixedGrid(torch.tensor([0.0, 0.5, 0.75, 1.0], dtype=torch.float64))
    assert grid.fixed and grid.t_span == (0.0, 1.0) and grid.steps == 3
    k, nfe = grid.init(None, None, 0.0, 1.0, None, None)
    assert (k, nfe) == (0, 0)
    assert grid.next_time(0.0, k) == 0.5
    assert grid.adapt(0.0, 0.5, None, None, None, k) == (True, 1, False)

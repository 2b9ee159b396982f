"""Solver-heuristic regularisers on neural CDEs: the local estimate of Pal et al. (2023)."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.cde import control_path
from timestepper.cde.models import NeuralCDE
from timestepper.ode.regularise import local_error_estimate, scaled_error, step_at
from timestepper.solvers.registry import get


def _field(t, y):
    return -3 * y + math.sin(5 * float(t)) * torch.ones_like(y)


def test_local_estimate_is_the_controllers_error_of_that_step():
    records = []
    ts.integrate(ts.ODETerm(_field), "tsit5", ts.PIDController(1e-5, 1e-7), torch.ones(4, dtype=torch.float64),
                 t_span=(0.0, 2.0), on_accept=records.append)
    for r in records[1:6]:
        expected = scaled_error(r.x0, r.x1, r.err, 1e-5, 1e-7)
        got = local_error_estimate(_field, r.t0, r.x0, r.t1 - r.t0, get("tsit5"), 1e-5, 1e-7)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    assert step_at(torch.tensor([0.0, 0.5, 2.0]), 1.0) == 1.5
    with pytest.raises(ValueError, match="outside the solve"):
        step_at(torch.tensor([0.0, 0.5, 2.0]), 3.0)


def test_random_time_estimate_tracks_the_accumulated_error():
    y0 = torch.ones(4, dtype=torch.float64)
    full = ts.solve(_field, y0, 0.0, 2.0, solver="tsit5", rtol=1e-5, atol=1e-7, regularise=True)
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(100):
        tr = 2 * float(torch.rand((), generator=g, dtype=torch.float64))
        sol = ts.solve(_field, y0, 0.0, 2.0, solver="tsit5", rtol=1e-5, atol=1e-7, saveat=[0.0, tr, 2.0])
        h = min(step_at(full.extras["step_ts"], tr), 2.0 - tr)
        samples.append(2.0 * float(local_error_estimate(_field, tr, sol.ys[1], h, get("tsit5"), 1e-5, 1e-7)))
    mean = sum(samples) / len(samples)
    assert 0.5 < mean / float(full.extras["reg_error"]) < 2.0


@pytest.mark.parametrize("adjoint", ["direct", "checkpoint"])
def test_neural_cde_local_regulariser_is_differentiable_with_any_adjoint(adjoint):
    t = torch.linspace(0, 1, 8, dtype=torch.float64)
    x = torch.randn(4, 8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    path = control_path(t, x)
    torch.manual_seed(0)
    model = NeuralCDE(path.channels, 6, 2, width=8, regulariser="local-error", local_samples=3,
                      solver="tsit5", rtol=1e-3, atol=1e-5, adjoint=adjoint).double()
    model(path)
    assert model.reg.ndim == 0 and float(model.reg.detach()) > 0
    model.reg.backward()
    grads = [p.grad for p in model.func.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    model.eval()
    model.reg = torch.zeros(())
    model(path)  # no regulariser at evaluation
    assert float(model.reg) == 0


def test_bad_regulariser_is_named():
    with pytest.raises(ValueError, match="regulariser must be one of"):
        NeuralCDE(3, 4, 2, regulariser="kinetic")

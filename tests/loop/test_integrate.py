"""The integrate loop and the registry: errors, stats, adaptive stepping."""

import math

import pytest
import torch

import timestepper as ts
from timestepper.core.controllers import IController


def test_registry_lists_and_rejects_unknown_names():
    names = ts.solvers.available()
    for n in ("euler", "heun", "ddim", "dpmpp-2m"):
        assert n in names
    with pytest.raises(ValueError, match="unknown solver 'nope'.*dpmpp-2m"):
        ts.solvers.get("nope")
    with pytest.raises(TypeError, match="bad options for solver 'ddim'"):
        ts.solvers.get("ddim", order=7)
    s = ts.solvers.get("dpmpp-2m", lower_order_final=False)
    assert ts.solvers.get(s) is s


def test_fixed_grid_rk4_exponential_and_stats():
    term = ts.ODETerm(lambda t, y: -y)
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)
    sol = ts.integrate(term, "rk4", grid, torch.ones(3, dtype=torch.float64), saveat=ts.SaveAt(steps=True))
    assert abs(float(sol.x[0]) - math.exp(-1)) < 1e-6
    assert sol.stats.nfe == 40 and sol.stats.steps == 10
    assert sol.ys.shape == (11, 3)


def test_adaptive_dopri5_reaches_tolerance():
    term = ts.ODETerm(lambda t, y: torch.stack([y[1], -y[0]]))
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    sol = ts.integrate(term, "dopri5", IController(rtol=1e-9, atol=1e-12), y0, t_span=(0.0, 10.0))
    assert abs(float(sol.x[0]) - math.cos(10.0)) < 1e-7
    assert sol.stats.accepted > 0 and float(sol.ts[-1]) == 10.0


def test_grid_must_be_monotone_and_controller_needs_span():
    term = ts.ODETerm(lambda t, y: y)
    with pytest.raises(ValueError, match="strictly monotone"):
        ts.integrate(term, "rk4", torch.tensor([0.0, 1.0, 0.5]), torch.ones(1))
    with pytest.raises(ValueError, match="t_span"):
        ts.integrate(term, "dopri5", IController(), torch.ones(1))
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        ts.integrate(term, "rk4", torch.tensor([0.0, 1.0]), [1.0])


def test_nan_raises_with_step_and_time():
    calls = {"n": 0}

    def f(t, y):
        calls["n"] += 1
        return y * (math.nan if t >= 0.5 else 1.0)

    with pytest.raises(ts.NonFiniteError, match=r"step 4 \(from t=0.4 to t=0.5\)"):
        ts.integrate(ts.ODETerm(f), "rk4", torch.linspace(0, 1, 11), torch.ones(2))
    out = ts.integrate(ts.ODETerm(f), "rk4", torch.linspace(0, 1, 11), torch.ones(2), check_finite=False)
    assert torch.isnan(out.x).all()

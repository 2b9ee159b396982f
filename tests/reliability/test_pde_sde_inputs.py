"""Issue 12, PDE and SDE fronts: unstable explicit steps, dtype mismatches, numpy integers and
Brownian paths of the wrong shape fail early with a message that names the fix."""

import math

import numpy as np
import pytest
import torch

import timestepper as ts
from timestepper.ode.brownian import VirtualBrownianTree
from timestepper.pde.equations1d import KuramotoSivashinsky
from timestepper.pde.rollout import rollout
from timestepper.pde.surrogate import OneStepSurrogate

F64 = torch.float64


def ks_problem(n=64):
    ks = KuramotoSivashinsky(length=64.0, n=n)
    x = torch.arange(int(n), dtype=F64) / int(n)
    return ks, torch.cos(2 * math.pi * 3 * x) + 0.1 * torch.sin(2 * math.pi * x)


def test_rk4_on_ks_at_an_unstable_step_raises_with_the_hint():
    """It used to return values of 1e33 without a word."""
    ks, u0 = ks_problem()
    with pytest.raises(ts.NonFiniteError, match="'rk4' is likely unstable at dt=0.5.*'etdrk4'"):
        ks.simulate(u0, t_end=20.0, dt=0.5, solver="rk4")


def test_growth_that_stays_finite_is_caught_too(monkeypatch):
    from timestepper.pde import equation

    ks, u0 = ks_problem()
    monkeypatch.setattr(equation, "GROWTH_LIMIT", 1e-3)  # any growth counts: the check itself
    with pytest.raises(ts.NonFiniteError, match="the field grew from max"):
        ks.simulate(u0, t_end=1.0, dt=0.25, solver="etdrk4")
    assert ks.simulate(u0, t_end=1.0, dt=0.25, solver="etdrk4", check_finite=False).shape == u0.shape


def test_etdrk4_at_the_same_step_is_fine_and_numpy_grid_sizes_work():
    ks, u0 = ks_problem(n=np.int64(64))
    u = ks.simulate(u0, t_end=20.0, dt=0.5)
    assert torch.isfinite(u).all() and float(u.abs().max()) < 10


def test_a_float64_field_into_a_float32_surrogate_is_refused_naming_u0():
    net = OneStepSurrogate(torch.nn.Conv1d(1, 1, 3, padding=1))
    with pytest.raises(TypeError, match="u0 is torch.float64 but the surrogate's parameters are torch.float32"):
        rollout(net, torch.zeros(2, 16, dtype=F64), steps=np.int64(3))


@pytest.mark.parametrize("bm_shape, noise, phrase", [
    ((3,), "diagonal", r"increments have shape \(3,\) but diagonal noise needs the shape of y0, \(2, 3\)"),
    ((5, 4), "general", r"general noise needs \(\*batch, m\) with the batch dims of y0, \(2,\)"),
])
def test_a_brownian_path_of_the_wrong_shape_is_refused(bm_shape, noise, phrase):
    bm = VirtualBrownianTree(0.0, 1.0, bm_shape, seed=0, dtype=F64)
    diff = (lambda t, y: torch.ones_like(y)) if noise == "diagonal" else (lambda t, y: torch.ones(2, 3, 4, dtype=F64))
    with pytest.raises(ValueError, match=phrase):
        ts.sdeint(lambda t, y: -y, diff, torch.ones(2, 3, dtype=F64), [0.0, 1.0], dt=0.1, bm=bm, noise=noise)


def test_a_brownian_path_of_the_wrong_dtype_is_refused():
    bm = VirtualBrownianTree(0.0, 1.0, (2, 3), seed=0, dtype=torch.float32)
    with pytest.raises(TypeError, match="bm's increments are torch.float32 but y0 is torch.float64"):
        ts.sdeint(lambda t, y: -y, lambda t, y: torch.ones_like(y), torch.ones(2, 3, dtype=F64), [0.0, 1.0],
                  dt=0.1, bm=bm)

"""Adams solvers (``adams-bashforth``, ``adams-moulton``): empirical order on uniform and
non-uniform grids, and parity with torchdiffeq's ``explicit_adams`` / ``implicit_adams``."""

import math

import pytest
import torch

import timestepper as ts
from timestepper import ODETerm, integrate

F64 = torch.float64


def field(t, y):
    return y * torch.cos(torch.as_tensor(t, dtype=y.dtype))


def end_error(name, n, uniform=True, T=3.0):
    s = torch.linspace(0, 1, n + 1, dtype=F64)
    grid = T * (s if uniform else s + 0.3 * s * (1 - s))  # a smoothly graded grid
    # steady order 4 (AB) / 5 (ABM) from step 4 on; abm: order 5 after its DOPRI5 start
    solver = ts.solvers.get(name) if name == "abm" else ts.solvers.get(name, max_order=5)
    sol = integrate(ODETerm(field), solver, grid, torch.ones(1, dtype=F64))
    return abs(float(sol.x[0]) - math.exp(math.sin(T)))


CASES = {"adams-bashforth": (4, 100), "adams-moulton": (5, 60), "abm": (5, 240)}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("uniform", [True, False])
def test_adams_order(name, uniform):
    order, n = CASES[name]
    n = n if uniform else 2 * n  # the graded grid reaches the asymptotic range later
    slope = math.log2(end_error(name, n, uniform) / end_error(name, 2 * n, uniform))
    assert abs(slope - order) < 0.35, (name, slope)
    assert ts.solvers.get(name).order == order


def test_adaptive_adams_tracks_the_tolerance():
    """abm with the loop's controller: the global error follows the tolerance (within 20x) and
    shrinks by >= 50x when the tolerance does by 100x; saved values come from its dense output."""
    y0 = torch.ones(1, dtype=F64)
    saveat = torch.linspace(0, 10, 7, dtype=F64)
    errs = []
    for tol in (1e-6, 1e-8):
        sol = ts.solve(field, y0, 0.0, 10.0, solver="abm", rtol=tol, atol=tol, saveat=saveat)
        errs.append(float((sol.ys[:, 0] - torch.exp(torch.sin(saveat))).abs().max()))
        assert errs[-1] < 20 * tol
    assert errs[0] / errs[1] > 50


torchdiffeq = pytest.importorskip("torchdiffeq")
from tests.ode.test_odeint_semantics import Counter  # noqa: E402 - needs torchdiffeq


def osc(t, y):
    return torch.stack([y[1], -y[0]]) * (1 + 0.1 * torch.sin(t))


@pytest.mark.parametrize("method,opts", [("explicit_adams", dict(max_order=5)),
                                         ("implicit_adams", {}), ("fixed_adams", dict(max_order=6))])
def test_adams_parity_with_torchdiffeq(method, opts):
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0, 5, 6, dtype=F64)
    a, b = Counter(osc), Counter(osc)
    ys = ts.odeint(a, y0, t, method=method, options=dict(step_size=0.05, **opts))
    ref = torchdiffeq.odeint(b, y0, t, method=method, options=dict(step_size=0.05, **opts))
    assert float((ys - ref).abs().max()) < 1e-9
    if method == "explicit_adams":
        assert a.n == b.n
    else:  # a fixed number of corrector iterations (torchdiffeq's bound) instead of a test
        assert b.n <= a.n <= 1 + 5 * (len(range(100)))


def test_adams_refuses_bad_options():
    with pytest.raises(ValueError, match="max_order"):
        ts.solvers.get("adams-moulton", max_order=13)
    with pytest.raises(ValueError, match="dt="):
        ts.solve(field, torch.ones(1, dtype=F64), 0.0, 1.0, solver="adams-bashforth")

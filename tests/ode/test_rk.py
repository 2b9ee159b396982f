"""Explicit RK tableaux: empirical order of convergence and dense-output order."""

import math

import numpy as np
import pytest
import torch

from timestepper import ODETerm, integrate
from timestepper.solvers.rk import ExplicitRK, RKState
from timestepper.solvers.rk_tableaux import TABLEAUX


def field(t, y):
    return y * torch.cos(torch.as_tensor(t, dtype=y.dtype))


def exact(t):
    return math.exp(math.sin(t))


# (steps at the coarse level, the fine level is twice as many) chosen in the asymptotic range
# and above roundoff for each order.
LEVELS = {"rk-euler": 200, "midpoint": 100, "rk-heun": 100, "adaptive-heun": 100,
          "fehlberg2": 100, "heun3": 60, "rk4": 40, "rk4-38": 160, "bosh3": 50,
          "dopri5": 16, "dopri5-shampine": 16, "tsit5": 16, "dopri8": 8}


def end_error(name, n, T=3.0):
    y0 = torch.tensor([1.0], dtype=torch.float64)
    sol = integrate(ODETerm(field), name, torch.linspace(0, T, n + 1, dtype=torch.float64), y0)
    return abs(float(sol.x[0]) - exact(T))


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_convergence_order(name):
    n = LEVELS[name]
    e1, e2 = end_error(name, n), end_error(name, 2 * n)
    slope = math.log2(e1 / e2)
    assert abs(slope - TABLEAUX[name].order) < 0.3, (name, slope)


@pytest.mark.parametrize("name,q", [("adaptive-heun", 2), ("fehlberg2", 2), ("bosh3", 3),
                                    ("dopri5", 4), ("tsit5", 4)])
def test_dense_output_order_conditions(name, q):
    """The interpolant weights b_i(theta) satisfy the order conditions of every rooted tree up to
    order q at any theta (HNW II.6, Theorem 6.1): sum b c^(k-1) = theta^k / k, sum b (A c) =
    theta^3 / 6, sum b c (A c) = theta^4 / 8, sum b (A c^2) = theta^4 / 12,
    sum b (A A c) = theta^4 / 24 -- and fail one of order q + 1."""
    tab = TABLEAUX[name]
    s = tab.stages
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i + 1, : i + 1] = row
    c = np.array(tab.c)
    for th in (0.2, 0.5, 0.9):
        b = np.array([sum(co * th ** (j + 1) for j, co in enumerate(r)) for r in tab.interp])
        conds = [(b.sum(), th), (b @ c, th**2 / 2), (b @ c**2, th**3 / 3),
                 (b @ (A @ c), th**3 / 6), (b @ c**3, th**4 / 4), (b @ (c * (A @ c)), th**4 / 8),
                 (b @ (A @ c**2), th**4 / 12), (b @ (A @ (A @ c)), th**4 / 24)]
        n_conds = {2: 2, 3: 4, 4: 8}[q]
        for got, want in conds[:n_conds]:
            assert abs(got - want) < 1e-12, (name, th)
        if q == 3:
            assert max(abs(g - w) for g, w in conds[4:]) > 1e-6


@pytest.mark.parametrize("name,q,h0", [("adaptive-heun", 2, 0.1), ("fehlberg2", 2, 0.1),
                                      ("bosh3", 3, 0.1), ("dopri5", 4, 0.1), ("tsit5", 4, 0.1),
                                      ("dopri8", 7, 0.4)])
def test_dense_output_converges(name, q, h0):
    """One step from the exact state: the interpolant's largest error over theta shrinks like
    h^(q+1) when h halves (q = 3 for bosh3's Hermite, 4 for dopri5 and tsit5, 7 for DOP853's
    CONTD8 with its three extra stages)."""
    solver = ExplicitRK(TABLEAUX[name])
    errs = []
    for h in (h0, h0 / 2):
        t0 = 0.3
        x0 = torch.tensor([exact(t0)], dtype=torch.float64)
        _, state, _, _ = solver.step(ODETerm(field), t0, t0 + h, x0, RKState(), None)
        state, _ = solver.prepare_dense(ODETerm(field), state)
        errs.append(max(abs(float(solver.interpolate(state, th)[0]) - exact(t0 + th * h))
                        for th in (0.2, 0.35, 0.5, 0.65, 0.8)))
    assert math.log2(errs[0] / errs[1]) > q + 1 - 0.3, (name, errs)


@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_tableau_consistency(name):
    """Row sums of A equal c, weights sum to 1, FSAL methods interpolate to x1 at theta=1."""
    tab = TABLEAUX[name]
    for i, row in enumerate(tab.a):
        assert abs(sum(row) - tab.c[i + 1]) < 1e-12
    assert abs(sum(tab.b) - 1) < 1e-12
    if tab.b_err is not None:
        assert abs(sum(tab.b_err) - 1) < 1e-12
    if tab.interp is not None:
        for row, b in zip(tab.interp, tab.b):
            assert abs(sum(row) - b) < 1e-12


def test_fsal_saves_one_evaluation():
    calls = []
    term = ODETerm(lambda t, y: calls.append(t) or field(t, y))
    y0 = torch.tensor([1.0], dtype=torch.float64)
    sol = integrate(term, "dopri5", torch.linspace(0, 1, 11, dtype=torch.float64), y0)
    assert len(calls) == sol.stats.nfe == 1 + 10 * 6


@pytest.mark.parametrize("name", ["dopri5", "dopri5-shampine"])
def test_embedded_weights_are_fourth_order(name):
    """Both embedded solutions of Dormand–Prince 5 (DOPRI5's and Shampine's, 1986) satisfy the
    eight order conditions up to order 4 and violate one of order 5 (so the difference to the
    5th-order solution is a genuine h^5 error estimate)."""
    tab = TABLEAUX[name]
    s = tab.stages
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i + 1, : i + 1] = row
    c, bh = np.array(tab.c), np.array(tab.b_err)
    conds = [(bh.sum(), 1), (bh @ c, 1 / 2), (bh @ c**2, 1 / 3), (bh @ (A @ c), 1 / 6),
             (bh @ c**3, 1 / 4), (bh @ (c * (A @ c)), 1 / 8), (bh @ (A @ c**2), 1 / 12),
             (bh @ (A @ (A @ c)), 1 / 24)]
    for got, want in conds:
        assert abs(got - want) < 1e-12, name
    assert abs(bh @ c**4 - 1 / 5) > 1e-6


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(TABLEAUX))
def test_per_sample_step_is_the_term_by_term_sum(name, dtype):
    """A step with (B,) step sizes (per-sample mode forms the products h * w and the stages in
    few tensor ops) gives, to the last bit, x + sum_j (h a_ij) k_j added term by term."""
    from timestepper.solvers.rk import weighted_sum

    bt = TABLEAUX[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64).to(dtype)
    t0 = torch.rand(6, generator=g, dtype=torch.float64)
    t1 = t0 + 0.05 + 0.2 * torch.rand(6, generator=g, dtype=torch.float64)

    def f(t, y):
        return torch.sin(y) * (1 + t[:, None]).to(y.dtype) - 0.3 * y * y

    x1, state, err, _ = ExplicitRK(bt).step(ODETerm(f), t0, t1, x, RKState(), None)
    h = t1 - t0
    hb = h[:, None].to(dtype)
    ks = [f(t0, x)]
    for i in range(1, bt.stages):
        ks.append(f(t0 + bt.c[i] * h, weighted_sum(x, hb, bt.a[i - 1], ks)))
    ref = weighted_sum(x, hb, bt.b, ks)
    assert torch.equal(x1, ref)
    assert all(torch.equal(a, b) for a, b in zip(state.ks, ks))
    if bt.b_err is not None and bt.b_err2 is None:
        ref_err = weighted_sum(None, hb, [b - e for b, e in zip(bt.b, bt.b_err)], ks)
        assert torch.equal(err, ref_err)

"""DETEST (Hull et al. 1972) at rtol = atol = 1e-6 and 1e-9: the end error, scaled by the
tolerance (max_i |y_i - ref_i| / (atol + rtol |ref_i|)), is within 10.

Problems where a local-error controller's global error grows past 10x the tolerance (the orbits
of class D and a few others) are marked xfail(strict): torchdiffeq's dopri5 exceeds by the same
order there (D1: 1365x at 1e-6); see benchmarks/results/ode.md for every number. With
``error_control="global"`` every problem meets the check (tests/ode/test_global_error.py).
"""

import numpy as np
import pytest
import torch

from timestepper import solve
from timestepper.bench.detest import PROBLEMS, reference, scaled_error

EXCEEDS = {
    1e-6: {"B1", "B4", "D1", "D2", "D3", "D4", "D5", "E2", "E3"},
    1e-9: {"D1", "D2", "D3", "D4", "D5"},
}


def _cases():
    for tol in (1e-6, 1e-9):
        for name in PROBLEMS:
            marks = [pytest.mark.xfail(strict=True, reason="global error > 10x tol")] \
                if name in EXCEEDS[tol] else []
            yield pytest.param(name, tol, marks=marks, id=f"{name}-{tol:g}")


@pytest.mark.parametrize("name,tol", list(_cases()))
def test_detest_end_error(name, tol):
    p = PROBLEMS[name]
    sol = solve(p.f, p.initial(), 0.0, p.t1, solver="tsit5", rtol=tol, atol=tol)
    assert scaled_error(sol.x, reference(name), tol, tol) <= 10.0


@pytest.mark.parametrize("name", ["A5", "B3", "E4"])
def test_reference_agrees_with_scipy(name):
    """The stored numeric references against a second method (SciPy's DOP853)."""
    from scipy.integrate import solve_ivp

    p = PROBLEMS[name]
    s = solve_ivp(lambda t, y: p.f(t, torch.from_numpy(y)).numpy(), (0.0, p.t1),
                  np.array(p.y0), method="DOP853", rtol=1e-13, atol=1e-13)
    assert float((reference(name) - torch.from_numpy(s.y[:, -1])).abs().max()) < 1e-10


def test_typos_of_the_copied_version_are_fixed():
    assert PROBLEMS["C5"].y0[10] == pytest.approx(1.65699966404)
    y = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert float(PROBLEMS["E4"].f(0.0, y)[1]) == pytest.approx(0.032 - 0.4)

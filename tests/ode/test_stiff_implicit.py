"""The implicit family on stiff problems, against SciPy's Radau at tight tolerance (float64
references computed here): Robertson's chemical kinetics, Van der Pol in its scaled form with
mu = 1e3 and mu = 1e6, and the Allen–Cahn equation semi-discretised by finite differences
(N = 256, solved with the dense and with the Krylov Newton). Explicit solvers exhaust
``max_steps`` on the same problems.

The problem definitions are shared with ``benchmarks/stiff.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import timestepper as ts

F64 = torch.float64


# -- the problems (torch fields, NumPy fields and Jacobians for SciPy) ---------------------------------

def robertson(t, y):
    return torch.stack([-0.04 * y[0] + 1e4 * y[1] * y[2],
                        0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                        3e7 * y[1] ** 2])


def robertson_np(t, y):
    return np.array([-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                     3e7 * y[1] ** 2])


def robertson_jac(t, y):
    return np.array([[-0.04, 1e4 * y[2], 1e4 * y[1]],
                     [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
                     [0.0, 6e7 * y[1], 0.0]])


def van_der_pol(mu: float):
    """Van der Pol in the scaled form (Hairer & Wanner II, IV.1, eq. 1.5' with ``eps = 1 / mu``):
    ``y1' = y2``, ``y2' = mu ((1 - y1^2) y2 - y1)``; ``mu = 1e6`` is the classical unscaled
    ``mu = 1000``. Returns the torch field, the NumPy field and its Jacobian."""
    eps = 1.0 / mu

    def f(t, y):
        return torch.stack([y[1], ((1 - y[0] ** 2) * y[1] - y[0]) / eps])

    def f_np(t, y):
        return np.array([y[1], ((1 - y[0] ** 2) * y[1] - y[0]) / eps])

    def jac(t, y):
        return np.array([[0.0, 1.0], [(-2 * y[0] * y[1] - 1) / eps, (1 - y[0] ** 2) / eps]])

    return f, f_np, jac


class AllenCahn:
    """``u_t = nu u_xx + u - u^3`` on the periodic interval ``[-1, 1)``, second-order central
    differences on ``n`` points (stiffness ``4 nu / dx^2``)."""

    def __init__(self, n: int = 256, nu: float = 0.01) -> None:
        self.n, self.nu = n, nu
        self.dx = 2.0 / n
        self.x = np.linspace(-1.0, 1.0, n, endpoint=False)

    def u0(self) -> np.ndarray:
        return 0.5 * np.sin(math.pi * self.x) + 0.3 * np.cos(3 * math.pi * self.x)

    def __call__(self, t, u):
        lap = (torch.roll(u, 1, -1) - 2 * u + torch.roll(u, -1, -1)) / self.dx**2
        return self.nu * lap + u - u**3

    def f_np(self, t, u):
        lap = (np.roll(u, 1) - 2 * u + np.roll(u, -1)) / self.dx**2
        return self.nu * lap + u - u**3

    def jac(self, t, u):
        n, c = self.n, self.nu / self.dx**2
        j = np.diag(1 - 3 * u**2 - 2 * c)
        idx = np.arange(n)
        j[idx, (idx + 1) % n] += c
        j[idx, (idx - 1) % n] += c
        return j


# name -> (torch field, numpy field, jacobian, y0, t1)
def problems() -> dict:
    vdp3, vdp3_np, vdp3_jac = van_der_pol(1e3)
    vdp6, vdp6_np, vdp6_jac = van_der_pol(1e6)
    ac = AllenCahn()
    return {
        "robertson": (robertson, robertson_np, robertson_jac, [1.0, 0.0, 0.0], 1e3),
        "vdp-mu1e3": (vdp3, vdp3_np, vdp3_jac, [2.0, -2 / 3], 2.0),
        "vdp-mu1e6": (vdp6, vdp6_np, vdp6_jac, [2.0, -2 / 3], 2.0),
        "allen-cahn-256": (ac, ac.f_np, ac.jac, ac.u0().tolist(), 10.0),
    }


@functools.cache
def reference(name: str) -> np.ndarray:
    """SciPy's Radau with the analytic Jacobian at rtol = 1e-11: the float64 reference at t1."""
    from scipy.integrate import solve_ivp

    _, f_np, jac, y0, t1 = problems()[name]
    sol = solve_ivp(f_np, (0.0, t1), y0, method="Radau", jac=jac, rtol=1e-11, atol=1e-13)
    assert sol.success
    return sol.y[:, -1]


def scaled_error(x: torch.Tensor, ref: np.ndarray, rtol: float, atol: float) -> float:
    r = torch.as_tensor(ref, dtype=F64)
    return float(((x - r).abs() / (atol + rtol * r.abs())).max())


TOLS = {"robertson": (1e-6, 1e-10), "vdp-mu1e3": (1e-6, 1e-6), "vdp-mu1e6": (1e-6, 1e-6),
        "allen-cahn-256": (1e-6, 1e-8)}


CASES = [(p, n) for p in ("robertson", "vdp-mu1e3", "vdp-mu1e6") for n in ("kvaerno5", "radau-iia5")
         if (p, n) not in (("vdp-mu1e3", "kvaerno5"), ("vdp-mu1e6", "kvaerno5"))]
CASES += [("robertson", "kvaerno3"), ("robertson", "kvaerno4")]
CASES += [pytest.param("vdp-mu1e3", "kvaerno5", marks=pytest.mark.slow),
          pytest.param("vdp-mu1e6", "kvaerno5", marks=pytest.mark.slow)]


@pytest.mark.parametrize("problem,name", CASES)
def test_small_stiff_problems_match_scipy(problem, name):
    f, _, _, y0, t1 = problems()[problem]
    rtol, atol = TOLS[problem]
    sol = ts.solve(f, torch.tensor(y0, dtype=F64), 0.0, t1, solver=name, rtol=rtol, atol=atol)
    # global error within a few hundred local tolerances (stiff transients; the controller is local)
    assert scaled_error(sol.x, reference(problem), rtol, atol) < 300, sol.x
    assert sol.stats.accepted < 1500


@pytest.mark.slow
@pytest.mark.parametrize("jacobian", ["dense", "krylov"])
def test_allen_cahn_256_dense_and_krylov(jacobian):
    f, _, _, y0, t1 = problems()["allen-cahn-256"]
    rtol, atol = TOLS["allen-cahn-256"]
    s = ts.solvers.get("kvaerno5", jacobian=jacobian)
    sol = ts.solve(f, torch.tensor(y0, dtype=F64), 0.0, t1, solver=s, rtol=rtol, atol=atol)
    assert scaled_error(sol.x, reference("allen-cahn-256"), rtol, atol) < 300
    st = s.stats
    if jacobian == "dense":
        assert 0 < st["jacobians"] < sol.stats.accepted  # reused across steps
    else:
        assert st["jacobians"] == 0 and st["jvps"] > 0


@pytest.mark.parametrize("problem", ["robertson", "vdp-mu1e6", "allen-cahn-256"])
def test_explicit_solvers_exhaust_max_steps(problem):
    f, _, _, y0, t1 = problems()[problem]
    rtol, atol = TOLS[problem]
    out = ts.solve(f, torch.tensor(y0, dtype=F64), 0.0, t1, solver="tsit5", rtol=rtol, atol=atol,
                   max_steps=1000, on_failure="return")
    assert out.status == ts.Status.MAX_STEPS
    implicit = ts.solve(f, torch.tensor(y0, dtype=F64), 0.0, t1, solver="radau-iia5", rtol=rtol, atol=atol,
                        max_steps=5000)
    assert implicit.succeeded


@pytest.mark.parametrize("name", ["kvaerno5", "radau-iia5"])
def test_float32_state(name):
    """The Newton scale never asks for more than float32 can resolve (ten rounding units)."""
    f, _, _, y0, t1 = problems()["robertson"]
    sol = ts.solve(f, torch.tensor(y0, dtype=torch.float32), 0.0, t1, solver=name, rtol=1e-4, atol=1e-7)
    assert sol.x.dtype == torch.float32
    assert scaled_error(sol.x.double(), reference("robertson"), 1e-4, 1e-7) < 10

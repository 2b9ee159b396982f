"""ETD1 / ETDRK2 / ETDRK4 (Cox & Matthews 2002) and IMEX Euler on SemilinearTerms."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import timestepper as ts
from timestepper import SemilinearTerm, integrate
from timestepper.pde import KuramotoSivashinsky
from timestepper.solvers.etd import ETDRK4


def _ks_case():
    eq = KuramotoSivashinsky(22.0, 32)
    q = 2 * math.pi * eq.x / eq.length
    return eq, torch.cos(q) * (1 + torch.sin(q))


@functools.cache
def _ks_reference():
    eq, u0 = _ks_case()
    return eq.simulate(u0, t_end=2.0, dt=0.005 / 8)


@pytest.mark.parametrize(
    ("solver", "order", "steps"),
    [
        ("etdrk4", 4, (0.02, 0.01, 0.005)),
        ("etdrk2", 2, (0.04, 0.02, 0.01)),
        ("etd1", 1, (0.04, 0.02, 0.01)),
        ("imex-euler", 1, (0.04, 0.02, 0.01)),
    ],
)
def test_empirical_order_on_kuramoto_sivashinsky(solver, order, steps):
    """Slope of log error vs log step against a fine-step ETDRK4 reference (float64)."""
    eq, u0 = _ks_case()
    ref = _ks_reference()
    errs = [
        float((eq.simulate(u0, t_end=2.0, dt=h, solver=solver) - ref).norm() / ref.norm())
        for h in steps
    ]
    slopes = [math.log2(errs[i] / errs[i + 1]) for i in range(len(errs) - 1)]
    assert abs(slopes[-1] - order) < 0.15, (errs, slopes)


def test_linear_problem_is_exact_and_coefficients_cached_per_step_size():
    """With N = 0 the ETD step is exp(hL): exact for any step, on a non-uniform grid."""
    lin = torch.tensor([-1.0, -50.0, 2.0j], dtype=torch.complex128)
    term = SemilinearTerm(lin, lambda t, x: torch.zeros_like(x))
    x0 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.complex128)
    grid = torch.tensor([0.0, 0.3, 0.6, 1.0], dtype=torch.float64)
    solver = ETDRK4()
    _, table = solver.init(term, grid, x0)
    assert len(table) == 3 and len({id(row) for row in table}) == 2  # steps 0.3, 0.3 and 0.4
    sol = integrate(term, solver, grid, x0)
    torch.testing.assert_close(sol.x, torch.exp(lin) * x0, rtol=1e-13, atol=0)
    assert sol.stats.nfe == 3 * 4


def test_etd_scalar_semilinear_matches_exact_solution():
    """x' = -20 x + sin(t): ETDRK4 error falls by ~16x per halving, float64 real state."""
    lam = -20.0

    def exact(t):
        return math.exp(lam * t) * (1 + 1 / (1 + lam**2)) + (-lam * math.sin(t) - math.cos(t)) / (
            1 + lam**2
        )

    term = SemilinearTerm(
        torch.tensor([lam], dtype=torch.float64), lambda t, x: torch.full_like(x, math.sin(t))
    )
    errs = []
    for n in (10, 20, 40):
        grid = torch.linspace(0, 2, n + 1, dtype=torch.float64)
        x = integrate(term, "etdrk4", grid, torch.ones(1, dtype=torch.float64)).x
        errs.append(abs(float(x) - exact(2.0)))
    assert math.log2(errs[1] / errs[2]) > 3.6, errs


def test_float32_state_gets_float32_coefficients():
    eq, u0 = _ks_case()
    term = eq.term(torch.float32)
    x0 = torch.fft.rfft(u0.float())
    state, (c,) = ETDRK4().init(term, torch.tensor([0.0, 0.1]), x0)
    assert all(v.dtype == torch.float32 for v in c.values())
    x1, _, err, nfe = ETDRK4().step(term, 0.0, 0.1, x0, state, c)
    assert nfe == 4
    assert x1.dtype == torch.complex64 and err is None


def test_nonfinite_complex_state_raises_with_step():
    term = SemilinearTerm(torch.tensor([0.0]), lambda t, x: x * x * 1e10)
    x0 = torch.tensor([1.0 + 1.0j], dtype=torch.complex128)
    with pytest.raises(ts.NonFiniteError, match="step"):
        integrate(term, "etd1", torch.linspace(0, 1, 11, dtype=torch.float64), x0)


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="SemilinearTerm"):
        integrate(ts.ODETerm(lambda t, x: -x), "etdrk4", torch.linspace(0, 1, 3), torch.ones(2))
    term = SemilinearTerm(torch.tensor([1j]), lambda t, x: x)
    with pytest.raises(TypeError, match="complex"):
        integrate(term, "etdrk4", torch.linspace(0, 1, 3), torch.ones(1))


def test_registry_names():
    names = ts.solvers.available()
    for name in ("etd1", "etdrk2", "etdrk4", "imex-euler"):
        assert name in names
    assert ts.solvers.get("etdrk4").order == 4


@pytest.mark.parametrize("dealias", [False, True])
def test_parity_numpy_kassam_trefethen_contour_etdrk4(dealias):
    """Our phi-function ETDRK4 vs an independent NumPy ETDRK4 with Kassam–Trefethen contour
    coefficients, on their KS test (N = 128, h = 1/4) for 40 steps."""
    from timestepper.pde.reference import NumpyKSETDRK4

    eq = KuramotoSivashinsky(32 * math.pi, 128, dealias=dealias)
    u0 = torch.cos(eq.x / 16) * (1 + torch.sin(eq.x / 16))
    ours = eq.simulate(u0, t_end=10.0, dt=0.25)
    ref = NumpyKSETDRK4(32 * math.pi, 128, 0.25, dealias=dealias).simulate(u0.numpy(), 40)
    assert float((ours - torch.from_numpy(ref)).abs().max()) < 1e-11


@pytest.mark.parametrize("dealias", [False, True])
@pytest.mark.parametrize("name", ["KuramotoSivashinsky", "Burgers", "KdV"])
def test_real_view_nonlinear_equals_the_complex_one(name, dealias):
    # the spectral equations hand ETDRK4 N on real views (SemilinearTerm.nonlinear_real_view);
    # it must be the same N, and a term without one must give the same step through the wrapper
    eq = getattr(ts.pde, name)(22.0, 32, dealias=dealias)
    u0 = _ks_case()[1]
    term, x0 = eq.term(), eq.to_spectral(u0)
    assert term.nonlinear_real_view_fn is not None
    n_complex = term.nonlinear(0.0, x0)
    n_real = term.nonlinear_real_view(0.0, torch.view_as_real(x0))
    torch.testing.assert_close(torch.view_as_complex(n_real), n_complex, rtol=0, atol=0)
    plain = SemilinearTerm(term.linear, term.nonlinear)
    assert plain.nonlinear_real_view_fn is None
    torch.testing.assert_close(plain.nonlinear_real_view(0.0, torch.view_as_real(x0)), n_real, rtol=0, atol=0)
    grid = torch.linspace(0, 0.5, 11, dtype=torch.float64)
    torch.testing.assert_close(integrate(term, "etdrk4", grid, x0).x, integrate(plain, "etdrk4", grid, x0).x,
                               rtol=0, atol=0)


def test_nonlinear_real_view_must_be_callable():
    with pytest.raises(TypeError, match="nonlinear_real_view"):
        SemilinearTerm(torch.tensor([1.0]), lambda t, x: x, nonlinear_real_view=3)

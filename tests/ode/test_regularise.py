"""Solver-heuristic regularisers (Pal et al. 2021): the ERNODE term is the controller's scaled
error times the step, both terms carry gradients, and descending the ERNODE term alone makes a
learned field cheaper to solve."""

import pytest
import torch

import timestepper as ts
from timestepper.core.controllers import PIDController
from timestepper.core.terms import ODETerm
from timestepper.ode.regularise import SolverHeuristics
from timestepper.solvers import get


def _mlp(seed, scale=3.0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    net = net.double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def test_error_term_is_the_controllers_scaled_error_times_step():
    """R_E = sum_j E_j |h_j| with E_j the norm the controller accepted the step with."""
    net = _mlp(0)
    x0 = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ctrl = PIDController(1e-6, 1e-8)
    solver = get("tsit5")
    heur = SolverHeuristics(ctrl.rtol, ctrl.atol, ctrl.norm, solver)
    seen = []

    def collect(step):
        heur(step)
        seen.append(float(ctrl.error_norm(step.x0, step.x1, step.err)) * abs(step.t1 - step.t0))

    sol = ts.integrate(ODETerm(lambda t, y: net(y)), solver, ctrl, x0, t_span=(0.0, 1.0),
                       on_accept=collect)
    assert sol.stats.accepted == len(seen) == heur.steps > 3
    assert abs(float(heur.error.detach()) - sum(seen)) < 1e-12 * max(1.0, sum(seen))
    assert float(heur.error.detach()) <= 1.0  # accepted steps have E_j <= 1, sum |h_j| = 1


def test_terms_are_differentiable_in_float32():
    net = _mlp(0).float()
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    sol = ts.solve(lambda t, y: net(y), x0, 0.0, 1.0, solver="dopri5", rtol=1e-4, atol=1e-5,
                   regularise=True)
    for key in ("reg_error", "reg_stiffness"):
        grads = torch.autograd.grad(sol.extras[key], list(net.parameters()), retain_graph=True)
        flat = torch.cat([g.flatten() for g in grads])
        assert torch.isfinite(flat).all() and flat.abs().sum() > 0, key


def test_descending_the_error_term_lowers_test_nfe():
    """A few gradient steps on R_E alone make the field cheaper to solve at the same
    tolerance (the mechanism behind ERNODE's faster prediction)."""
    net = _mlp(0)
    x0 = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def nfe():
        with torch.no_grad():
            return ts.solve(lambda t, y: net(y), x0, 0.0, 1.0, rtol=1e-7, atol=1e-7).stats.nfe

    before = nfe()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(15):
        sol = ts.solve(lambda t, y: net(y), x0, 0.0, 1.0, rtol=1e-7, atol=1e-7, regularise=True)
        opt.zero_grad()
        sol.extras["reg_error"].backward()
        opt.step()
    after = nfe()
    assert after <= 0.8 * before, (before, after)


def test_variable_order_solver_regularises_with_the_error_of_its_order():
    """vode-adams returns OrderErrors; R_E accumulates the estimate at the order each step used."""
    sol = ts.solve(lambda t, y: -y, torch.ones(3, dtype=torch.float64), 0.0, 1.0, solver="vode-adams",
                   controller="pi", rtol=1e-6, atol=1e-6, regularise=True)
    reg = sol.extras["reg_error"]
    assert torch.isfinite(reg) and 0 < float(reg) < 1


def test_sampled_local_error_refuses_a_variable_order_solver():
    from timestepper.ode.regularise import local_error_estimate

    with pytest.raises(ValueError, match="fixed-order solver"):
        local_error_estimate(lambda t, y: -y, 0.0, torch.ones(3), 0.1, ts.solvers.get("vode-adams"), 1e-6, 1e-6)

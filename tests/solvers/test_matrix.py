"""The combination matrix: every solver with every mode it can be asked for either works or
refuses with an error that names the combination (never an exception from deep inside torch).

* every adaptive ODE solver x {direct, checkpoint, backsolve, per-sample} gradients: the
  checkpoint gradient equals direct backpropagation, the backsolve gradient agrees to the
  solve's tolerance, per-sample steps give the shared-step solution;
* every diffusion solver x {VP discrete, VE, EDM, rectified flow from pure noise}: the sample
  is finite and, for deterministic solvers, closer to the exact probability-flow solution than a
  single DDIM step;
* a solver given the wrong kind of term, grid or stepping is refused, naming it.
"""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.diffusion.term import DiffusionTerm

F64 = torch.float64
ADAPTIVE = [n for n in ts.solvers.available("ode") if ts.solvers.get(n).error_order is not None]
DIFFUSION = ts.solvers.available("diffusion")


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin1, self.lin2 = torch.nn.Linear(2, 8).double(), torch.nn.Linear(8, 2).double()

    def forward(self, t, y):
        return self.lin2(torch.tanh(self.lin1(y))) - 0.5 * y


Y0 = torch.tensor([[0.4, -0.2], [0.1, 0.3]], dtype=F64)


def _grads(f, name, adjoint, tol):
    f.zero_grad()
    y0 = Y0.clone().requires_grad_(True)
    sol = ts.solve(f, y0, 0.0, 1.0, solver=name, rtol=tol, atol=tol, adjoint=adjoint,
                   saveat=torch.tensor([0.5, 1.0], dtype=F64))
    (sol.ys.pow(2).sum() + sol.x.sum()).backward()
    return torch.cat([y0.grad.reshape(-1)] + [p.grad.reshape(-1) for p in f.parameters()])


@pytest.mark.parametrize("name", ADAPTIVE)
@pytest.mark.parametrize("mode", ["checkpoint", "backsolve", "per-sample"])
def test_adaptive_solver_with_every_gradient_mode(name, mode):
    f = Field()
    solver = ts.solvers.get(name)
    tol = 1e-7 if solver.order >= 3 else 1e-5
    if mode == "per-sample" and not solver.per_sample:
        with pytest.raises(ValueError, match="does not support per-sample steps"):
            ts.solve(f, Y0, 0.0, 1.0, solver=name, per_sample_steps=True)
        return
    if mode == "checkpoint" and solver.carries_state:
        with pytest.raises(ValueError, match="depends on its history"):
            _grads(f, name, mode, tol)
        return
    if mode == "per-sample":
        shared = ts.solve(f, Y0, 0.0, 1.0, solver=name, rtol=tol, atol=tol)
        sol = ts.solve(f, Y0, 0.0, 1.0, solver=name, rtol=tol, atol=tol, per_sample_steps=True)
        assert sol.succeeded and float((sol.x - shared.x).detach().abs().max()) < 100 * tol
        return
    direct = _grads(f, name, "direct", tol)
    got = _grads(f, name, mode, tol)
    err = float((got - direct).abs().max() / direct.abs().max())
    # An implicit solver's replay re-solves its stage equations (with a Jacobian computed afresh),
    # so it agrees with the forward pass to the Newton tolerance, not to rounding.
    exact = 10 * tol if getattr(ts.solvers.get(name), "is_implicit", False) else 1e-10
    assert err < (exact if mode == "checkpoint" else 1e3 * tol), (name, mode, err)


def test_per_sample_needs_direct_gradients():
    with pytest.raises(ValueError, match="per_sample_steps supports adjoint='direct' only"):
        ts.solve(Field(), Y0, 0.0, 1.0, adjoint="checkpoint", per_sample_steps=True)


SCHEDULES = {
    "vp-discrete": (lambda: ts.VPDiscreteSchedule.from_betas("linear"), "epsilon"),
    "ve": (lambda: ts.VESchedule(0.01, 50.0), "score"),
    "edm": (lambda: ts.EDMSchedule(0.002, 80.0), "sample"),
    "flow": (lambda: ts.RectifiedFlowSchedule(), "velocity"),  # sampled from t = 1: alpha = 0
}


# Options for the accuracy check. BDIA's default gamma = 1 (the exactly invertible, time-symmetric
# form) has a leapfrog-like parasitic mode: at 12 log-SNR steps on VE/EDM it is less accurate
# than DDIM (docs/inversion.md, table (b)), and so is BDIA-EDM's; their orders and inverses are
# tested in test_bdia.py and test_bdia_edm.py, and gamma = 0.5, the sampling setting, is checked here.
ACCURACY_OPTIONS = {"bdia-ddim": {"gamma": 0.5}, "bdia-edm": {"gamma": 0.5}}


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture.random(2, 3, seed=3, full=True)


def _reference(gmm, den, noise, grid):
    """The exact probability-flow solution from the grid's first point to zero noise."""
    a0, s0 = float(grid.alpha[0]), float(grid.sigma[0])
    if a0 == 0.0:  # from pure noise the first exact step is the DDIM step to the second point
        a0, s0 = float(grid.alpha[1]), float(grid.sigma[1])
        x1 = ts.sample(den, noise, "ddim", grid=grid.points(0, 2))
        return gmm.reference_solution(x1 / a0, s_start=s0 / a0, s_end=0.0)
    x0 = noise * math.sqrt(a0 * a0 + s0 * s0)
    return gmm.reference_solution(x0 / a0, s_start=s0 / a0, s_end=0.0)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("name", DIFFUSION)
def test_diffusion_solver_on_every_schedule(gmm, name, schedule):
    make, kind = SCHEDULES[schedule]
    den = gmm.denoiser(make(), kind)
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    grid = "uniform" if schedule == "flow" else "logsnr"
    sol = ts.sample(den, noise, name, steps=12, grid=grid, generator=0, return_solution=True,
                    solver_options=ACCURACY_OPTIONS.get(name))
    assert sol.succeeded and torch.isfinite(sol.x).all(), (name, schedule)
    if ts.solvers.get(name).is_stochastic:
        return
    ref = _reference(gmm, den, noise, sol.extras["grid"])
    err = float((sol.x - ref).norm(dim=-1).mean())
    one_step = float((ts.sample(den, noise, "ddim", steps=1, grid=grid) - ref).norm(dim=-1).mean())
    assert err < 0.5 * one_step, (name, schedule, err, one_step)


def test_wrong_term_grid_or_stepping_is_refused_naming_it(gmm):
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    ode = ts.ODETerm(lambda t, y: -y)
    with pytest.raises(TypeError, match=r"solver 'dpmpp-2m' \(diffusion\) advances a DiffusionTerm, got ODETerm"):
        ts.integrate(ode, "dpmpp-2m", torch.linspace(0, 1, 3), torch.ones(2))
    with pytest.raises(TypeError, match=r"solver 'tsit5' \(ode\) does not sample diffusion models"):
        ts.sample(den, torch.ones(2, 2), "tsit5")
    with pytest.raises(TypeError, match=r"solver 'dpm-adaptive' \(diffusion\) advances a DiffusionTerm"):
        ts.solve(lambda t, y: -y, torch.ones(2), 0.0, 1.0, solver="dpm-adaptive")
    with pytest.raises(TypeError, match=r"solver 'ddim' steps on a SamplingGrid, got Tensor"):
        ts.integrate(DiffusionTerm(den), "ddim", torch.linspace(1, 0, 3), torch.ones(2))
    with pytest.raises(ValueError, match=r"solver 'rk4' has no error estimate, so it cannot step adaptively"):
        ts.integrate(ode, "rk4", ts.PIDController(), torch.ones(2), t_span=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"solver 'dpm-adaptive' does not support per-sample steps"):
        ts.integrate(DiffusionTerm(den), "dpm-adaptive", ts.PIDController(), torch.ones(2, 1),
                     t_span=(0.0, 1.0), per_sample=True)
    with pytest.raises(TypeError, match=r"solver 'sde-euler' \(sde\) advances a SDETerm, got ODETerm"):
        ts.integrate(ode, "sde-euler", torch.linspace(0, 1, 3), torch.ones(2))
    with pytest.raises(TypeError, match=r"solver 'rk4' \(ode\) does not solve SDEs"):
        ts.sdeint(lambda t, x: x, lambda t, x: x, torch.ones(2), [0.0, 1.0], solver="rk4")

"""The implicit Runge–Kutta family: empirical orders on a problem with an exact solution, the
Newton machinery (Jacobian reuse, Krylov, counters, failures), and every gradient mode."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.solvers.implicit import IMPLICIT_SOLVERS, NewtonError

F64 = torch.float64
TIGHT = {"rtol": 1e-13, "atol": 1e-15}

# name -> (order, step counts): the measured order of the global error at t = 2.
LEVELS = {
    "implicit-euler": (1, (40, 80)), "implicit-midpoint": (2, (20, 40)), "trapezoid": (2, (20, 40)),
    "sdirk2": (2, (20, 40)), "trbdf2": (2, (20, 40)), "radau-iia3": (3, (10, 20)), "gl4": (4, (10, 20)),
    "radau-iia5": (5, (8, 16)), "gl6": (6, (4, 8)), "kvaerno3": (3, (20, 40)), "kvaerno4": (4, (20, 40)),
    "kvaerno5": (5, (10, 20)),
}


def forced(t, y):
    return -y + torch.sin(torch.as_tensor(t, dtype=y.dtype)) * torch.ones_like(y)


def forced_exact(t):  # y' = -y + sin t, y(0) = 1
    return 1.5 * math.exp(-t) + 0.5 * (math.sin(t) - math.cos(t))


def test_every_implicit_solver_is_registered_and_declared():
    assert set(LEVELS) == set(IMPLICIT_SOLVERS)
    for name in IMPLICIT_SOLVERS:
        s = ts.solvers.get(name)
        assert s.is_implicit and ts.solvers.entry(name).family == "ode"
    adaptive = {n for n in IMPLICIT_SOLVERS if ts.solvers.get(n).error_order is not None}
    assert adaptive == {"kvaerno3", "kvaerno4", "kvaerno5", "radau-iia5"}


@pytest.mark.parametrize("name", list(LEVELS))
def test_convergence_order(name):
    order, steps = LEVELS[name]
    errs = []
    for n in steps:
        solver = ts.solvers.get(name, newton=TIGHT)
        x = ts.integrate(ts.ODETerm(forced), solver, torch.linspace(0, 2, n + 1, dtype=F64),
                         torch.ones(1, dtype=F64)).x
        errs.append(abs(float(x[0]) - forced_exact(2.0)))
    assert abs(math.log2(errs[0] / errs[1]) - order) < 0.25, errs


@pytest.mark.parametrize("name", ["kvaerno3", "kvaerno4", "kvaerno5", "radau-iia5"])
def test_error_estimate_has_the_declared_order(name):
    """The local error estimate of one step scales as h^error_order."""
    s = ts.solvers.get(name, newton=TIGHT)
    term = ts.ODETerm(forced)
    x0 = torch.ones(1, dtype=F64)
    errs = []
    for h in (0.1, 0.05):
        state, _ = s.init(term, None, x0)
        _, _, err, _ = s.step(term, 0.0, h, x0, state, None)
        errs.append(abs(float(err)))
    assert abs(math.log2(errs[0] / errs[1]) - s.error_order) < 0.35, errs


def _linear_stiff(t, y):
    """Two decoupled modes, one stiff (-1e4) and one slow (-1), plus a forcing."""
    lam = torch.tensor([-1e4, -1.0], dtype=y.dtype)
    t = torch.as_tensor(t, dtype=y.dtype)
    return lam * (y - torch.cos(t.reshape(-1, 1) if t.ndim == 1 else t))  # per sample: (B,) times


def test_dense_jacobian_is_reused_across_steps():
    s = ts.solvers.get("kvaerno5")
    sol = ts.solve(_linear_stiff, torch.ones(2, dtype=F64), 0.0, 10.0, solver=s, rtol=1e-6, atol=1e-9)
    st = s.stats
    # a linear problem: the Jacobian never changes; it is recomputed only when an LU kept from an
    # older step size slows the iteration down
    assert st["jacobians"] <= 5 and sol.stats.accepted > 25
    assert st["newton_iterations"] >= 6 * sol.stats.steps
    assert st["factorizations"] < sol.stats.steps  # the LU is kept while h changes little


def test_krylov_agrees_with_dense_and_counts_its_products():
    calls = []

    def f(t, y):
        calls.append(1)
        return _linear_stiff(t, y)

    out = {}
    for jac in ("dense", "krylov"):
        calls.clear()
        s = ts.solvers.get("kvaerno5", jacobian=jac)
        sol = ts.solve(f, torch.ones(2, dtype=F64), 0.0, 2.0, solver=s, rtol=1e-7, atol=1e-10)
        assert sol.stats.nfe == len(calls)
        out[jac] = (sol.x, s.stats)
    assert torch.allclose(out["dense"][0], out["krylov"][0], rtol=1e-6, atol=1e-9)
    assert out["krylov"][1]["jvps"] > 0 and out["krylov"][1]["jacobians"] == 0


@pytest.mark.parametrize("name", ["kvaerno5", pytest.param("radau-iia5", marks=pytest.mark.slow)])
def test_krylov_per_sample_matches_shared(name):
    y0 = torch.tensor([[1.0, 0.5], [0.2, -1.0]], dtype=F64)
    s = ts.solvers.get(name, jacobian="krylov")
    shared = ts.solve(_linear_stiff, y0, 0.0, 1.0, solver=s, rtol=1e-7, atol=1e-9)
    per = ts.solve(_linear_stiff, y0, 0.0, 1.0, solver=s, rtol=1e-7, atol=1e-9, per_sample_steps=True)
    assert per.succeeded and torch.allclose(per.x, shared.x, rtol=1e-5, atol=1e-8)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="jacobian must be one of"):
        ts.solvers.get("kvaerno5", jacobian="sparse")
    with pytest.raises(TypeError, match="bad options for solver 'kvaerno5'"):
        ts.solvers.get("kvaerno5", newton={"tolerance": 1e-3})
    with pytest.raises(ValueError, match="newton max_iter"):
        ts.solvers.get("radau-iia5", newton={"max_iter": 0})
    with pytest.raises(ValueError, match="per_sample_steps needs an adaptive solve"):
        ts.solve(forced, torch.ones(2, 1, dtype=F64), 0.0, 1.0, solver="gl4", dt=0.1, per_sample_steps=True)
    with pytest.raises(ValueError, match="has no error estimate"):
        ts.solve(forced, torch.ones(1, dtype=F64), 0.0, 1.0, solver="trbdf2")


def test_newton_failure_on_a_fixed_step_raises():
    # y' = y^2 from y = 1 blows up at t = 1: the implicit Euler equation y = 1 + 2 y^2 has no real root
    with pytest.raises(NewtonError, match="did not converge on the fixed step from t=0 to t=2"):
        ts.solve(lambda t, y: y * y, torch.ones(1, dtype=F64), 0.0, 2.0, solver="implicit-euler", dt=2.0)


def test_repeated_newton_failure_raises_after_the_loop_reduced_the_step():
    def f(t, y):  # finite at the start, NaN wherever a stage is evaluated
        return -y if float(t) == 0.0 else y * math.nan

    s = ts.solvers.get("kvaerno3", newton={"max_failures": 5})
    with pytest.raises(NewtonError, match="failed on 6 consecutive attempts at t=0"):
        ts.solve(f, torch.ones(1, dtype=F64), 0.0, 1.0, solver=s, dt0=0.1)
    assert s.stats["newton_failures"] == 6


def test_newton_failure_is_a_rejection_and_recovers():
    """A first step far too large for Newton: the loop rejects it and the solve still succeeds."""
    s = ts.solvers.get("radau-iia5")
    sol = ts.solve(lambda t, y: -(y ** 3) * 1e3, torch.full((1,), 10.0, dtype=F64), 0.0, 1.0, solver=s,
                   dt0=1.0, rtol=1e-8, atol=1e-10)
    exact = 10.0 / math.sqrt(1 + 2e3 * 100.0)  # y' = -k y^3: y = y0 / sqrt(1 + 2 k y0^2 t)
    assert s.stats["newton_failures"] >= 1 and sol.stats.rejected >= 1
    assert abs(float(sol.x) - exact) < 1e-6 * exact


class Decay(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([3.0, 0.5], dtype=F64))

    def forward(self, t, y):
        return -self.k * y + 0.1 * torch.sin(y)


def _solve_loss(f, name, adjoint, jac="dense", **kw):
    f.zero_grad()
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    s = ts.solvers.get(name, jacobian=jac, newton=TIGHT)
    sol = ts.solve(f, y0, 0.0, 1.0, solver=s, adjoint=adjoint, **kw)
    loss = sol.x.pow(2).sum()
    loss.backward()
    return loss.detach(), torch.cat([y0.grad, f.k.grad])


@pytest.mark.parametrize("name", ["implicit-euler", "implicit-midpoint", "trapezoid", "sdirk2", "trbdf2",
                                  "radau-iia3", "gl4", "radau-iia5", "gl6"])
def test_fixed_step_gradients_are_the_discrete_gradient(name):
    """Direct backpropagation (implicit-function gradient of each Newton solve) equals central
    finite differences of the same discrete solve; checkpointing equals direct."""
    f = Decay()
    _, direct = _solve_loss(f, name, "direct", dt=0.1)
    _, ckpt = _solve_loss(f, name, "checkpoint", dt=0.1)
    assert torch.allclose(ckpt, direct, rtol=1e-9, atol=1e-12)
    # the continuous adjoint, solved backwards by the same method on the same steps, differs from
    # the discrete gradient by the discretisation error
    _, back = _solve_loss(f, name, "backsolve", dt=0.1)
    order = ts.solvers.get(name).order
    assert float((back - direct).abs().max()) <= 3 * 0.1**order * float(direct.abs().max())
    with pytest.raises(ValueError, match="per_sample_steps needs an adaptive solve"):
        ts.solve(f, torch.ones(2, 2, dtype=F64), 0.0, 1.0, solver=name, dt=0.1, per_sample_steps=True)
    eps, fd = 1e-6, []
    with torch.no_grad():
        for i in range(2):
            vals = []
            for sign in (1, -1):
                f.k[i] += sign * eps
                s = ts.solvers.get(name, newton=TIGHT)
                vals.append(ts.solve(f, torch.tensor([1.0, -0.5], dtype=F64), 0.0, 1.0, solver=s,
                                     dt=0.1).x.pow(2).sum())
                f.k[i] -= sign * eps
            fd.append((vals[0] - vals[1]) / (2 * eps))
    assert torch.allclose(direct[2:], torch.stack(fd), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("jac", ["dense", pytest.param("krylov", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", ["kvaerno5", "radau-iia5", "gl4"])
def test_backsolve_matches_direct(name, jac):
    """The backsolve adjoint runs the implicit solver on the augmented system (its Jacobian by
    double backpropagation, its Jacobian-vector products by two reverse passes)."""
    f = Decay()
    kw = {"dt": 0.05} if name == "gl4" else {"rtol": 1e-8, "atol": 1e-10}
    _, direct = _solve_loss(f, name, "direct", jac, **kw)
    _, back = _solve_loss(f, name, "backsolve", jac, **kw)
    assert torch.allclose(back, direct, rtol=1e-4 if name == "gl4" else 1e-5)


@pytest.mark.parametrize("name", ["kvaerno5", "radau-iia5"])
def test_per_sample_direct_gradients(name):
    """Per-sample steps with backpropagation through the implicit-function gradients: equal to
    the shared-step gradients (each sample's solve is independent)."""
    f = Decay()
    y0 = torch.tensor([[1.0, -0.5], [0.3, 0.2]], dtype=F64, requires_grad=True)
    sol = ts.solve(f, y0, 0.0, 1.0, solver=ts.solvers.get(name, newton=TIGHT), rtol=1e-8, atol=1e-10,
                   per_sample_steps=True)
    sol.x.pow(2).sum().backward()
    f2 = Decay()
    y1 = y0.detach().clone().requires_grad_(True)
    ref = ts.solve(f2, y1, 0.0, 1.0, solver=ts.solvers.get(name, newton=TIGHT), rtol=1e-8, atol=1e-10)
    ref.x.pow(2).sum().backward()
    assert torch.allclose(y0.grad, y1.grad, rtol=1e-5) and torch.allclose(f.k.grad, f2.k.grad, rtol=1e-5)


def test_stiff_guide_examples_run():
    """The code on docs/stiff.md runs as written."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "stiff.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        exec(compile(block, f"stiff.md[block {i}]", "exec"), {"__name__": "docs_example"})

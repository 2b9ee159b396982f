"""The solve front: structured states, saveat, status on failure, NaN rejection, per-sample
step sizes, controllers and argument errors."""

import math

import pytest
import torch

import timestepper as ts
from timestepper.core.controllers import PIDController


def decay(t, y):
    return -y


def test_pytree_state_and_args():
    y0 = {"a": torch.tensor([1.0, 2.0], dtype=torch.float64),
          "b": (torch.tensor(3.0, dtype=torch.float64),)}

    def f(t, y, k):
        return {"a": -k * y["a"], "b": (-y["b"][0],)}

    sol = ts.solve(f, y0, 0.0, 1.0, args=(2.0,), rtol=1e-10, atol=1e-10,
                   saveat=torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(sol.x["a"], torch.tensor([1.0, 2.0], dtype=torch.float64) * math.exp(-2))
    assert abs(float(sol.x["b"][0]) - 3 * math.exp(-1)) < 1e-8
    assert sol.ys["a"].shape == (3, 2) and sol.ys["b"][0].shape == (3,)


@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "bosh3", "dopri8"])
def test_saveat_dense_output(solver):
    y0 = torch.tensor([1.0], dtype=torch.float64)
    st = torch.linspace(0, 2, 9, dtype=torch.float64)
    sol = ts.solve(decay, y0, 0.0, 2.0, solver=solver, rtol=1e-9, atol=1e-9, saveat=st)
    assert torch.allclose(sol.ts, st)
    assert float((sol.ys[:, 0] - torch.exp(-st)).abs().max()) < 1e-7


def test_backwards_in_time():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    sol = ts.solve(decay, y0, 1.0, 0.0, rtol=1e-10, atol=1e-10)
    assert abs(float(sol.x[0]) - math.e) < 1e-8


def test_max_steps_status_instead_of_raise():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="max_steps"):
        ts.solve(decay, y0, 0.0, 10.0, max_steps=5)
    sol = ts.solve(decay, y0, 0.0, 10.0, max_steps=5, on_failure="return")
    assert sol.status == ts.Status.MAX_STEPS and not sol.succeeded
    assert 0 < sol.extras["t"] < 10 and sol.stats.steps == 5


def test_nan_step_is_rejected_and_retried():
    """The field is NaN for large steps' probe points beyond t=0.5 + 0.3: a step that reaches
    there gives NaN and must be rejected, then the solve continues."""
    def f(t, y):
        bad = (torch.as_tensor(t) > 0.8) & (torch.as_tensor(t) < 0.85)
        return torch.where(bad, torch.full_like(y, float("nan")), -y)

    y0 = torch.tensor([1.0], dtype=torch.float64)
    sol = ts.solve(f, y0, 0.0, 0.8, rtol=1e-6, atol=1e-6, dt0=0.5)
    assert torch.isfinite(sol.x).all() and sol.stats.rejected >= 1
    assert abs(float(sol.x[0]) - math.exp(-0.8)) < 1e-5


def test_step_size_underflow_names_time():
    def f(t, y):
        return 1.0 / (0.5 - torch.as_tensor(t, dtype=y.dtype)).abs() * torch.ones_like(y)

    with pytest.raises(RuntimeError, match=r"t=0\.5"):
        ts.solve(f, torch.zeros(1, dtype=torch.float64), 0.0, 1.0)


@pytest.mark.parametrize("controller", ["i", "pi", "pid",
                                        PIDController(1e-8, 1e-8, norm="max")])
def test_controllers_reach_tolerance(controller):
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)

    def vdp(t, y):
        return torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])

    ref = ts.solve(vdp, y0, 0.0, 5.0, solver="dopri8", rtol=1e-12, atol=1e-12).x
    sol = ts.solve(vdp, y0, 0.0, 5.0, rtol=1e-8, atol=1e-8, controller=controller)
    assert float((sol.x - ref).abs().max()) < 1e-6


def test_per_sample_steps_match_individual_solves():
    mus = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)

    def vdp(t, y, mu):
        return torch.stack([y[..., 1], mu * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)

    y0 = torch.tensor([[2.0, 0.0]] * 3, dtype=torch.float64)
    st = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    batch = ts.solve(vdp, y0, 0.0, 3.0, args=(mus,), rtol=1e-8, atol=1e-8,
                     per_sample_steps=True, saveat=st)
    shared = ts.solve(vdp, y0, 0.0, 3.0, args=(mus,), rtol=1e-8, atol=1e-8)
    for i in range(3):
        one = ts.solve(vdp, y0[i:i + 1], 0.0, 3.0, args=(mus[i:i + 1],), rtol=1e-8, atol=1e-8,
                       saveat=st)
        assert float((batch.x[i] - one.x[0]).abs().max()) < 1e-9
        assert float((batch.ys[:, i] - one.ys[:, 0]).abs().max()) < 1e-9
        assert int(batch.stats.accepted[i]) == one.stats.accepted
    assert batch.stats.nfe.shape == (3,)
    # The easy samples take fewer steps than the shared step size forces on them.
    assert int(batch.stats.nfe.sum()) < 3 * shared.stats.nfe


def test_fixed_step_solver_needs_dt():
    with pytest.raises(ValueError, match="dt="):
        ts.solve(decay, torch.ones(1), 0.0, 1.0, solver="rk4")
    sol = ts.solve(decay, torch.ones(1, dtype=torch.float64), 0.0, 1.0, solver="rk4", dt=0.01,
                   saveat=torch.tensor([0.5, 1.0]))
    assert abs(float(sol.ys[0, 0]) - math.exp(-0.5)) < 1e-9


def test_bad_arguments():
    with pytest.raises(ValueError, match="adjoint"):
        ts.solve(decay, torch.ones(1), 0.0, 1.0, adjoint="bogus")
    with pytest.raises(ValueError, match="controller"):
        ts.solve(decay, torch.ones(1), 0.0, 1.0, controller="pd")
    with pytest.raises(ValueError, match="saveat"):
        ts.solve(decay, torch.ones(1), 0.0, 1.0, saveat=[0.5, 2.0])
    with pytest.raises(ValueError, match="unknown solver"):
        ts.solve(decay, torch.ones(1), 0.0, 1.0, solver="nope")


def test_regularisation_statistics_are_differentiable():
    """Pal et al. 2021: the accumulated error and stiffness estimates carry gradients, and the
    stiffness estimate of y' = -lam y approaches lam."""
    lam = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    sol = ts.solve(lambda t, y: -lam * y, torch.ones(2, dtype=torch.float64), 0.0, 1.0,
                   solver="dopri5", rtol=1e-6, atol=1e-9, regularise=True)
    steps = sol.stats.accepted
    assert abs(float(sol.extras["reg_stiffness"].detach()) / steps - 3.0) < 0.1
    (g,) = torch.autograd.grad(sol.extras["reg_error"], lam)
    assert torch.isfinite(g) and float(g) != 0.0


def test_per_sample_float32_time():
    """Per-sample mode with float32 times (devices without float64) solves a float32 problem."""
    y0 = torch.ones(4, 1)
    k = torch.tensor([[0.5], [1.0], [2.0], [4.0]])
    sol = ts.solve(lambda t, y: -k * y, y0, 0.0, 1.0, rtol=1e-5, atol=1e-6,
                   per_sample_steps=True, time_dtype=torch.float32)
    assert sol.extras["t"].dtype == torch.float32
    assert torch.allclose(sol.x, torch.exp(-k), rtol=1e-4)


def test_cli_detest(capsys):
    import argparse

    from timestepper.ode import cli

    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(["detest", "--problems", "A1,B2", "--tol", "1e-6"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "A1" in out and "B2" in out and "total" in out
    args = parser.parse_args(["detest", "--problems", "D1", "--error-control", "global"])
    assert args.func(args) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("D1")][0]
    assert float(row.split()[4]) <= 10  # err/tol: the local solve gives 59


def test_per_sample_max_steps_status():
    k = torch.tensor([[0.1], [50.0]], dtype=torch.float64)
    sol = ts.solve(lambda t, y: -k * torch.sin(k * t.reshape(-1, 1)) * torch.ones_like(y),
                   torch.zeros(2, 1, dtype=torch.float64), 0.0, 5.0, rtol=1e-8, atol=1e-8,
                   per_sample_steps=True, max_steps=40, on_failure="return")
    assert sol.status.tolist() == [ts.Status.SUCCESS, ts.Status.MAX_STEPS]  # the slow one finished
    assert float(sol.extras["t"][0]) == 5.0 and float(sol.extras["t"][1]) < 5.0


def test_a_custom_controller_drives_integrate():
    """A controller is init / next_time / adapt (one protocol, for fixed and adaptive steps): a
    step-halving rule on the raw error drives the same loop as the PID controllers."""
    from timestepper.core.controllers import StepSizeController

    class Halving(StepSizeController):
        def init(self, term, solver, t0, t1, x0, f0):
            return 0.1, 0

        def next_time(self, t, dt):
            return t + dt

        def adapt(self, t0, t1, x0, x1, err, dt):
            ok = float(err.abs().max()) < 1e-8
            return ok, (t1 - t0) * (1.5 if ok else 0.5), False

    sol = ts.integrate(ts.ODETerm(decay), "dopri5", Halving(), torch.ones(1, dtype=torch.float64),
                       t_span=(0.0, 2.0))
    assert abs(float(sol.x[0]) - math.exp(-2)) < 1e-7 and sol.stats.rejected >= 1

"""Issue 12, ts.solve: bad inputs and faults fail early with the exact error naming the problem,
or give the right answer; never a silent wrong result."""

import math
import time

import numpy as np
import pytest
import torch

import timestepper as ts

F64 = torch.float64


def decay(t, y):
    return -y


Y0 = torch.ones(3, dtype=F64)


@pytest.mark.parametrize("field, error, phrase", [
    (lambda t, y: torch.ones(4, 3, dtype=F64), ValueError, r"returned shape \(4, 3\) but the state has shape \(3,\)"),
    (lambda t, y: -y.float(), TypeError, "returned dtype torch.float32 but the state is torch.float64"),
    (lambda t, y: (-y,), TypeError, "returned a tuple but y0 is a tensor"),
    (lambda t, y: {"a": -y}, TypeError, "returned a dict but y0 is a tensor"),
    (lambda t, y: None, TypeError, "must return the structure of y0"),
])
def test_the_fields_first_output_is_checked_against_the_state(field, error, phrase):
    """A broadcasting output used to grow the state step after step until the process died."""
    with pytest.raises(error, match=phrase):
        ts.solve(field, Y0, 0.0, 1.0)


def test_a_nested_state_checks_each_leaf():
    y0 = {"a": torch.ones(2, dtype=F64), "b": torch.zeros(3, dtype=F64)}
    with pytest.raises(ValueError, match=r"\(leaf 1\)"):
        ts.solve(lambda t, y: {"a": -y["a"], "b": torch.zeros(4, dtype=F64)}, y0, 0.0, 1.0)


@pytest.mark.parametrize("kwargs, error, phrase", [
    (dict(y0=torch.tensor([math.nan, 1.0], dtype=F64)), ts.NonFiniteError, "y0 contains 1 NaN/inf"),
    (dict(y0=torch.tensor([math.inf, 1.0], dtype=F64)), ts.NonFiniteError, "y0 contains 1 NaN/inf"),
    (dict(t0=math.nan), ValueError, "t0 must be a finite number, got nan"),
    (dict(t1=math.nan), ValueError, "t1 must be a finite number, got nan"),
    (dict(t1=math.inf), ValueError, "t1 must be a finite number, got inf"),
    (dict(t1=0.0), ValueError, "t0 and t1 must differ"),
    (dict(t1="one"), TypeError, "t1 must be a number, got str"),
    (dict(solver="rk4", dt=0.0), ValueError, "dt must be a positive finite number, got 0.0"),
    (dict(solver="rk4", dt=-0.1), ValueError, "dt must be a positive finite number"),
    (dict(solver="rk4", dt=math.nan), ValueError, "dt must be a positive finite number"),
    (dict(solver="rk4", dt=0.1, saveat=[0.5, 2.0]), ValueError, r"saveat times must lie in \[0, 1\]"),
    (dict(saveat=[0.5, 2.0]), ValueError, r"saveat times must lie in \[0, 1\]"),
    (dict(solver="rk4", dt=0.1, saveat=[0.5, 0.2]), ValueError, "monotone"),
])
def test_bad_inputs_are_refused_naming_the_argument(kwargs, error, phrase):
    args = dict(y0=Y0, t0=0.0, t1=1.0)
    args.update(kwargs)
    with pytest.raises(error, match=phrase):
        ts.solve(decay, args.pop("y0"), args.pop("t0"), args.pop("t1"), **args)


def test_fixed_step_save_times_inside_the_span_are_honoured():
    sol = ts.solve(decay, Y0, 0.0, 1.0, solver="rk4", dt=0.1, saveat=[0.25, 1.0])
    assert sol.ts.tolist() == [0.25, 1.0]
    assert torch.allclose(sol.ys[:, 0], torch.exp(-torch.tensor([0.25, 1.0], dtype=F64)), atol=1e-6)


@pytest.mark.parametrize("solver", ["tsit5", "dopri5", "rk-heun"])
def test_a_field_that_returns_nan_raises_nonfinite_naming_the_time(solver):
    """Never 'step size underflow' or 'success with zero steps'."""
    def field(t, y):
        return -y if t < 0.5 else y * math.nan

    with pytest.raises(ts.NonFiniteError, match=r"proposals from t=0\.[45]\d* were NaN/inf"):
        ts.solve(field, Y0, 0.0, 1.0, solver=solver)


def test_a_field_that_is_nan_at_the_start_raises_nonfinite_at_t0():
    with pytest.raises(ts.NonFiniteError, match="vector field returned NaN/inf at t=0"):
        ts.solve(lambda t, y: y * math.nan, Y0, 0.0, 1.0)


def test_on_failure_return_gives_the_last_finite_state_and_status():
    def field(t, y):
        return -y if t < 0.5 else y * math.nan

    sol = ts.solve(field, Y0, 0.0, 1.0, on_failure="return")
    assert sol.status == ts.Status.NONFINITE
    assert torch.isfinite(sol.x).all() and 0.4 < sol.extras["t"] < 0.5 + 1e-9


def test_per_sample_mode_stops_a_nonfinite_sample_at_once_and_finishes_the_others():
    """It used to spin until max_steps (minutes on a real model)."""
    bad = torch.tensor([True, False, False])

    def field(t, y):
        return torch.where(bad[:, None], y * math.nan, -y)

    start = time.perf_counter()
    sol = ts.solve(field, torch.ones(3, 2, dtype=F64), 0.0, 1.0, per_sample_steps=True,
                   on_failure="return")
    assert time.perf_counter() - start < 10
    assert sol.status.tolist() == [ts.Status.NONFINITE, ts.Status.SUCCESS, ts.Status.SUCCESS]
    assert int(sol.stats.steps[0]) <= 12  # 10 NaN proposals in a row, not max_steps
    assert torch.allclose(sol.x[1:], torch.full((2, 2), math.exp(-1.0), dtype=F64), rtol=1e-5)
    with pytest.raises(ts.NonFiniteError, match="sample 0: the proposals from t=0 were NaN/inf"):
        ts.solve(field, torch.ones(3, 2, dtype=F64), 0.0, 1.0, per_sample_steps=True)


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_closure_tensors_requiring_grad_get_their_gradient(adjoint):
    """A closure over a tensor requiring grad used to get no gradient (and backward failed with
    'element 0 of tensors does not require grad'): it is now collected automatically."""
    w = torch.tensor([0.5, 1.0, 2.0], dtype=F64, requires_grad=True)
    sol = ts.solve(lambda t, y: -w * y, Y0, 0.0, 1.0, adjoint=adjoint, rtol=1e-9, atol=1e-12)
    sol.x.sum().backward()
    expected = -torch.exp(-w.detach())  # d/dw exp(-w t) at t = 1
    assert torch.allclose(w.grad, expected, rtol=1e-5)


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_a_closure_tensor_missing_from_explicit_adjoint_params_is_refused(adjoint):
    w = torch.tensor([0.5, 1.0, 2.0], dtype=F64, requires_grad=True)
    v = torch.tensor(0.1, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match=r"f depends on 1 tensor of shape \(3,\) .* not in adjoint_params"):
        ts.solve(lambda t, y: -w * y + v, Y0, 0.0, 1.0, adjoint=adjoint, adjoint_params=[v])


def test_a_closure_gradient_is_the_same_as_direct_backpropagation():
    w = torch.tensor([0.5, 1.0, 2.0], dtype=F64, requires_grad=True)
    grads = []
    for adjoint in ("direct", "checkpoint"):
        w.grad = None
        ts.solve(lambda t, y: -w * y * torch.sin(y), Y0, 0.0, 1.0, adjoint=adjoint).x.sum().backward()
        grads.append(w.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-10)


def van_der_pol(mu):
    def field(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])
    return field


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_a_stiff_problem_stops_fast_and_names_the_implicit_solvers(solver):
    """Van der Pol mu = 1e3 with an explicit solver used to crawl until max_steps (147 s)."""
    start = time.perf_counter()
    with pytest.raises(ts.StiffnessError, match="looks stiff at t=.*use an implicit solver \\(.*rosenbrock23"):
        ts.solve(van_der_pol(1e3), torch.tensor([2.0, 0.0], dtype=F64), 0.0, 3000.0, solver=solver)
    assert time.perf_counter() - start < 20


def test_max_steps_of_an_explicit_solver_names_the_implicit_solvers():
    with pytest.raises(ts.MaxStepsError, match="max_steps=2000 reached.*try an implicit solver \\(.*rosenbrock23"):
        ts.solve(van_der_pol(1e3), torch.tensor([2.0, 0.0], dtype=F64), 0.0, 3000.0, solver="bosh3",
                 max_steps=2000)


def test_the_stiffness_test_does_not_fire_on_a_long_nonstiff_solve():
    """A harmonic oscillator over many periods takes thousands of steps at the accuracy limit,
    not the stability limit: no false alarm."""
    sol = ts.solve(lambda t, y: torch.stack([y[1], -y[0]]), torch.tensor([1.0, 0.0], dtype=F64), 0.0,
                   2000.0, solver="tsit5", rtol=1e-8, atol=1e-10)
    assert sol.stats.accepted > 2000
    assert abs(float(sol.x[0]) - math.cos(2000.0)) < 1e-3


def test_the_implicit_solver_then_solves_it():
    sol = ts.solve(van_der_pol(1e3), torch.tensor([2.0, 0.0], dtype=F64), 0.0, 10.0, solver="rosenbrock23")
    assert sol.status == ts.Status.SUCCESS and sol.stats.nfe < 2000


def test_numpy_integers_are_accepted_for_counts():
    sol = ts.solve(decay, Y0, 0.0, 1.0, max_steps=np.int64(100))
    assert sol.status == ts.Status.SUCCESS

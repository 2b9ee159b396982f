"""The integrate loop and the registry: errors, stats, adaptive stepping."""

import math

import pytest
import torch

import timestepper as ts
from timestepper.core.controllers import IController


def test_registry_lists_and_rejects_unknown_names():
    names = ts.solvers.available()
    for n in ("euler", "heun", "ddim", "dpmpp-2m"):
        assert n in names
    with pytest.raises(ValueError, match="unknown solver 'nope'.*dpmpp-2m"):
        ts.solvers.get("nope")
    with pytest.raises(TypeError, match="bad options for solver 'ddim'"):
        ts.solvers.get("ddim", order=7)
    s = ts.solvers.get("dpmpp-2m", lower_order_final=False)
    assert ts.solvers.get(s) is s


def test_fixed_grid_rk4_exponential_and_stats():
    term = ts.ODETerm(lambda t, y: -y)
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)
    sol = ts.integrate(term, "rk4", grid, torch.ones(3, dtype=torch.float64), saveat=ts.SaveAt(steps=True))
    assert abs(float(sol.x[0]) - math.exp(-1)) < 1e-6
    assert sol.stats.nfe == 40 and sol.stats.steps == 10
    assert sol.ys.shape == (11, 3)


def test_adaptive_dopri5_reaches_tolerance():
    term = ts.ODETerm(lambda t, y: torch.stack([y[1], -y[0]]))
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    sol = ts.integrate(term, "dopri5", IController(rtol=1e-9, atol=1e-12), y0, t_span=(0.0, 10.0))
    assert abs(float(sol.x[0]) - math.cos(10.0)) < 1e-7
    assert sol.stats.accepted > 0 and float(sol.ts[-1]) == 10.0


def test_grid_must_be_monotone_and_controller_needs_span():
    term = ts.ODETerm(lambda t, y: y)
    with pytest.raises(ValueError, match="strictly monotone"):
        ts.integrate(term, "rk4", torch.tensor([0.0, 1.0, 0.5]), torch.ones(1))
    with pytest.raises(ValueError, match="t_span"):
        ts.integrate(term, "dopri5", IController(), torch.ones(1))
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        ts.integrate(term, "rk4", torch.tensor([0.0, 1.0]), [1.0])


def test_nan_raises_with_step_and_time():
    calls = {"n": 0}

    def f(t, y):
        calls["n"] += 1
        return y * (math.nan if t >= 0.5 else 1.0)

    with pytest.raises(ts.NonFiniteError, match=r"step 4 \(from t=0.4 to t=0.5\)"):
        ts.integrate(ts.ODETerm(f), "rk4", torch.linspace(0, 1, 11), torch.ones(2))
    out = ts.integrate(ts.ODETerm(f), "rk4", torch.linspace(0, 1, 11), torch.ones(2), check_finite=False)
    assert torch.isnan(out.x).all()


def _decay():
    return ts.ODETerm(lambda t, y: -y)


def test_status_codes_and_on_failure_return():
    """One status enum for every way a solve ends; on_failure='return' hands back the state."""
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)
    blow_up = ts.ODETerm(lambda t, y: y * y * 1e30)
    sol = ts.integrate(blow_up, "rk4", grid, torch.ones(2, dtype=torch.float64), on_failure="return")
    assert sol.status == ts.Status.NONFINITE and not sol.succeeded and sol.x.shape == (2,)
    with pytest.raises(ts.NonFiniteError) as info:
        ts.integrate(blow_up, "rk4", grid, torch.ones(2, dtype=torch.float64))
    assert info.value.status == ts.Status.NONFINITE and isinstance(info.value, ts.SolveError)
    sol = ts.integrate(_decay(), "dopri5", IController(1e-12, 1e-12), torch.ones(1, dtype=torch.float64),
                       t_span=(0.0, 10.0), max_steps=3, on_failure="return")
    assert sol.status == ts.Status.MAX_STEPS and sol.stats.steps == 3 and 0 < sol.extras["t"] < 10
    with pytest.raises(ts.MaxStepsError, match="max_steps=3"):
        ts.integrate(_decay(), "dopri5", IController(1e-12, 1e-12), torch.ones(1, dtype=torch.float64),
                     t_span=(0.0, 10.0), max_steps=3)
    assert ts.integrate(_decay(), "rk4", grid, torch.ones(1)).status == ts.Status.SUCCESS


def test_saveat_steps_times_and_dense():
    y0 = torch.ones(1, dtype=torch.float64)
    ctrl = IController(1e-10, 1e-12)
    steps = ts.integrate(_decay(), "tsit5", ctrl, y0, t_span=(0.0, 2.0), saveat=ts.SaveAt(steps=True))
    assert torch.equal(steps.ts, steps.extras["step_ts"]) and steps.ys.shape == (len(steps.ts), 1)
    torch.testing.assert_close(steps.ys[:, 0], torch.exp(-steps.ts), rtol=1e-8, atol=0)
    times = torch.tensor([0.0, 0.3, 1.7, 2.0], dtype=torch.float64)
    at = ts.integrate(_decay(), "tsit5", ctrl, y0, t_span=(0.0, 2.0), saveat=times)
    torch.testing.assert_close(at.ys[:, 0], torch.exp(-times), rtol=1e-8, atol=0)
    dense = ts.integrate(_decay(), "tsit5", ctrl, y0, t_span=(0.0, 2.0), saveat=ts.SaveAt(dense=True))
    for t in (0.0, 0.123, 1.0, 1.999, 2.0):
        assert abs(float(dense.interpolation(t)[0]) - math.exp(-t)) < 1e-8, t
    with pytest.raises(ValueError, match="outside the solved interval"):
        dense.interpolation(2.5)
    # a solver without an interpolant lands on the save times instead
    landed = ts.integrate(_decay(), "rk-heun", IController(1e-8, 1e-10), y0, t_span=(0.0, 2.0), saveat=times)
    assert set(times.tolist()) <= set(landed.extras["step_ts"].tolist())


def test_saving_errors_name_the_problem():
    y0 = torch.ones(2, 1, dtype=torch.float64)
    grid = torch.linspace(0, 1, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="save times must be grid points; 0.3 is not"):
        ts.integrate(_decay(), "rk4", grid, y0, saveat=[0.3])
    with pytest.raises(ValueError, match="SaveAt\\(dense=True\\) needs a solver with dense output; 'rk4'"):
        ts.integrate(_decay(), "rk4", grid, y0, saveat=ts.SaveAt(dense=True))
    with pytest.raises(ValueError, match="give either ts= or steps=True"):
        ts.SaveAt(ts=[0.5], steps=True)
    with pytest.raises(ValueError, match="per-sample mode saves at given times only"):
        ts.integrate(_decay(), "tsit5", IController(), y0, t_span=(0.0, 1.0), per_sample=True,
                     saveat=ts.SaveAt(steps=True))
    with pytest.raises(ValueError, match="per-sample steps need an adaptive step-size controller"):
        ts.integrate(_decay(), "tsit5", grid, y0, per_sample=True)
    with pytest.raises(ValueError, match="t_span .* differs from the grid's ends"):
        ts.integrate(_decay(), "rk4", grid, y0, t_span=(0.0, 2.0))


def test_fixed_grid_step_is_the_solvers_step_and_backwards_in_time():
    """A fixed grid runs the solver's own step at each pair of grid points, in either direction."""
    y1 = torch.tensor([0.5], dtype=torch.float64)
    back = ts.integrate(_decay(), "rk4", torch.linspace(1, 0, 41, dtype=torch.float64), y1)
    assert abs(float(back.x) - 0.5 * math.e) < 1e-8 and back.stats.accepted == 40  # RK4, h = 1/40


def test_wrong_term_lists_the_solvers_that_fit():
    with pytest.raises(TypeError, match="solvers for an ODETerm: .*rk-heun"):
        ts.integrate(_decay(), "heun", torch.linspace(0, 1, 3), torch.ones(1))

"""The compiled fixed-grid loop (:mod:`timestepper.loop.grid_device`): the steps after the first of
a uniform table run in one ``while_loop`` graph, with the eager loop's results, evaluations and
NaN/inf report; anything else (non-uniform tables, saving, a loop that cannot be captured) runs
the host loop. ``aot_eager`` traces the same graphs without code generation."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import timestepper as ts
from timestepper.diffusion.term import DiffusionTerm
from timestepper.loop.compiled import CompileFallbackWarning

F64 = torch.float64
FAST = {"backend": "aot_eager"}


def _vdp():
    mu = torch.linspace(0.5, 3.0, 5, dtype=F64)

    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=1)

    y0 = torch.zeros(5, 2, dtype=F64)
    y0[:, 0] = 2.0
    return ts.ODETerm(f), y0


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        return fn()


@pytest.mark.parametrize("solver", ["rk4", "dopri5", "midpoint"])
def test_runge_kutta_on_a_grid_runs_in_the_loop_and_matches_eager(solver):
    term, y0 = _vdp()
    grid = torch.linspace(0.0, 2.0, 41, dtype=F64) ** 1.5  # not uniform: the times come from the grid
    eager = ts.integrate(term, solver, grid, y0)
    looped = _quiet(lambda: ts.integrate(term, solver, grid, y0, compile=FAST))
    assert looped.extras["loop_steps"] == 39
    assert torch.allclose(looped.x, eager.x, rtol=1e-12, atol=1e-12)
    assert looped.stats.nfe == eager.stats.nfe and looped.stats.accepted == eager.stats.accepted == 40
    assert torch.equal(looped.ts, eager.ts)


def _ks_in_the_loop(compile, tol):
    """KS ETDRK4 on a uniform grid, compiled and eager: the steps after the first in the loop."""
    eq = ts.pde.KuramotoSivashinsky(length=32.0, n=64)
    u0 = ts.pde.data.initial_conditions(eq, range(3), seed=0, stream=0).to(F64)
    term, x0 = eq.term(F64), eq.to_spectral(u0)
    grid = torch.linspace(0.0, 2.0, 9, dtype=F64)
    eager = ts.integrate(term, "etdrk4", grid, x0)
    looped = _quiet(lambda: ts.integrate(term, "etdrk4", grid, x0, compile=compile))
    assert looped.extras["loop_steps"] == 7
    assert torch.allclose(looped.x, eager.x, rtol=tol, atol=tol)
    return eq, u0


def test_pde_simulate_runs_in_the_loop():
    eq, u0 = _ks_in_the_loop(FAST, 1e-12)
    assert _quiet(lambda: eq.simulate(u0, t_end=1.0, dt=0.25, compile=FAST)).shape == u0.shape


@pytest.mark.parametrize("bad_step", [0, 6])
def test_nan_is_reported_at_the_step_where_it_appeared(bad_step):
    grid = torch.linspace(0.0, 1.0, 11, dtype=F64)
    start = float(grid[bad_step])

    def f(t, y):  # NaN from the midpoint stage of the step that starts at `start` on
        return torch.where(torch.as_tensor(t >= start + 0.05 - 1e-12), y * math.nan, -y)

    y0 = torch.ones(3, 2, dtype=F64)
    message = f"state became NaN/inf at step {bad_step} .from t={start:.6g} to t={float(grid[bad_step + 1]):.6g}"
    with pytest.raises(ts.NonFiniteError, match=message):
        ts.integrate(ts.ODETerm(f), "rk4", grid, y0)
    with pytest.raises(ts.NonFiniteError, match=message):
        _quiet(lambda: ts.integrate(ts.ODETerm(f), "rk4", grid, y0, compile=FAST))
    sol = _quiet(lambda: ts.integrate(ts.ODETerm(f), "rk4", grid, y0, compile=FAST, on_failure="return"))
    assert sol.status == ts.Status.NONFINITE and sol.extras["loop_steps"] == 9
    unchecked = _quiet(lambda: ts.integrate(ts.ODETerm(f), "rk4", grid, y0, compile=FAST, check_finite=False))
    assert unchecked.status == ts.Status.SUCCESS and torch.isnan(unchecked.x).all()


def test_what_the_loop_does_not_serve_runs_the_host_loop():
    term, y0 = _vdp()
    grid = torch.linspace(0.0, 1.0, 11, dtype=F64)
    saved = _quiet(lambda: ts.integrate(term, "rk4", grid, y0, saveat=grid[::5], compile=FAST))
    assert "loop_steps" not in saved.extras and saved.ys.shape == (3, 5, 2)
    calls = []
    watched = _quiet(lambda: ts.integrate(term, "rk4", grid, y0, compile=FAST, callback=lambda *a: calls.append(a)))
    assert "loop_steps" not in watched.extras and len(calls) == 10
    # PNDM's warm-up steps call the model at their end points (no stacked rows): one compiled
    # call per step
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den = ts.Denoiser(lambda x, t: 0.3 * x, sched, "epsilon")
    with torch.no_grad():
        out = _quiet(lambda: ts.integrate(DiffusionTerm(den), "plms", ts.make_grid(sched, 6, "logsnr"),
                                          torch.ones(2, 3, dtype=F64), compile=FAST))
    assert "loop_steps" not in out.extras


STACKING = [n for n in ts.solvers.available() if ts.solvers.get(n).stacks_rows]


def test_the_multistep_diffusion_solvers_declare_stacked_rows():
    assert {"dpmpp-2m", "dpmpp-3m", "dpm-solver-2m", "deis", "lms", "unipc-bh1", "unipc-bh2"} <= set(STACKING)
    assert not {"dc-unipc", "ts-dpmpp-2m", "sde-dpmpp-2m", "pndm"} & set(STACKING)


def _eager_and_looped(solver, dtype, steps):
    """A small network's sampling with ``solver``, eager and compiled (``aot_eager``)."""
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2)).to(dtype)
    den = ts.Denoiser(lambda x, t: net(torch.cat([x, (t / 1000)[:, None].to(x.dtype)], 1)), sched, "epsilon")
    noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=dtype)
    grid = ts.make_grid(sched, steps, "logsnr")
    with torch.no_grad():
        eager = ts.integrate(DiffusionTerm(den), solver, grid, noise)
        looped = _quiet(lambda: ts.integrate(DiffusionTerm(den), solver, grid, noise, compile=FAST))
    return eager, looped


@pytest.mark.parametrize("solver", STACKING)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_multistep_diffusion_sampling_runs_every_step_in_the_loop(solver, dtype):
    """Every solver declaring ``stacks_rows``: the rows stacked as tensors (the warm-up's missing
    weights as zeros), every step in the loop, the eager result to rounding, one model call per
    step."""
    eager, looped = _eager_and_looped(solver, dtype, 7)
    assert looped.extras["loop_steps"] == 7 and looped.stats.nfe == eager.stats.nfe == 7
    tol = 1e-12 if dtype == F64 else 1e-5
    assert torch.allclose(looped.x, eager.x, rtol=tol, atol=tol)


@pytest.mark.parametrize("options", [dict(order=3), dict(order=1), dict(order=2, disable_corrector=(1, 3)),
                                     dict(order=3, variant="bh1", lower_order_final=False)])
def test_unipc_options_stack_to_the_eager_steps(options):
    """UniPC's stacked rows: the corrector's and predictor's weights padded with zeros, a step
    without correction keeping its state (``keep``), for every order and corrector setting."""
    from timestepper.solvers.unipc import UniPC

    eager, looped = _eager_and_looped(UniPC(**options), F64, 8)
    assert looped.extras["loop_steps"] == 8
    assert torch.allclose(looped.x, eager.x, rtol=1e-12, atol=1e-12)


def test_a_model_returning_a_tensor_it_holds_is_copied_into_the_history():
    """The loop may not return a tensor it did not make: the history of a model that returns the
    same tensor every call is copied (it would alias the loop's input)."""
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    data = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    den = ts.Denoiser(lambda x, t: data, sched, "sample")
    grid = ts.make_grid(sched, 6, "karras")
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        eager = ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, noise)
        looped = _quiet(lambda: ts.integrate(DiffusionTerm(den), "dpmpp-2m", grid, noise, compile=FAST))
    assert looped.extras["loop_steps"] == 6
    assert torch.equal(looped.x, eager.x)


def test_a_table_whose_rows_differ_runs_the_host_loop():
    """Adams-Bashforth's weights change through its warm-up: its table is not uniform."""
    term, y0 = ts.ODETerm(lambda t, y: -y), torch.ones(3, 2, dtype=F64)
    grid = torch.linspace(0.0, 1.0, 21, dtype=F64)
    eager = ts.integrate(term, "adams-bashforth", grid, y0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompileFallbackWarning)  # its warm-up steps specialise
        got = ts.integrate(term, "adams-bashforth", grid, y0, compile=FAST)
    assert "loop_steps" not in got.extras
    assert torch.allclose(got.x, eager.x, rtol=1e-12, atol=1e-12)


def test_a_loop_that_cannot_be_captured_is_remembered_and_the_solve_goes_on():
    from timestepper.loop import grid_device

    def host_read(t, y):
        if float(y.abs().max().item()) > 1e6:  # a host read: no graph of it
            raise RuntimeError("blow-up")
        return -y

    grid = torch.linspace(0.0, 1.0, 11, dtype=F64)
    y0 = torch.ones(3, 2, dtype=F64)
    before = len(grid_device.LOOPS.uncaptured)
    for _ in range(2):
        with pytest.warns(CompileFallbackWarning, match="running it eagerly"):
            got = ts.integrate(ts.ODETerm(host_read), "rk4", grid, y0, compile=FAST)
        assert "loop_steps" not in got.extras
        assert torch.allclose(got.x, ts.integrate(ts.ODETerm(host_read), "rk4", grid, y0).x, rtol=1e-13)
    assert len(grid_device.LOOPS.uncaptured) == before + 1  # tried once, then remembered


@pytest.mark.slow
def test_inductor_loop_with_cpp_wrapper_on_a_spectral_state():
    _ks_in_the_loop(True, 1e-11)

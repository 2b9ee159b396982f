"""Time-Shift Sampler (Li et al., ICLR 2024): ts-ddim, ts-dpmpp-2m, ts-dpm-solver-2m.

* With the shift disabled (cutoff above every grid time) each one is its base solver bit for bit;
  with window 0 (every shifted step takes its one candidate, through the per-sample path) it
  equals the base solver to float64 rounding.
* The rule: a model that logs its inputs shows that each sample is evaluated at the window time
  whose noise level matches that sample's own state variance (recomputed here from the schedule),
  so two samples of different variance get different times; the updates are replayed with the
  published DDIM / DPM-Solver++(2M) formulas from the logged, shifted log-SNRs.
* No host synchronisation in a step, and the steps trace into one graph under torch.compile.
"""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.diffusion.term import DiffusionTerm
from timestepper.solvers.dpmpp import DPMSolverMultistep
from timestepper.solvers.time_shift import TimeShiftSampler

from .test_no_host_sync import _SyncRecorder

F64 = torch.float64
BASES = [("ts-ddim", "dpm-solver-1-data"), ("ts-dpmpp-2m", "dpmpp-2m"), ("ts-dpm-solver-2m", "dpm-solver-2m")]


def _base(name):
    return DPMSolverMultistep(order=1, prediction="data") if name == "dpm-solver-1-data" else ts.solvers.get(name)


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixture.random(16, 4, seed=2, spread=0.5)


def _mixture(d):
    return GaussianMixture.random(d, 4, seed=2, spread=0.5)


def _noise(n=6, d=16, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("ts_name,base", BASES)
@pytest.mark.parametrize("schedule", ["vp-discrete", "flow"])
def test_disabled_shift_is_the_base_solver_bit_for_bit(mixture, ts_name, base, schedule):
    sched, kind = ((ts.VPDiscreteSchedule.from_betas("linear"), "epsilon") if schedule == "vp-discrete"
                   else (ts.RectifiedFlowSchedule(), "velocity"))
    den = mixture.denoiser(sched, kind, shared_time=False)
    grid = "logsnr" if schedule == "vp-discrete" else "uniform"
    for steps in (1, 3, 8):
        want = ts.sample(den, _noise(), _base(base), steps=steps, grid=grid)
        off = ts.sample(den, _noise(), ts_name, steps=steps, grid=grid, solver_options={"cutoff": 1e9})
        assert torch.equal(off, want), (ts_name, steps)
        w0 = ts.sample(den, _noise(), ts_name, steps=steps, grid=grid, solver_options={"window": 0})
        torch.testing.assert_close(w0, want, rtol=1e-13, atol=1e-13)


def test_ts_ddim_is_ddim(mixture):
    den = mixture.denoiser(ts.VPDiscreteSchedule.from_betas("linear"), "epsilon", shared_time=False)
    for steps in (2, 6):
        got = ts.sample(den, _noise(), "ts-ddim", steps=steps, solver_options={"window": 0})
        torch.testing.assert_close(got, ts.sample(den, _noise(), "ddim", steps=steps), rtol=1e-13, atol=1e-13)


class _Logger:
    """Wraps a model: records every call's state and per-sample time."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, x, t):
        self.calls.append((x.clone(), t.clone()))
        return self.fn(x, t)


def _expected_times(sched, t_nominal, x, window, cutoff):
    """The rule written out: the time of ``t_nominal +- window // 2`` (integer timesteps) whose
    ``sigma^2`` is nearest each sample's unbiased variance (no shift at or below the cutoff)."""
    if t_nominal <= cutoff:
        return [t_nominal] * x.shape[0]
    cands = [t_nominal + k for k in range(-(window // 2), window // 2 + 1)]
    out = []
    for v in x.var(dim=1).tolist():
        out.append(min(cands, key=lambda tau: abs(v - float(sched.sigma(torch.tensor(tau, dtype=F64))) ** 2)))
    return out


def _logged(d, noise, name, grid, options):
    """Sample with a data-predicting mixture model that logs its calls: (model, log, result)."""
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    inner = _mixture(d).denoiser(sched, "sample", shared_time=False)
    log = _Logger(inner.model_fn)
    x_end = ts.sample(ts.Denoiser(log, sched, "sample"), noise, name, grid=ts.make_grid(sched, *grid),
                      solver_options=options)
    return inner, log, x_end


def _sigma_alpha_lambda(sched, t):
    a, s = (float(v) for v in sched.alpha_sigma(torch.tensor(t, dtype=F64)))
    return a, s, math.log(a / s)


def test_each_sample_gets_the_time_matching_its_variance_and_the_ddim_update():
    # Two samples whose states differ in variance take different shifted times; every update is
    # DDIM (eq. 12) from the logged shifted time to the nominal next grid time.
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    noise = _noise(2, 256, seed=3)
    noise[1] *= 0.9  # a smaller-variance sample
    window, cutoff = 60, 200.0
    grid = ts.make_grid(sched, 5, "uniform")
    inner, log, x_end = _logged(256, noise, "ts-ddim", (5, "uniform"), {"window": window, "cutoff": cutoff})
    t_grid = grid.t.tolist()
    assert len(log.calls) == 5
    assert log.calls[0][1].tolist() == [t_grid[0]] * 2  # the first step is never shifted
    shifted_differently = False
    for i, (x, t) in enumerate(log.calls):
        if i > 0:
            want = _expected_times(sched, t_grid[i], x, window, cutoff)
            assert t.tolist() == pytest.approx(want, abs=1e-9), i
            shifted_differently |= want[0] != want[1]
        x_next = log.calls[i + 1][0] if i + 1 < len(log.calls) else x_end
        for b in range(2):
            _, s_s, lam_s = _sigma_alpha_lambda(sched, float(t[b]))
            x0 = inner.model_fn(x[b:b + 1], t[b:b + 1])[0]
            if i + 1 < grid.steps:
                a1, s1, lam1 = _sigma_alpha_lambda(sched, t_grid[i + 1])
                want_x = s1 / s_s * x[b] - a1 * math.expm1(-(lam1 - lam_s)) * x0
            else:
                want_x = x0  # the last step goes to zero noise
            torch.testing.assert_close(x_next[b], want_x, rtol=1e-10, atol=1e-10)
    assert shifted_differently


def test_dpmpp_2m_weights_use_the_shifted_log_snrs():
    # DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2) replayed per sample with the logged times:
    # h = lambda_next - lambda_s, r = (lambda_s - lambda_prev) / h, both from shifted times.
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    noise = _noise(3, 128, seed=4)
    noise[1] *= 1.1
    noise[2] *= 0.9
    grid = ts.make_grid(sched, 6, "uniform")
    inner, log, x_end = _logged(128, noise, "ts-dpmpp-2m", (6, "uniform"), {"window": 50, "cutoff": 100.0})
    t_grid = grid.t.tolist()
    orders = [1, 2, 2, 2, 2, 1]  # lower_order_final on a short grid; the last step to zero is first order
    assert len({float(t) for t in log.calls[2][1]}) > 1  # the samples were shifted differently
    for i in range(1, grid.steps - 1):
        x, t = log.calls[i]
        x_next = log.calls[i + 1][0]
        t_prev = log.calls[i - 1][1]
        for b in range(3):
            _, s_s, lam_s = _sigma_alpha_lambda(sched, float(t[b]))
            _, _, lam_p = _sigma_alpha_lambda(sched, float(t_prev[b]))
            a1, s1, lam1 = _sigma_alpha_lambda(sched, t_grid[i + 1])
            h = lam1 - lam_s
            d0 = inner.model_fn(x[b:b + 1], t[b:b + 1])[0]
            d1 = inner.model_fn(log.calls[i - 1][0][b:b + 1], t_prev[b:b + 1])[0]
            d = d0 if orders[i] == 1 else d0 + (d0 - d1) / (2 * ((lam_s - lam_p) / h))
            want = s1 / s_s * x[b] - a1 * math.expm1(-h) * d
            torch.testing.assert_close(x_next[b], want, rtol=1e-10, atol=1e-10)
    assert torch.isfinite(x_end).all()


def test_samples_are_independent_of_their_batch():
    den = _mixture(64).denoiser(ts.VPDiscreteSchedule.from_betas("linear"), "epsilon", shared_time=False)
    noise = _noise(4, 64, seed=5) * torch.tensor([1.0, 1.2, 0.8, 1.05], dtype=F64)[:, None]
    opts = {"window": 40, "cutoff": 100.0}
    for name in ("ts-ddim", "ts-dpmpp-2m"):
        whole = ts.sample(den, noise, name, steps=7, grid="uniform", solver_options=opts)
        for b in range(4):
            alone = ts.sample(den, noise[b:b + 1], name, steps=7, grid="uniform", solver_options=opts)
            torch.testing.assert_close(whole[b:b + 1], alone, rtol=1e-12, atol=1e-12)


def _steps(mixture, name):
    den = mixture.denoiser(ts.VPDiscreteSchedule.from_betas("linear"), "epsilon", shared_time=False)
    grid = ts.make_grid(den.schedule, 8, "logsnr")
    solver = ts.solvers.get(name, window=20)
    term = DiffusionTerm(den)
    x = _noise(5, 16)
    state, table = solver.init(term, grid, x)  # once per grid, outside the steps
    assert any(type(r).__name__ == "ShiftedRow" for r in table)
    times = grid.t.tolist()

    def loop(y):
        st = state
        for i in range(grid.steps):
            y, st, _, _ = solver.step(term, times[i], times[i + 1], y, st, table[i])
        return y

    return loop, x


@pytest.mark.parametrize("name", ["ts-ddim", "ts-dpmpp-2m", "ts-dpm-solver-2m"])
def test_steps_do_not_sync(mixture, name):
    loop, x = _steps(mixture, name)
    rec = _SyncRecorder()
    with rec:
        y = loop(x)
    assert rec.syncs == 0
    assert torch.isfinite(y).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ts-ddim", "ts-dpmpp-2m"])
def test_steps_compile_into_one_graph(mixture, name):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    loop, x = _steps(mixture, name)
    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(loop, fullgraph=True, backend="eager")(x)
    torch.testing.assert_close(got, loop(x), rtol=1e-12, atol=1e-12)


def test_bad_options_are_refused_naming_them():
    with pytest.raises(ValueError, match="window must be an integer >= 0, got -1"):
        TimeShiftSampler(window=-1)
    with pytest.raises(ValueError, match="window must be an integer >= 0, got 2.5"):
        TimeShiftSampler(window=2.5)
    with pytest.raises(ValueError, match="time_step must be > 0"):
        TimeShiftSampler(time_step=0.0)
    with pytest.raises(ValueError, match="data_variance must be >= 0"):
        TimeShiftSampler(data_variance=-0.1)
    with pytest.raises(ValueError, match="window=400 with order 2 tabulates 160801"):
        ts.solvers.get("ts-dpmpp-2m", window=400)


def test_kept_out_of_the_fixed_grid_enumerations():
    # Data-dependent model times: not a diffusers step-protocol solver (the pipeline supplies the
    # model output at the nominal time), not a fixed-grid convergence candidate.
    from timestepper.bench.runner import deterministic_solvers
    from timestepper.integrations.diffusers.scheduler import Scheduler, scheduler_solvers

    for name in ("ts-ddim", "ts-dpmpp-2m", "ts-dpm-solver-2m", "ts-unipc-bh1", "ts-unipc-bh2"):
        assert name not in scheduler_solvers() and name not in deterministic_solvers()
    with pytest.raises(ValueError, match="'ts-ddim' calls the model at data-dependent times off the grid"):
        Scheduler(ts.VPDiscreteSchedule.from_betas("linear"), solver="ts-ddim")

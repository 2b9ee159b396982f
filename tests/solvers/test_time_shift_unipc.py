"""Time-Shift UniPC (the Time-Shift Sampler's rule on UniPC): ts-unipc-bh1, ts-unipc-bh2.

* With the shift disabled each one is UniPC bit for bit; with window 0 it equals UniPC to float64
  rounding, for predictor orders 1-3.
* The first-order replay: a model that logs its calls shows each sample evaluated at its shifted
  time, and every state is UniC-1 (with the new output's offset ``r`` from the shifted log-SNRs)
  followed by UniP-1 from the shifted start, written out from the paper's formulas.
* The tabulated UniC weights of every candidate combination integrate polynomials in the
  log-SNR of degree <= the corrector's order exactly, from the shifted start to the nominal end
  with the nodes at their shifted log-SNRs (the defining property of UniC's system).
* No host synchronisation in a step; samples do not depend on their batch.
"""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.diffusion.term import DiffusionTerm
from timestepper.solvers.time_shift_unipc import ShiftedUniPCRow, TimeShiftUniPC

from .test_no_host_sync import _SyncRecorder
from .test_time_shift import _Logger

F64 = torch.float64
VARIANTS = ("bh1", "bh2")


def _mixture(d=16):
    return GaussianMixture.random(d, 4, seed=2, spread=0.5)


def _noise(n=6, d=16, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("schedule", ["vp-discrete", "flow"])
def test_disabled_shift_is_unipc(variant, order, schedule):
    sched, kind = ((ts.VPDiscreteSchedule.from_betas("linear"), "epsilon") if schedule == "vp-discrete"
                   else (ts.RectifiedFlowSchedule(), "velocity"))
    den = _mixture().denoiser(sched, kind, shared_time=False)
    grid = "logsnr" if schedule == "vp-discrete" else "uniform"
    for steps in (1, 3, 8):
        want = ts.sample(den, _noise(), f"unipc-{variant}", steps=steps, grid=grid, solver_options={"order": order})
        off = ts.sample(den, _noise(), f"ts-unipc-{variant}", steps=steps, grid=grid,
                        solver_options={"order": order, "cutoff": 1e9})
        assert torch.equal(off, want), (variant, order, steps)
        w0 = ts.sample(den, _noise(), f"ts-unipc-{variant}", steps=steps, grid=grid,
                       solver_options={"order": order, "window": 0})
        torch.testing.assert_close(w0, want, rtol=1e-13, atol=1e-13)
        if steps > 1 and order < 3:
            shifted = ts.sample(den, _noise(), f"ts-unipc-{variant}", steps=steps, grid=grid,
                                solver_options={"order": order, "window": 20, "cutoff": 0.0})
            assert not torch.allclose(shifted, want, rtol=1e-6, atol=1e-6)  # the shift does act


def _als(sched, t):
    a, s = (float(v) for v in sched.alpha_sigma(torch.tensor(float(t), dtype=F64)))
    return a, s, math.log(a / s)


@pytest.mark.parametrize("variant", VARIANTS)
def test_first_order_replay_with_the_shifted_log_snrs(variant):
    # UniC-1 (rho = 1/2) then UniP-1, per sample, from the logged (shifted) times:
    #   x_i^c = (s_i / s'_{i-1}) x_{i-1}^c - a_i expm1(-h) m_{i-1} - a_i B(h) (m_i - m_{i-1}) / (2 r),
    #   h = lambda_i - lambda'_{i-1}, r = (lambda'_i - lambda'_{i-1}) / h, B = -h (bh1) or expm1(-h) (bh2);
    #   x_{i+1} = (s_{i+1} / s'_i) x_i^c - a_{i+1} expm1(-(lambda_{i+1} - lambda'_i)) m_i.
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    noise = _noise(3, 128, seed=4) * torch.tensor([1.0, 1.1, 0.9], dtype=F64)[:, None]
    grid = ts.make_grid(sched, 6, "uniform")
    inner = _mixture(128).denoiser(sched, "sample", shared_time=False)
    log = _Logger(inner.model_fn)
    x_end = ts.sample(ts.Denoiser(log, sched, "sample"), noise, f"ts-unipc-{variant}", grid=grid,
                      solver_options={"order": 1, "window": 50, "cutoff": 100.0})
    t_grid = grid.t.tolist()
    assert len(log.calls) == 6 and len({float(t) for t in log.calls[2][1]}) > 1  # shifted differently
    for b in range(3):
        xc, m_prev, t_prev = None, None, None
        for i, (x, t) in enumerate(log.calls):
            m = inner.model_fn(x[b:b + 1], t[b:b + 1])[0]
            if i == 0:
                xc = x[b]
            else:
                a_i, s_i, lam_i = _als(sched, t_grid[i])
                _, s_p, lam_p = _als(sched, t_prev)
                lam_new = _als(sched, t[b])[2]
                h = lam_i - lam_p
                big_b = -h if variant == "bh1" else math.expm1(-h)
                r = (lam_new - lam_p) / h
                xc = s_i / s_p * xc - a_i * math.expm1(-h) * m_prev - a_i * big_b * (m - m_prev) / (2 * r)
            want = x_end[b] if i + 1 == len(log.calls) else log.calls[i + 1][0][b]
            if i + 1 < grid.steps:
                a1, s1, lam1 = _als(sched, t_grid[i + 1])
                _, s_s, lam_s = _als(sched, t[b])
                x_next = s1 / s_s * xc - a1 * math.expm1(-(lam1 - lam_s)) * m
            else:
                x_next = m  # the last step goes to zero noise
            torch.testing.assert_close(want, x_next, rtol=1e-10, atol=1e-10)
            m_prev, t_prev = m, float(t[b])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("order", [2, 3])
def test_tabulated_corrector_integrates_polynomials_exactly(variant, order):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den = _mixture().denoiser(sched, "epsilon", shared_time=False)
    grid = ts.make_grid(sched, 7, "uniform")
    solver = TimeShiftUniPC(order=order, variant=variant, window=6 if order == 3 else 12, cutoff=0.0)
    x0 = _noise(2)
    _, table = solver.init(DiffusionTerm(den), grid, x0)
    cands = solver.shift_candidates(sched, grid)
    lam = grid.log_snr.tolist()
    alpha, sigma = grid.alpha.tolist(), grid.sigma.tolist()
    checked = 0
    for i, row in enumerate(table):
        if type(row) is not ShiftedUniPCRow or row.cw is None or row.cw.shape[0] < 3:
            continue
        k_c = row.cw.shape[0] - 1  # weights on m_i (new), m_{i-1}, ..., m_{i-k_c}
        nodes = [i - j for j in range(len(row.strides))]  # newest first, as the strides
        for combo in torch.linspace(0, row.ccx.numel() - 1, 7).long().tolist():
            node_lam = {}
            for n, stride in zip(nodes, row.strides):
                if stride is None:
                    node_lam[n] = lam[n]
                else:
                    node_lam[n] = float(cands[n].log_snr[(combo // stride) % cands[n].t.numel()])
            lam_s, lam_t = node_lam[i - 1], lam[i]
            for degree in range(k_c + 1):
                def f(v, d=degree):  # an antiderivative of e^v v^d
                    return math.exp(v) * sum((-1) ** (d - j) * math.factorial(d) / math.factorial(j) * v ** j
                                             for j in range(d + 1))
                exact = sigma[i] * (f(lam_t) - f(lam_s))
                got = sum(float(row.cw[j, combo]) * node_lam[i - j] ** degree for j in range(k_c + 1))
                assert got == pytest.approx(exact, rel=1e-8, abs=1e-10 * alpha[i]), (i, combo, degree)
            checked += 1
    assert checked >= 7


def test_samples_are_independent_of_their_batch_and_steps_do_not_sync():
    den = _mixture(64).denoiser(ts.VPDiscreteSchedule.from_betas("linear"), "epsilon", shared_time=False)
    noise = _noise(4, 64, seed=5) * torch.tensor([1.0, 1.2, 0.8, 1.05], dtype=F64)[:, None]
    opts = {"window": 20, "cutoff": 100.0}
    whole = ts.sample(den, noise, "ts-unipc-bh2", steps=7, grid="uniform", solver_options=opts)
    for b in range(4):
        alone = ts.sample(den, noise[b:b + 1], "ts-unipc-bh2", steps=7, grid="uniform", solver_options=opts)
        torch.testing.assert_close(whole[b:b + 1], alone, rtol=1e-12, atol=1e-12)
    grid = ts.make_grid(den.schedule, 7, "uniform")
    solver = ts.solvers.get("ts-unipc-bh1", **opts)
    term = DiffusionTerm(den)
    state, table = solver.init(term, grid, noise)
    assert any(type(r) is ShiftedUniPCRow for r in table)
    times, y = grid.t.tolist(), noise
    rec = _SyncRecorder()
    with rec:
        for i in range(grid.steps):
            y, state, _, _ = solver.step(term, times[i], times[i + 1], y, state, table[i])
    assert rec.syncs == 0 and torch.isfinite(y).all()


def test_bad_options_are_refused_naming_them():
    with pytest.raises(ValueError, match="window must be an integer >= 0, got -2"):
        TimeShiftUniPC(window=-2)
    with pytest.raises(ValueError, match="window=20 with order 3 tabulates 194481"):
        ts.solvers.get("ts-unipc-bh2", order=3, window=20)
    with pytest.raises(ValueError, match="variant"):
        TimeShiftUniPC(variant="bh3")

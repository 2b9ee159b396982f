"""Adaptive DPM-Solver (Lu et al. 2022a, Algorithm 4): parity with k-diffusion's
``sample_dpm_adaptive`` (same steps, same result) and the empirical order of its two pairs on the
exact Gaussian mixture (error against NFE as the tolerance tightens: slope ``-k`` for
DPM-Solver-``k``)."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts

F64 = torch.float64
SIGMA_MIN, SIGMA_MAX = 0.1, 80.0


@pytest.fixture(scope="module")
def problem(gmm2):
    schedule = ts.EDMSchedule(SIGMA_MIN, SIGMA_MAX)
    den = gmm2.denoiser(schedule, "sample")
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = gmm2.reference_solution(noise * math.sqrt(1 + SIGMA_MAX**2), s_start=SIGMA_MAX, s_end=SIGMA_MIN)
    return den, noise, ref


def _run(den, noise, **options):
    return ts.sample(den, noise, "dpm-adaptive", grid=torch.tensor([SIGMA_MAX]), final="sigma_min",
                     solver_options=options, return_solution=True)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("tol", [(0.05, 0.0078), (1e-3, 1e-4)])
def test_parity_with_k_diffusion_sample_dpm_adaptive(problem, k_sampling, order, tol):
    """rule="k-diffusion": the same accepted and rejected steps and the same sample."""
    den, noise, _ = problem
    rtol, atol = tol
    x_init = noise * math.sqrt(1 + SIGMA_MAX**2)
    # k-diffusion builds its times and tolerances with torch.tensor(float): float64 by default here,
    # as the rest of the comparison (in float32 the tiny early error estimates differ by rounding)
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        ref, info = k_sampling.sample_dpm_adaptive(
            lambda x, s: den.model_fn(x, s), x_init.clone(), SIGMA_MIN, SIGMA_MAX, order=order, rtol=rtol,
            atol=atol, disable=True, return_info=True)
    finally:
        torch.set_default_dtype(default)
    sol = _run(den, noise, order=order, rtol=rtol, atol=atol, rule="k-diffusion")
    assert (sol.stats.accepted, sol.stats.rejected) == (info["n_accept"], info["n_reject"])
    assert sol.stats.nfe == info["nfe"]
    assert (sol.x - ref).abs().max() <= 1e-7 * ref.abs().max()  # same steps; float64 rounding


def test_the_papers_rule_differs_from_k_diffusion_and_is_as_accurate(problem):
    den, noise, ref = problem
    lu = _run(den, noise, rtol=1e-3, atol=1e-4)
    kd = _run(den, noise, rtol=1e-3, atol=1e-4, rule="k-diffusion")
    assert lu.stats.nfe != kd.stats.nfe
    err_lu = (lu.x - ref).norm(dim=-1).mean()
    err_kd = (kd.x - ref).norm(dim=-1).mean()
    assert err_lu < 3 * err_kd


# (solver, options, declared order): DPM-Solver-12 and DPM-Solver-23
CASES = [("dpm-adaptive", {"order": 2}, 2), ("dpm-adaptive", {"order": 3}, 3)]


@pytest.mark.parametrize("name, options, order", CASES)
def test_error_falls_as_nfe_to_minus_order(problem, name, options, order):
    """Local error control at tolerance ``tol`` gives ``err ~ tol^(k/(k+1))`` with
    ``NFE ~ tol^(-1/(k+1))``: ``err ~ NFE^(-k)`` (fit over four tolerances)."""
    den, noise, ref = problem
    log_nfe, log_err = [], []
    for rtol in (1e-3, 1e-4, 1e-5, 1e-6):
        sol = _run(den, noise, **options, rtol=rtol, atol=rtol * 1e-2)
        log_nfe.append(math.log(sol.stats.nfe))
        log_err.append(math.log(float((sol.x - ref).norm(dim=-1).mean())))
    n = torch.tensor(log_nfe, dtype=F64)
    e = torch.tensor(log_err, dtype=F64)
    slope = float(((n - n.mean()) * (e - e.mean())).sum() / ((n - n.mean()) ** 2).sum())
    assert -order - 1.0 <= slope <= -order + 0.5, slope


def test_tolerances_bound_the_error(problem):
    den, noise, ref = problem
    errs = [float((_run(den, noise, rtol=r, atol=r * 1e-2).x - ref).abs().max()) for r in (1e-3, 1e-5)]
    assert errs[1] < errs[0] / 10

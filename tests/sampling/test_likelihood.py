"""Exact likelihood by the probability-flow ODE against the mixture's closed-form log-density."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.sampling.likelihood import likelihood

F64 = torch.float64


def _case(d, sched, prediction):
    gmm = GaussianMixture.random(d, 4, seed=1, full=True)
    x = gmm.sample(8, torch.Generator().manual_seed(0))
    s_min = float(sched.sigma(sched.t_min) / sched.alpha(sched.t_min))
    s_max = float(sched.sigma(sched.t_max) / sched.alpha(sched.t_max))
    exact = gmm.log_prob(x, s_min)
    # the model is evaluated down to s_min; there the density is that of the data to < 1e-5 nats/dim
    assert float((exact - gmm.log_prob(x)).abs().max()) / d < 1e-5
    return gmm, gmm.denoiser(sched, prediction), x, exact, (lambda y: gmm.log_prob(y, s_max))


@pytest.mark.parametrize("d,sched,prediction,exact_prior", [
    (2, ts.EDMSchedule(1e-4, 1e4), "sample", False),
    (2, ts.VPLinearSchedule(t_min=1e-7), "epsilon", True),
    (16, ts.EDMSchedule(1e-4, 1e4), "epsilon", False),
    (16, ts.VPLinearSchedule(t_min=1e-7), "v_prediction", True),
])
def test_exact_trace_matches_closed_form(d, sched, prediction, exact_prior):
    gmm, den, x, exact, prior = _case(d, sched, prediction)
    res = likelihood(den, x, trace="exact", rtol=1e-5, atol=1e-5,
                     prior=prior if exact_prior else None)
    assert res.stderr is None
    assert float((res.log_prob - exact).abs().max()) / d <= 1e-3
    assert torch.allclose(res.bits_per_dim, -res.log_prob / (d * math.log(2.0)))


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("d", [2, 16])
def test_hutchinson_within_its_standard_error(d, probe):
    gmm, den, x, exact, prior = _case(d, ts.EDMSchedule(1e-4, 1e4), "sample")
    res = likelihood(den, x, trace="hutchinson", probe=probe, n_probes=8, generator=0, rtol=1e-5,
                     atol=1e-5, prior=prior)
    z = (res.log_prob - exact) / res.stderr
    z_all = float((res.log_prob - exact).sum() / res.stderr.pow(2).sum().sqrt())
    assert abs(z_all) <= 3.0, z
    assert float(z.abs().max()) <= 5.0, z  # t-distribution with 7 dof: P(|t| > 5) ~ 2e-3
    assert float(res.stderr.min()) > 0


def test_likelihood_rejects_bad_arguments(gmm2):
    den = gmm2.denoiser(ts.EDMSchedule(), "sample")
    x = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="trace"):
        likelihood(den, x, trace="approx")
    with pytest.raises(ValueError, match="probe"):
        likelihood(den, x, trace="hutchinson", probe="sobol")
    with pytest.raises(ValueError, match="n_probes"):
        likelihood(den, x, trace="exact", n_probes=4)
    with pytest.raises(ValueError, match="t_min"):
        likelihood(den, x, t_min=1e-9)

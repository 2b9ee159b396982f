"""ts.tune on a rectified flow whose range reaches pure noise and the data (log-SNR infinite at
both ends, as the model ``timestepper train digits`` writes): every method gives a finite sample
in exactly ``nfe`` model calls, and the searches do no worse than the fixed-grid baseline."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.tuning.objective import CallCounter

NFE = 4
SMALLEST = {
    "fixed": {},
    "ays": dict(sweeps=1, iters=3),
    "autodiffusion": dict(population=3, generations=2, top_k=1),
    "s3": dict(initial=3, rounds=1, proposals=2, predictor_population=8, top_k=2),
    "ems": dict(n_samples=64, n_points=16, grid_sweeps=1, grid_iters=3),
    "dc": dict(iters=2, substeps=4, grid_sweeps=1, grid_iters=3),
    "timeshift": dict(windows=(4,), cutoffs=(0.0, 0.4), grid_sweeps=1, grid_iters=3),
}
SEARCHES = ("ays", "autodiffusion", "s3")


@pytest.fixture(scope="module")
def flow():
    den = GaussianMixture.random(4, 4, seed=0).denoiser(ts.RectifiedFlowSchedule(), "velocity")
    noise = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    base = ts.tune(den, NFE, "fixed", noise=noise, reference_steps=100)
    return den, noise, base.provenance["objective_train"]


@pytest.mark.parametrize("method", list(SMALLEST))
def test_every_method_tunes_a_flow_reaching_pure_noise_and_data(flow, method):
    den, noise, base = flow
    sched = ts.tune(den, NFE, method, noise=noise, reference_steps=100, **SMALLEST[method])
    counter = CallCounter(den)
    x = ts.sample(counter.denoiser, noise, schedule=sched)
    assert torch.isfinite(x).all()
    assert counter.calls == NFE
    assert sched.times[0] == 1.0 and sched.times[-1] == 0.0
    if method in SEARCHES:
        assert sched.provenance["objective_train"] <= base


def test_ays_klub_is_refused_on_a_flow_reaching_pure_noise(flow):
    den, noise, _ = flow
    with pytest.raises(ValueError, match="ays: criterion='klub' needs a finite noise level"):
        ts.tune(den, NFE, "ays", noise=noise, reference_steps=100, criterion="klub", sweeps=1, iters=3)

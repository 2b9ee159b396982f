"""Empirical order of convergence of the foundation solvers on the exact mixture (float64)."""

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.bench.convergence import empirical_order, reference_endpoint


@pytest.fixture(scope="module")
def problem():
    gmm = GaussianMixture.random(2, 3, seed=4, full=True, scale=(0.2, 0.5))
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    noise = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    den = gmm.denoiser(sched, "epsilon")
    return gmm, den, noise, reference_endpoint(gmm, den, noise, 16)


@pytest.mark.parametrize("name", ["ddim", "euler", "heun", "dpmpp-2m"])
def test_empirical_order_matches_declared(problem, name):
    gmm, den, noise, ref = problem
    declared = ts.solvers.get(name).order
    p = empirical_order(name, gmm, den, noise, steps=(16, 32, 64, 128), reference=ref)
    assert abs(p - declared) <= 0.3, f"{name}: measured order {p:.3f}, declared {declared}"

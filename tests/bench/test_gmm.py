"""The exact Gaussian-mixture problem: its denoiser and its reference solution are exact."""

import math

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture, sliced_wasserstein, trajectory_error

F64 = torch.float64


@pytest.mark.parametrize("full", [False, True])
def test_denoiser_is_tweedie(full):
    """E[x0 | y] = y + s^2 grad log p_s(y) (Tweedie's formula), gradient by autograd."""
    g = GaussianMixture.random(3, 4, seed=2, full=full)
    y = torch.randn(6, 3, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(g.log_prob(y, 0.8).sum(), y)
    assert torch.allclose(g.posterior_mean(y.detach(), 0.8), y.detach() + 0.64 * grad, atol=1e-12)


def test_shared_time_fast_path_equals_per_sample_path():
    g = GaussianMixture.random(6, 5, seed=3)
    x = torch.randn(9, 6, dtype=F64)
    a, s = torch.tensor(0.6, dtype=F64), torch.tensor(0.8, dtype=F64)
    assert torch.allclose(g.posterior_mean_at(x, a, s), g.posterior_mean_at(x, a.expand(9), s.expand(9)), atol=1e-13)
    assert torch.allclose(g.scaled_drift(x, s), g.scaled_drift(x, s.expand(9)), atol=1e-13)
    sched = ts.VPCosineSchedule()
    t = torch.full((9,), 0.4, dtype=F64)
    for kind in ("epsilon", "v_prediction", "velocity", "score"):
        assert torch.allclose(g.denoiser(sched, kind)(x, t), g.denoiser(sched, kind, shared_time=False)(x, t),
                              atol=1e-12)


def test_reference_solution_of_one_gaussian_is_closed_form():
    """For N(mu, c) the PF-ODE in s is y(s) = mu + (y0 - mu) sqrt((c + s^2) / (c + s0^2))."""
    mu, c = torch.tensor([[0.5, -1.0]], dtype=F64), torch.tensor([[0.04, 0.3]], dtype=F64)
    g = GaussianMixture(torch.ones(1, dtype=F64), mu, c)
    y0 = torch.randn(16, 2, dtype=F64) * 50
    y = g.reference_solution(y0, 50.0, 0.0)
    exact = mu + (y0 - mu) * torch.sqrt(c / (c + 2500.0))
    assert torch.allclose(y, exact, atol=1e-8)


def test_metrics():
    g = GaussianMixture.random(2, 3, seed=0)
    gen = torch.Generator().manual_seed(0)
    a, b = g.sample(500, gen), g.sample(500, gen)
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, b) < sliced_wasserstein(a, b + 1.0)
    assert math.isclose(trajectory_error(a, a + torch.tensor([3.0, 4.0], dtype=F64)), 5.0, rel_tol=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        trajectory_error(a, b[:10])
    with pytest.raises(ValueError, match="weights must be"):
        GaussianMixture(torch.tensor([1.0, -1.0]), torch.zeros(2, 2), torch.ones(2, 2))

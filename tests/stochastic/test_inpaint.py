"""Inpainting by replacement against the exact conditional of a Gaussian mixture."""

from __future__ import annotations

import pytest
import torch
from gmm_conditional import conditional_sample

import timestepper as ts
from timestepper.bench import GaussianMixture, sliced_wasserstein
from timestepper.diffusion.inpaint import Inpaint, inpaint

F64 = torch.float64
N = 2000


def _sw(a, b):
    return sliced_wasserstein(a, b, n_projections=64)


def _product_mixture():
    """A 3-D mixture whose coordinate 0 is independent of coordinates 1-2 (a product of a 1-D and a
    2-D mixture): there replacement is exact."""
    a = GaussianMixture.random(1, 2, seed=3)
    b = GaussianMixture.random(2, 3, seed=4, full=True)
    w, mu, cov = [], [], []
    for i in range(2):
        for j in range(3):
            w.append(a.weights[i] * b.weights[j])
            mu.append(torch.cat([a.means[i], b.means[j]]))
            c = torch.zeros(3, 3, dtype=F64)
            c[0, 0] = a.covs[i, 0]
            c[1:, 1:] = b.covs[j]
            cov.append(c)
    return GaussianMixture(torch.stack(w), torch.stack(mu), torch.stack(cov))


@pytest.mark.parametrize("solver,steps,per_step", [("ddpm", 100, 1), ("sde-dpmpp-2m", 50, 1),
                                                    ("ddim", 50, 1), ("pc", 50, 2)])
def test_replacement_matches_exact_conditional_for_independent_blocks(solver, steps, per_step):
    gmm = _product_mixture()
    value = torch.tensor([0.7], dtype=F64)
    known = torch.tensor([0.7, 0.0, 0.0], dtype=F64)
    mask = torch.tensor([True, False, False])
    e1 = conditional_sample(gmm, [0], value, N, torch.Generator().manual_seed(1))
    e2 = conditional_sample(gmm, [0], value, N, torch.Generator().manual_seed(2))
    base = _sw(e1, e2)
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(N, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    sol = inpaint(den, noise, known, mask, solver, steps=steps, generator=4, return_solution=True)
    assert torch.equal(sol.x[:, 0], value.expand(N))
    assert sol.stats.nfe == steps * per_step
    assert _sw(sol.x[:, 1:], e1) <= 2.0 * base


def test_resampling_reduces_replacement_bias_on_correlated_mixture():
    # Replacement is biased when coordinates are correlated; RePaint's resampling reduces the bias.
    gmm = GaussianMixture.random(4, 4, seed=1, full=True)
    kidx, value = [0, 2], torch.tensor([-1.0, -1.86], dtype=F64)
    known = torch.zeros(4, dtype=F64)
    known[kidx] = value
    mask = torch.zeros(4, dtype=torch.bool)
    mask[kidx] = True
    e1 = conditional_sample(gmm, kidx, value, N, torch.Generator().manual_seed(1))
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(N, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    sws = []
    for u in (1, 4):
        sol = ts.sample(den, noise, Inpaint("ddpm", known, mask, resample=u), steps=25, generator=4,
                        return_solution=True)
        assert sol.stats.nfe == 25 * u
        sws.append(_sw(sol.x[:, [1, 3]], e1))
    assert sws[1] < 0.6 * sws[0], sws


def test_inpaint_rejects_bad_input(gmm2):
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="mask"):
        Inpaint("ddpm", torch.zeros(2), torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="broadcast"):
        inpaint(den, noise, torch.zeros(3, dtype=F64), torch.ones(3, dtype=torch.bool), steps=2)
    with pytest.raises(TypeError, match="diffusion solver"):
        Inpaint("rk4", torch.zeros(2), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="resample"):
        Inpaint("ddpm", torch.zeros(2), torch.ones(2, dtype=torch.bool), resample=0)

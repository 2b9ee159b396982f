"""Inpainting by replacement against the exact conditional of a Gaussian mixture."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from tests.sampling._gmm_conditional import conditional_sample
from timestepper import inpaint
from timestepper.bench import GaussianMixture, sliced_wasserstein
from timestepper.solvers.inpaint import Inpaint

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


def _correlated_case(d):
    """The correlated mixtures of the inpainting benchmark: replacement is 10-30x off there."""
    gmm = GaussianMixture.random(d, 4, seed=1, full=True)
    if d == 2:
        kidx, value = [0], gmm.sample(1, torch.Generator().manual_seed(7))[0, [0]]
    else:
        kidx, value = [0, 2], torch.tensor([-1.0, -1.86], dtype=F64)
    known = torch.zeros(d, dtype=F64)
    known[kidx] = value
    mask = torch.zeros(d, dtype=torch.bool)
    mask[kidx] = True
    return gmm, kidx, value, known, mask


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 4])
def test_smc_matches_exact_conditional_on_correlated_mixture(d):
    # SMCDiff (Trippe et al. 2022) with 32 particles per sample and 100 DDPM steps: SW2 of the
    # unknown coordinates to exact conditional samples within 2x the exact-vs-exact baseline, where
    # replacement at the same number of steps is far off.
    n, k, steps = 1000, 32, 100
    gmm, kidx, value, known, mask = _correlated_case(d)
    unk = [j for j in range(d) if j not in kidx]
    e1 = conditional_sample(gmm, kidx, value, n, torch.Generator().manual_seed(1))
    e2 = conditional_sample(gmm, kidx, value, n, torch.Generator().manual_seed(2))
    base = _sw(e1, e2)
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(n, d, generator=torch.Generator().manual_seed(3), dtype=F64)
    sol = inpaint(den, noise, known, mask, steps=steps, method="smc", particles=k, generator=4,
                  return_solution=True)
    assert sol.x.shape == (n, d)
    assert torch.equal(sol.x[:, kidx], value.expand(n, -1))
    assert sol.stats.nfe == k * steps
    smc = _sw(sol.x[:, unk], e1)
    replace = _sw(inpaint(den, noise, known, mask, steps=steps, generator=4)[:, unk], e1)
    assert smc <= 2.0 * base, (smc, base)
    assert smc < 0.3 * replace, (smc, replace)


@pytest.mark.slow
def test_smc_particles_reduce_the_error():
    # The particle filter is consistent: more particles, smaller error (1 particle has no weights).
    n, steps = 1000, 50
    gmm, kidx, value, known, mask = _correlated_case(4)
    e1 = conditional_sample(gmm, kidx, value, n, torch.Generator().manual_seed(1))
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(n, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    sws = [_sw(inpaint(den, noise, known, mask, steps=steps, method="smc", particles=k,
                       generator=4)[:, [1, 3]], e1) for k in (1, 16)]
    assert sws[1] < 0.5 * sws[0], sws


def test_smc_is_reproducible_and_starts_from_noise():
    gmm, kidx, value, known, mask = _correlated_case(4)
    den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(8, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    run = [inpaint(den, noise, known, mask, steps=5, method="smc", particles=4, generator=g)
           for g in (0, 0, 1)]
    assert torch.equal(run[0], run[1])
    assert not torch.equal(run[0], run[2])
    other = inpaint(den, noise + 1.0, known, mask, steps=5, method="smc", particles=4, generator=0)
    assert not torch.equal(run[0], other)


def test_smc_rejects_bad_input(gmm2):
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.zeros(4, 2, dtype=F64)
    known, mask = torch.zeros(2, dtype=F64), torch.tensor([True, False])
    with pytest.raises(ValueError, match="method"):
        inpaint(den, noise, known, mask, method="twisted")
    with pytest.raises(ValueError, match="ddpm"):
        inpaint(den, noise, known, mask, "ddim", method="smc")
    with pytest.raises(ValueError, match="particles"):
        inpaint(den, noise, known, mask, method="smc", particles=0)
    with pytest.raises(ValueError, match="ess_threshold"):
        inpaint(den, noise, known, mask, method="smc", ess_threshold=1.5)
    with pytest.raises(ValueError, match="broadcast"):
        inpaint(den, noise, torch.zeros(3, dtype=F64), torch.ones(3, dtype=torch.bool),
                method="smc", steps=2)


def test_smc_accepts_per_sample_known_values(gmm2):
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    known = torch.tensor([[0.5, 0.0], [-1.0, 0.0], [2.0, 0.0]], dtype=F64)
    mask = torch.tensor([True, False])
    x = inpaint(den, noise, known, mask, steps=4, method="smc", particles=5, generator=0)
    assert torch.equal(x[:, 0], known[:, 0])
    with pytest.raises(ValueError, match="broadcast"):
        inpaint(den, noise, known[:2], mask, steps=4, method="smc", particles=5)

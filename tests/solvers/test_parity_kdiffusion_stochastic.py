"""Parity with k-diffusion's stochastic samplers given the same noise sequence (float64).

k-diffusion works in sigma-space (alpha = 1): the :class:`EDMSchedule` with ``t = sigma``. Its
samplers receive a ``noise_sampler`` that draws ``torch.randn`` from the same seeded generator as
ours, so the draws coincide and the results must agree to rounding.
"""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from tests.solvers._stochastic import F64, k_noise_sampler, unet_fn

SEED = 123
STEPS = 8


def _setup(gmm2, unet=None):
    sched = ts.EDMSchedule(0.002, 80.0)
    if unet is None:
        den = gmm2.denoiser(sched, "sample")
        noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    else:
        den = ts.Denoiser(unet_fn(unet), sched, "sample")
        noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    grid = ts.make_grid(sched, STEPS, "karras")
    sigmas = grid.t.clone()  # t = sigma, ends with 0

    def k_model(x, sigma):
        return den(x, sigma.to(F64))

    x_init = noise * math.sqrt(1.0 + 80.0**2)
    return den, noise, sigmas, k_model, x_init


CASES = [
    ("euler-ancestral", {}, "sample_euler_ancestral", {}),
    ("euler-ancestral", {"eta": 0.5}, "sample_euler_ancestral", {"eta": 0.5}),
    ("ddim", {"eta": 0.7}, "sample_euler_ancestral", {"eta": 0.7}),
    ("ddpm", {}, "sample_euler_ancestral", {}),
    ("dpmpp-2s-ancestral", {}, "sample_dpmpp_2s_ancestral", {}),
    ("dpmpp-2s-ancestral", {"eta": 0.5}, "sample_dpmpp_2s_ancestral", {"eta": 0.5}),
    ("dpm-2-ancestral", {}, "sample_dpm_2_ancestral", {}),
    ("dpm-2-ancestral", {"eta": 0.5, "s_noise": 0.8}, "sample_dpm_2_ancestral",
     {"eta": 0.5, "s_noise": 0.8}),
    ("dpmpp-sde", {}, "sample_dpmpp_sde", {}),
    ("dpmpp-sde", {"eta": 0.5, "s_noise": 0.8, "r": 0.3}, "sample_dpmpp_sde",
     {"eta": 0.5, "s_noise": 0.8, "r": 0.3}),
    ("sde-dpmpp-2m", {"lower_order_final": False}, "sample_dpmpp_2m_sde", {}),
    ("sde-dpmpp-2m", {"lower_order_final": False, "solver_type": "heun"}, "sample_dpmpp_2m_sde",
     {"solver_type": "heun"}),
    ("sde-dpmpp-2m", {"lower_order_final": False, "eta": 0.5}, "sample_dpmpp_2m_sde", {"eta": 0.5}),
    ("sde-dpmpp-3m", {"lower_order_final": False, "variant": "k-diffusion"},
     "sample_dpmpp_3m_sde", {}),
    ("sde-dpmpp-3m", {"lower_order_final": False, "eta": 0.5, "variant": "k-diffusion"},
     "sample_dpmpp_3m_sde",
     {"eta": 0.5}),
]


@pytest.mark.parametrize("name,opts,k_name,k_opts", CASES)
def test_parity_kdiffusion_gmm(k_sampling, gmm2, name, opts, k_name, k_opts):
    den, noise, sigmas, k_model, x_init = _setup(gmm2)
    sol = ts.sample(den, noise, name, steps=STEPS, grid="karras", solver_options=opts,
                    generator=torch.Generator().manual_seed(SEED), return_solution=True)
    ref = getattr(k_sampling, k_name)(k_model, x_init.clone(), sigmas, disable=True,
                                      noise_sampler=k_noise_sampler(SEED)(x_init), **k_opts)
    assert torch.max(torch.abs(sol.x - ref)) <= 1e-6
    # sanity: the noise matters (a different seed gives a different result)
    other = ts.sample(den, noise, name, steps=STEPS, grid="karras", solver_options=opts,
                      generator=SEED + 1)
    assert torch.max(torch.abs(other - ref)) > 1e-3


@pytest.mark.parametrize("name,opts,k_name,k_opts", [CASES[0], CASES[4], CASES[6], CASES[8],
                                                       CASES[10], CASES[13]])
def test_parity_kdiffusion_unet(k_sampling, tiny_unet, name, opts, k_name, k_opts):
    den, noise, sigmas, k_model, x_init = _setup(None, tiny_unet)
    x = ts.sample(den, noise, name, steps=STEPS, grid="karras", solver_options=opts, generator=SEED)
    ref = getattr(k_sampling, k_name)(k_model, x_init.clone(), sigmas, disable=True,
                                      noise_sampler=k_noise_sampler(SEED)(x_init), **k_opts)
    assert torch.max(torch.abs(x - ref)) <= 1e-6


def test_parity_kdiffusion_dpmpp_sde_brownian(k_sampling, gmm2):
    """``noise="brownian"``: both stages' draws of a step are increments of one Brownian path, as
    k-diffusion's Brownian-tree noise sampler gives them; handed our path as its noise sampler
    (queried at the same levels), ``sample_dpmpp_sde`` agrees."""
    from timestepper.solvers.dpm2 import log_snr_midpoints
    from timestepper.solvers.noise import BrownianNoise

    den, noise, sigmas, k_model, x_init = _setup(gmm2)
    x = ts.sample(den, noise, "dpmpp-sde", steps=STEPS, grid="karras",
                  solver_options={"noise": "brownian"}, generator=SEED)
    grid = ts.make_grid(den.schedule, STEPS, "karras")
    levels = torch.cat([grid.t, log_snr_midpoints(den.schedule, grid).t])
    path = BrownianNoise(80.0, x_init, SEED)

    def on_levels(sigma):  # k-diffusion's exp(-(-log sigma)) is sigma up to rounding
        return float(levels[torch.argmin((levels - float(sigma)).abs())])

    ref = k_sampling.sample_dpmpp_sde(
        k_model, x_init.clone(), sigmas, disable=True,
        noise_sampler=lambda s0, s1: path.increment(on_levels(s0), on_levels(s1)))
    assert torch.max(torch.abs(x - ref)) <= 1e-6
    independent = ts.sample(den, noise, "dpmpp-sde", steps=STEPS, grid="karras", generator=SEED)
    assert torch.max(torch.abs(independent - ref)) > 1e-3

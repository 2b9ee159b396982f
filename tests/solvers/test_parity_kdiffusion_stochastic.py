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


@pytest.mark.parametrize("name,opts,k_name,k_opts", [CASES[0], CASES[4], CASES[6], CASES[8], CASES[11]])
def test_parity_kdiffusion_unet(k_sampling, tiny_unet, name, opts, k_name, k_opts):
    den, noise, sigmas, k_model, x_init = _setup(None, tiny_unet)
    x = ts.sample(den, noise, name, steps=STEPS, grid="karras", solver_options=opts, generator=SEED)
    ref = getattr(k_sampling, k_name)(k_model, x_init.clone(), sigmas, disable=True,
                                      noise_sampler=k_noise_sampler(SEED)(x_init), **k_opts)
    assert torch.max(torch.abs(x - ref)) <= 1e-6

"""Parity with k-diffusion's samplers on the same sigmas, float64 (<= 1e-6 max abs).

k-diffusion works with a denoiser ``D(x, sigma)`` in the variance-exploding space; ours runs the
same network through an :class:`EDMSchedule` (``alpha = 1``, ``t = sigma``) with the peer's sigmas
as the explicit grid (the final 0 is appended by ``sample``).
"""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from tests.conftest import unet_model_fn

torch.set_num_threads(1)
TOL = 1e-6
SIGMA_MIN, SIGMA_MAX = 0.02, 40.0

# (k-diffusion sampler, our solver, our options)
CASES = [
    ("sample_dpmpp_2m", "dpmpp-2m", {"lower_order_final": False}),
    ("sample_dpm_2", "dpm-2", {}),
    ("sample_lms", "lms", {}),
]


def _models(request, name):
    schedule = ts.EDMSchedule(0.5 * SIGMA_MIN, 2 * SIGMA_MAX)  # contains the peer's sigmas
    if name == "gmm":
        den = request.getfixturevalue("gmm2").denoiser(schedule, "sample")
        noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

        def k_model(x, sigma):
            return den.model_fn(x, sigma)
    else:
        unet = unet_model_fn(request.getfixturevalue("tiny_unet"))

        def eps_fn(x, sigma):  # an eps-prediction network in the VE space
            return unet(x / (1 + sigma[:, None, None, None] ** 2).sqrt(), 250.0 * sigma.log())

        den = ts.Denoiser(eps_fn, schedule, "epsilon")
        noise = torch.randn(
            2, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )

        def k_model(x, sigma):
            return x - sigma[:, None, None, None] * eps_fn(x, sigma)

    return den, noise, k_model


@pytest.mark.parametrize("model", ["gmm", "unet"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_parity_kdiffusion_sampler(request, k_sampling, case, model):
    sampler, solver, options = case
    den, noise, k_model = _models(request, model)
    sigmas = k_sampling.get_sigmas_karras(8, SIGMA_MIN, SIGMA_MAX, rho=7.0, device="cpu").to(
        torch.float64
    )
    x_start = noise * (1 + sigmas[0] ** 2).sqrt()  # the state ``ts.sample`` starts from
    peer = getattr(k_sampling, sampler)(k_model, x_start.clone(), sigmas, disable=True)
    x = ts.sample(den, noise, solver=solver, grid=sigmas[:-1], solver_options=options)
    assert (x - peer).abs().max().item() <= TOL

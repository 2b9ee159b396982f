"""Parity with diffusers' stochastic schedulers given the same noise sequence (float64).

The scheduler runs on our schedule's float64 ``alphas_cumprod`` (diffusers keeps them in float32,
which alone would differ at ~1e-7 relative). DDPM and DDIM then compute in float64 and must agree
to 1e-6. ``EulerAncestralDiscreteScheduler`` and ``DPMSolverMultistepScheduler`` cast the sample
to float32 inside ``step`` (and the latter draws its noise in float32, so it gets our noise through
``variance_noise``): there the bound is float32 rounding accumulated over the steps, relative to
the state's magnitude.
"""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from tests.solvers._stochastic import F64, recorded_noise, unet_fn

diffusers = pytest.importorskip("diffusers")

SEED = 7
STEPS = 10


def _model(kind, gmm2, tiny_unet, vp_schedule):
    if kind == "gmm":
        den = gmm2.denoiser(vp_schedule, "epsilon")
        noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    else:
        den = ts.Denoiser(unet_fn(tiny_unet), vp_schedule, "epsilon")
        noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    return den, noise


def _float64(sched, vp_schedule):
    sched.alphas_cumprod = vp_schedule.alphas_cumprod.clone()
    sched.one = torch.tensor(1.0, dtype=F64)
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=F64)
    return sched


def _run(sched, den, x, step_kwargs):
    b = x.shape[0]
    for k, t in enumerate(sched.timesteps):
        xin = sched.scale_model_input(x, t)
        out = den(xin, torch.full((b,), float(t), dtype=F64))
        x = sched.step(out, t, x, **step_kwargs(k)).prev_sample
    return x


@pytest.mark.parametrize("kind", ["gmm", "unet"])
def test_parity_diffusers_ddpm(kind, gmm2, tiny_unet, vp_schedule):
    den, noise = _model(kind, gmm2, tiny_unet, vp_schedule)
    sched = _float64(diffusers.DDPMScheduler(clip_sample=False), vp_schedule)
    sched.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(SEED)
    ref = _run(sched, den, noise.clone(), lambda k: {"generator": g})
    x = ts.sample(den, noise, "ddpm", steps=STEPS, grid="leading", generator=SEED)
    assert torch.max(torch.abs(x - ref)) <= 1e-6


@pytest.mark.parametrize("eta", [0.3, 1.0])
@pytest.mark.parametrize("kind", ["gmm", "unet"])
def test_parity_diffusers_ddim_eta(kind, eta, gmm2, tiny_unet, vp_schedule):
    den, noise = _model(kind, gmm2, tiny_unet, vp_schedule)
    sched = _float64(diffusers.DDIMScheduler(clip_sample=False), vp_schedule)
    sched.set_timesteps(STEPS)
    g = torch.Generator().manual_seed(SEED)
    ref = _run(sched, den, noise.clone(), lambda k: {"generator": g, "eta": eta})
    x = ts.sample(den, noise, "ddim", steps=STEPS, grid="leading", generator=SEED,
                  solver_options={"eta": eta})
    assert torch.max(torch.abs(x - ref)) <= 1e-6


@pytest.mark.parametrize("kind", ["gmm", "unet"])
def test_parity_diffusers_euler_ancestral(kind, gmm2, tiny_unet, vp_schedule):
    den, noise = _model(kind, gmm2, tiny_unet, vp_schedule)
    sched = diffusers.EulerAncestralDiscreteScheduler(timestep_spacing="leading")
    sched.set_timesteps(STEPS)
    grid = ts.make_grid(vp_schedule, STEPS, "leading")
    sched.sigmas = grid.sigma / grid.alpha  # float64, same values diffusers interpolates in float32
    g = torch.Generator().manual_seed(SEED)
    ref = _run(sched, den, noise.clone() * sched.init_noise_sigma, lambda k: {"generator": g})
    # diffusers' scaled state is x / alpha; at the end alpha = 1
    x = ts.sample(den, noise, "euler-ancestral", steps=STEPS, grid="leading", generator=SEED)
    scale = float(torch.max(torch.abs(ref)))
    assert torch.max(torch.abs(x - ref)) <= 2e-6 * max(1.0, scale)


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("kind", ["gmm", "unet"])
def test_parity_diffusers_sde_dpmsolverpp(kind, solver_type, gmm2, tiny_unet, vp_schedule):
    den, noise = _model(kind, gmm2, tiny_unet, vp_schedule)
    sched = diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=2,
                                                  solver_type=solver_type)
    sched.set_timesteps(STEPS)
    grid = ts.make_grid(vp_schedule, STEPS, sched.timesteps.to(F64))
    sched.sigmas = grid.sigma / grid.alpha
    draws = recorded_noise(SEED, noise.shape, STEPS)
    ref = _run(sched, den, noise.clone(), lambda k: {"variance_noise": draws[k]})
    x = ts.sample(den, noise, "sde-dpmpp-2m", steps=STEPS, grid=sched.timesteps.to(F64),
                  generator=SEED,
                  solver_options={"solver_type": solver_type})
    scale = float(torch.max(torch.abs(ref)))
    assert torch.max(torch.abs(x - ref)) <= 2e-6 * max(1.0, scale)

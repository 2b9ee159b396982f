"""Shared helpers of the stochastic-sampler tests."""

from __future__ import annotations

import torch

import timestepper as ts

F64 = torch.float64


def recorded_noise(seed: int, shape, count: int) -> list[torch.Tensor]:
    """The first ``count`` draws ``torch.randn(shape, generator=manual_seed(seed))``: what a
    stochastic solver given ``generator=seed`` draws, in order."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=F64) for _ in range(count)]


def k_noise_sampler(seed: int):
    """A k-diffusion ``noise_sampler`` drawing from a seeded generator (float64)."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def sampler(sigma, sigma_next):
        return torch.randn(state["shape"], generator=g, dtype=F64)

    def bind(x):
        state["shape"] = x.shape
        return sampler

    return bind


def sample_with_seed(den, x0_noise, solver, steps, seed, grid="logsnr", **kw):
    return ts.sample(den, x0_noise, solver, steps=steps, grid=grid,
                     generator=torch.Generator().manual_seed(seed), **kw)


def unet_fn(unet):
    """``model_fn(x, t)`` of a diffusers UNet."""
    return lambda x, t: unet(x, t).sample

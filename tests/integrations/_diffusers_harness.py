"""Run a diffusers scheduler and ours side by side, as pipelines drive them."""

from __future__ import annotations

import inspect

import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.integrations.diffusers.config import schedule_from_config

GMM = GaussianMixture.random(8, 4, seed=1, full=True)
SHAPE = (4, 2, 2, 2)


def gmm_model(cfg: dict, prediction: str, flow: bool = False):
    """The exact denoiser of the mixture, called as ``model(x, t)`` with diffusers' timesteps."""
    if flow:
        den = GMM.denoiser(ts.RectifiedFlowSchedule(), "velocity")
        return lambda x, t: den.model_fn(x, torch.as_tensor(t, dtype=torch.float64).reshape(1) / 1000)
    schedule = schedule_from_config(cfg)
    den = GMM.denoiser(schedule, prediction)
    return lambda x, t: den.model_fn(x, torch.as_tensor(t, dtype=torch.float64).reshape(1))


def noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def data(seed: int = 1) -> torch.Tensor:
    return GMM.sample(SHAPE[0], generator=torch.Generator().manual_seed(seed)).reshape(SHAPE).float()


def _accepts(fn, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def run(sched, model, steps: int | None, begin: int | None = None, seed: int = 0,  # noqa: PLR0913
        step_kwargs: dict | None = None, set_kwargs: dict | None = None):
    """The pipeline loop: full (``begin=None``) or img2img-style from ``timesteps[begin]`` after
    ``set_begin_index`` and ``add_noise`` (``scale_noise`` for flow schedulers)."""
    sched.set_timesteps(steps, **(set_kwargs or {}))
    timesteps = sched.timesteps
    if begin is None:
        x = noise() * getattr(sched, "init_noise_sigma", 1.0)
    else:
        timesteps = timesteps[begin * sched.order:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(begin * sched.order)
        start = timesteps[:1].repeat(SHAPE[0])
        if hasattr(sched, "scale_noise"):
            x = sched.scale_noise(data(), start[:1], noise())
        else:
            x = sched.add_noise(data(), noise(), start)
    gen = torch.Generator().manual_seed(seed + 100)
    kw = dict(step_kwargs or {})
    if _accepts(sched.step, "generator"):
        kw["generator"] = gen
    for t in timesteps:
        inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        m = model(inp, t)
        x = sched.step(m, t, x, **kw).prev_sample
    return x


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())

"""Helpers that drive the peers (diffusers schedulers, k-diffusion samplers) for parity tests.

The peers keep their noise levels in float32 (diffusers casts ``sigmas`` to float32 in
``set_timesteps``, and ``DPMSolverMultistepScheduler.step`` casts the sample to float32). To
compare algorithms in float64 the harness recomputes the peer's sigmas in float64 with the peer's
own formula and keeps the sample in float64; nothing else of the peer is changed.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

import timestepper as ts
from timestepper.diffusion.grids import SamplingGrid


def float64_sigmas(sched, karras: bool = False) -> torch.Tensor:
    """The peer's ``sigmas`` (noise to data, with its final value) recomputed in float64."""
    acp = sched.alphas_cumprod.to(torch.float64).numpy()
    all_sigmas = ((1 - acp) / acp) ** 0.5
    n = len(sched.timesteps)
    if karras:
        body = np.asarray(
            sched._convert_to_karras(in_sigmas=np.flip(all_sigmas).copy(), num_inference_steps=n)
        )
    else:
        body = np.interp(
            sched.timesteps.numpy().astype(np.float64), np.arange(len(all_sigmas)), all_sigmas
        )
    last = float(sched.sigmas[-1])
    last = (
        0.0
        if last == 0.0
        else (float(all_sigmas[0]) if abs(last - all_sigmas[0]) < 1e-6 else float(body[-1]))
    )
    return torch.from_numpy(np.concatenate([body, [last]])).to(torch.float64)


@contextlib.contextmanager
def keep_float64():
    """Make ``Tensor.to(torch.float32)`` a no-op on float64 tensors (the peer's sample downcast)."""
    orig = torch.Tensor.to

    def to(self, *args, **kwargs):
        if self.dtype == torch.float64 and (
            args[:1] == (torch.float32,) or kwargs.get("dtype") is torch.float32
        ):
            return self
        return orig(self, *args, **kwargs)

    torch.Tensor.to = to
    try:
        yield
    finally:
        torch.Tensor.to = orig


def run_diffusers(
    sched,
    model_fn,
    x,
    steps: int,
    karras: bool = False,
    float64: bool = True,
    scale_init: bool = True,
    trajectory: bool = False,
):
    """The diffusers sampling loop: ``set_timesteps``, then ``scale_model_input``/``step``.

    ``scale_init=False`` starts from ``x`` as given instead of ``x * init_noise_sigma``;
    ``trajectory=True`` returns the list of states after each step.
    """
    sched.set_timesteps(steps)
    if float64:
        sched.alphas_cumprod = sched.alphas_cumprod.to(torch.float64)
        if hasattr(sched, "final_alpha_cumprod"):
            sched.final_alpha_cumprod = torch.as_tensor(
                sched.final_alpha_cumprod, dtype=torch.float64
            )
    if float64 and hasattr(sched, "sigmas"):
        sched.sigmas = float64_sigmas(sched, karras)
    if scale_init:
        x = x * sched.init_noise_sigma
    states = []
    with keep_float64() if float64 else contextlib.nullcontext():
        for t in sched.timesteps:
            m = model_fn(sched.scale_model_input(x, t), t)
            x = sched.step(m, t, x).prev_sample
            states.append(x)
    return states if trajectory else x


def eps_model(model_fn):
    """A ``model_fn(x, t)`` that accepts diffusers' 0-d timestep tensors."""

    def fn(x, t):
        t = torch.as_tensor(t)
        return model_fn(x, t.reshape(-1).expand(x.shape[0]) if t.ndim == 0 else t)

    return fn


def ours(denoiser, noise, solver, grid, final="zero", **options):
    return ts.sample(denoiser, noise, solver=solver, grid=grid, final=final, solver_options=options)


def karras_grid(sched, schedule) -> SamplingGrid:
    """Our compat grid for diffusers' ``use_karras_sigmas=True``: its float64 sigmas, its rounded
    timesteps for the model.

    With ``final_sigmas_type="sigma_min"`` diffusers appends ``sigma_min`` to a Karras ramp that
    already ends there, so its last step has zero length (a model call that changes nothing);
    the grid here drops that step.
    """
    sigmas, model_t = float64_sigmas(sched, karras=True), sched.timesteps
    if sigmas[-1] == sigmas[-2]:
        sigmas, model_t = sigmas[:-1], model_t[:-1]
    return SamplingGrid.with_model_times(schedule, sigmas, model_t)

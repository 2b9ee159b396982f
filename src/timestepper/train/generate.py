"""Drawing samples from a trained model in batches, and the reflow tools built on it.

* :func:`generate`: seeded samples (optionally class-conditional with classifier-free guidance)
  with any solver and grid; returns the samples and the measured NFE per sample.
* :func:`reflow_pairs`: the coupling ``(noise, sample)`` of a trained flow, the training set of
  reflow (Liu et al. 2022, Sec. 2.3, Algorithm 1: ``(Z_0, Z_1)`` drawn from the current flow).
* :func:`straightness`: ``S = int_0^1 E |(Z_1 - Z_0) - dZ_t/dt|^2 dt`` (Liu et al. 2022, eq. 7)
  along the Euler trajectory, zero for a straight flow.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import default_spacing
from ..diffusion.schedules import RectifiedFlowSchedule
from ..guidance import cfg as cfg_guidance
from ..sampling.sample import sample


@dataclass(frozen=True)
class _SamplingPlan:
    """How :func:`generate` draws its samples: solver settings, conditioning and batching."""

    solver: str
    steps: int
    grid: str
    seed: int
    labels: Tensor | None
    cfg_scale: float | None
    null_label: int | None
    batch_size: int
    device: str | torch.device
    sample_kwargs: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def generate(  # noqa: PLR0913 - keyword options of the front, mirroring timestepper.sample
    denoiser: Denoiser,
    n: int,
    shape: tuple[int, ...],
    solver: str = "dpmpp-2m",
    steps: int = 10,
    grid: str | None = None,
    *,
    seed: int = 0,
    noise: Tensor | None = None,
    labels: Tensor | None = None,
    cfg_scale: float | None = None,
    null_label: int | None = None,
    batch_size: int = 1000,
    device: str | torch.device = "cpu",
    **sample_kwargs: Any,
) -> tuple[Tensor, float]:
    """``n`` samples of shape ``shape`` and the model evaluations per sample.

    Args:
        denoiser: the model.
        n: number of samples.
        shape: shape of one sample.
        solver, steps, grid: as in :func:`timestepper.sample` (grid defaults to
            :func:`~timestepper.diffusion.grids.default_spacing`).
        seed: seeds the noise (drawn on the host in float32, so a seed gives the same samples
            everywhere) and stochastic solvers.
        noise: explicit initial noise ``(n, *shape)`` instead of a seeded draw.
        labels: class labels ``(n,)`` for a conditional model.
        cfg_scale: classifier-free guidance scale (needs ``labels`` and ``null_label``); ``None``
            calls the conditional model directly.
        batch_size: samples per solver call.

    Integer arguments accept any integer type (``numpy.int64`` too), not ``bool``.
    """
    n, batch_size, seed = (
        _integer("n", n, 1), _integer("batch_size", batch_size, 1), _integer("seed", seed, 0)
    )
    plan = _SamplingPlan(
        solver=solver,
        steps=steps,
        grid=default_spacing(denoiser.schedule) if grid is None else grid,
        seed=seed,
        labels=labels,
        cfg_scale=cfg_scale,
        null_label=null_label,
        batch_size=batch_size,
        device=device,
        sample_kwargs=sample_kwargs,
    )
    noise = _initial_noise(n, shape, seed, noise)
    out, nfe = [], 0.0
    for i in range(0, n, batch_size):
        x, nfe = _sample_batch(denoiser, noise, i, plan)
        out.append(x)
    return torch.cat(out), float(nfe)


def _integer(name: str, value: Any, low: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _initial_noise(n: int, shape: tuple[int, ...], seed: int, noise: Tensor | None) -> Tensor:
    """The given noise (checked to have ``n`` rows), else a seeded float32 draw on the host."""
    if noise is None:
        return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
    if noise.shape[0] != n:
        raise ValueError(f"noise has {noise.shape[0]} rows, n={n}")
    return noise


def _sample_batch(
    denoiser: Denoiser, noise: Tensor, start: int, plan: _SamplingPlan
) -> tuple[Tensor, Any]:
    """Samples (on the host) of rows ``start:start + batch_size`` and the NFE of that solve."""
    stop = start + plan.batch_size
    z = noise[start:stop].to(plan.device)
    den = _batch_denoiser(denoiser, start, plan)
    sol = sample(
        den,
        z,
        plan.solver,
        plan.steps,
        plan.grid,
        generator=plan.seed + start,
        return_solution=True,
        **plan.sample_kwargs,
    )
    return sol.x.cpu(), sol.stats.nfe


def _batch_denoiser(denoiser: Denoiser, start: int, plan: _SamplingPlan) -> Denoiser:
    """The denoiser of one batch: conditioned on its labels, guided when ``cfg_scale`` is set."""
    if plan.labels is None:
        if plan.cfg_scale is not None:
            raise ValueError("cfg_scale needs labels=")
        return denoiser
    lb = plan.labels[start : start + plan.batch_size].to(plan.device)
    if plan.cfg_scale is None:
        return Denoiser(
            denoiser.model_fn,
            denoiser.schedule,
            denoiser.prediction,
            {**denoiser.model_kwargs, "labels": lb},
        )
    return cfg_guidance(denoiser, plan.cfg_scale, labels=lb, null_label=plan.null_label)


@torch.no_grad()
def reflow_pairs(
    denoiser: Denoiser,
    n: int,
    shape: tuple[int, ...],
    solver: str = "dpmpp-2m",
    steps: int = 20,
    grid: str | None = None,
    *,
    seed: int = 0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """``(noise, samples)``: ``n`` pairs coupled by the model's ODE (any solver), for reflow.

    Train the next flow with ``train(..., data=samples, noise=noise)`` and the
    :func:`~timestepper.train.objectives.reflow` objective.
    """
    noise = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
    x, _ = generate(denoiser, n, shape, solver, steps, grid, seed=seed, noise=noise, **kwargs)
    return noise, x


@torch.no_grad()
def straightness(denoiser: Denoiser, noise: Tensor, steps: int = 32) -> float:
    """Straightness ``S`` of a flow (Liu et al. 2022, eq. 7) on a uniform Euler trajectory of
    ``steps`` steps from ``noise``: the time-average of ``|(x_end - x_start) - v_i|^2`` (mean
    over samples, divided by the dimension), where ``v_i`` is the velocity of step ``i`` in the
    direction noise -> data. For rectified flow (time in ``[0, 1]``) only."""
    if not isinstance(denoiser.schedule, RectifiedFlowSchedule):
        raise ValueError("straightness is defined here for RectifiedFlowSchedule models")
    sol = sample(denoiser, noise, "ddim", steps, "uniform", save="all", return_solution=True)
    return path_straightness(sol.ys, sol.ts)


def path_straightness(ys, times: Tensor) -> float:
    """``S`` (Liu et al. 2022, eq. 7) of a discrete path: states ``ys[0..K]`` at monotone
    ``times[0..K]``; the velocity of step ``i`` is ``(ys[i+1] - ys[i]) / |dt_i|`` and ``S`` the
    ``|dt|``-weighted sum of ``|(ys[K] - ys[0]) / sum|dt| - v_i|^2`` (mean over samples, divided by
    the dimension)."""
    total = ys[-1] - ys[0]
    dt = (times[:-1] - times[1:]).abs()  # positive durations
    s = 0.0
    for i in range(dt.numel()):
        v = (ys[i + 1] - ys[i]) / float(dt[i])
        s += float(dt[i]) * float((total / float(dt.sum()) - v).pow(2).flatten(1).mean())
    return s

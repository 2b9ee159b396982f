"""Drawing samples from a trained model in batches, and the reflow tools built on it.

* :func:`generate`: seeded samples (optionally class-conditional with classifier-free guidance)
  with any solver and grid; returns the samples and the measured NFE per sample.
* :func:`reflow_pairs`: the coupling ``(noise, sample)`` of a trained flow, the training set of
  reflow (Liu et al. 2022, Sec. 2.3, Algorithm 1: ``(Z_0, Z_1)`` drawn from the current flow).
* :func:`straightness`: ``S = int_0^1 E |(Z_1 - Z_0) - dZ_t/dt|^2 dt`` (Liu et al. 2022, eq. 7)
  along the Euler trajectory, zero for a straight flow.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import NoiseSchedule, RectifiedFlowSchedule
from ..guidance import cfg as cfg_guidance
from ..sampling.sample import sample


def default_grid(schedule: NoiseSchedule) -> str:
    """``uniform`` for flows whose range reaches the data (log-SNR is infinite there), else
    ``logsnr``."""
    return "uniform" if isinstance(schedule, RectifiedFlowSchedule) else "logsnr"


@torch.no_grad()
def generate(
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
            :func:`default_grid`).
        seed: seeds the noise (drawn on the host in float32, so a seed gives the same samples
            everywhere) and stochastic solvers.
        noise: explicit initial noise ``(n, *shape)`` instead of a seeded draw.
        labels: class labels ``(n,)`` for a conditional model.
        cfg_scale: classifier-free guidance scale (needs ``labels`` and ``null_label``); ``None``
            calls the conditional model directly.
        batch_size: samples per solver call.
    """
    grid = default_grid(denoiser.schedule) if grid is None else grid
    if noise is None:
        noise = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
    elif noise.shape[0] != n:
        raise ValueError(f"noise has {noise.shape[0]} rows, n={n}")
    out, nfe = [], 0.0
    for i in range(0, n, batch_size):
        z = noise[i : i + batch_size].to(device)
        den = denoiser
        if labels is not None:
            lb = labels[i : i + batch_size].to(device)
            if cfg_scale is None:
                den = Denoiser(
                    denoiser.model_fn,
                    denoiser.schedule,
                    denoiser.prediction,
                    {**denoiser.model_kwargs, "labels": lb},
                )
            else:
                den = cfg_guidance(denoiser, cfg_scale, labels=lb, null_label=null_label)
        elif cfg_scale is not None:
            raise ValueError("cfg_scale needs labels=")
        sol = sample(
            den, z, solver, steps, grid, generator=seed + i, return_solution=True, **sample_kwargs
        )
        out.append(sol.x.cpu())
        nfe = sol.stats.nfe
    return torch.cat(out), float(nfe)


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
    ys, ts = sol.ys, sol.ts
    total = ys[-1] - ys[0]
    dt = (ts[:-1] - ts[1:]).abs()  # positive durations, sum = t_max - t_data
    s = 0.0
    for i in range(dt.numel()):
        v = (ys[i + 1] - ys[i]) / float(dt[i])
        s += float(dt[i]) * float((total / float(dt.sum()) - v).pow(2).flatten(1).mean())
    return s

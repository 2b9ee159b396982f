"""Time-step-aware calibration data: PTQ4DM's Normally Distributed Time-step Calibration (NDTC).

PTQ4DM (Shang et al. 2023, "Post-training Quantization on Diffusion Models", CVPR, Sec. 4.2 and
Algorithm 1) builds the calibration set from the sampler itself rather than from training images:

1. draw a time step for each calibration sample from a normal distribution
   ``N(mu, sigma^2)`` over the trajectory, with ``mu`` below the middle so that the samples lean
   towards the data end ``x_0`` (the released script: ``mu = 0.4 T``, ``sigma = 0.4 T``, the draw
   truncated to an integer step and clipped to ``[0, T - 1]``);
2. generate ``x_t`` by running the full-precision sampler from ``x_T ~ N(0, I)`` down to that step.

Here ``T`` is the number of model evaluations of the sampler the model is calibrated for (its
solver, steps and grid), step ``k`` counts evaluations from the data end (``k = 0`` the last
evaluation), and each calibration sample keeps its own noise draw and trajectory.
:func:`record_trajectory` records every model call of one full-precision solve;
:func:`ndtc_positions` draws the steps; :func:`calibration_set` puts both together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import default_spacing
from ..sampling.sample import sample


@dataclass(frozen=True)
class Calibration:
    """How a model is calibrated.

    Attributes:
        solver, steps, grid: the sampler whose trajectory provides the calibration inputs (and,
            for the temporal methods, the first cached grid); ``grid=None``: the schedule's
            :func:`~timestepper.diffusion.grids.default_spacing`, as :func:`~timestepper.train.generate`.
        samples: number of calibration inputs ``(x_t, t)`` (PTQ4DM's released script: 1024).
        mean, std: NDTC's normal distribution of the time step, as fractions of the trajectory's
            evaluations counted from the data end (PTQ4DM: 0.4 and 0.4).
        seed: seeds the noise and the time-step draw.
        batch_size: rows per calibration forward.
        sample_kwargs: further options of :func:`timestepper.sample` (``final``, ``solver_options``).
    """

    solver: str = "dpmpp-2m"
    steps: int = 20
    grid: str | None = None
    samples: int = 256
    mean: float = 0.4
    std: float = 0.4
    seed: int = 0
    batch_size: int = 256
    sample_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {self.samples!r}")
        if not self.std > 0:
            raise ValueError(f"std must be > 0, got {self.std!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")


@torch.no_grad()
def record_trajectory(denoiser: Denoiser, noise: Tensor, cal: Calibration) -> tuple[list[Tensor], list[Tensor]]:
    """``(xs, ts)``: the state and time of every model call of one solve from ``noise``, in call
    order (noise to data); ``ts[k]`` has one time per sample."""
    xs: list[Tensor] = []
    ts: list[Tensor] = []

    def recorder(x: Tensor, t: Tensor, **kw: Any) -> Tensor:
        xs.append(x.detach().clone())
        ts.append((t.expand(x.shape[0]) if t.ndim == 0 else t).detach().clone())
        return denoiser.model_fn(x, t, **kw)

    probe = Denoiser(recorder, denoiser.schedule, denoiser.prediction, denoiser.model_kwargs)
    grid = default_spacing(denoiser.schedule) if cal.grid is None else cal.grid
    sample(probe, noise, cal.solver, cal.steps, grid, generator=cal.seed, **cal.sample_kwargs)
    return xs, ts


def ndtc_positions(n: int, calls: int, mean: float, std: float, generator: torch.Generator) -> Tensor:
    """Call positions (0 = first call, at the noise end) of ``n`` NDTC draws on a trajectory of
    ``calls`` model evaluations: step ``k = trunc(u calls)``, ``u ~ N(mean, std^2)``, clipped to
    ``[0, calls - 1]`` and counted from the data end."""
    u = torch.randn(n, generator=generator, dtype=torch.float64) * std + mean
    k = (u * calls).trunc().clamp(0, calls - 1).long()
    return calls - 1 - k


def calibration_set(denoiser: Denoiser, shape: tuple[int, ...], cal: Calibration) -> tuple[Tensor, Tensor]:
    """``(x, t)``: ``cal.samples`` NDTC calibration inputs, each ``x_t`` produced by the
    full-precision sampler from its own noise draw."""
    gen = torch.Generator().manual_seed(cal.seed)
    noise = torch.randn((cal.samples, *shape), generator=gen)
    xs, ts = record_trajectory(denoiser, noise, cal)
    pos = ndtc_positions(cal.samples, len(xs), cal.mean, cal.std, gen)
    rows = torch.arange(cal.samples)
    x = torch.stack(xs)[pos, rows]
    t = torch.stack(ts)[pos, rows]
    return x, t


@torch.no_grad()
def evaluation_times(denoiser: Denoiser, shape: tuple[int, ...], solver: str, steps: int,
                     grid: str | Tensor | None = None, **sample_kwargs: Any) -> Tensor:
    """The distinct times at which ``solver`` evaluates the model on its grid (sorted), found by
    one solve of a zero model on one sample: deterministic fixed-grid solvers query the same
    times whatever the model returns."""
    seen: list[Tensor] = []

    def zero(x: Tensor, t: Tensor, **kw: Any) -> Tensor:
        seen.append(t.reshape(-1)[:1].detach().clone())
        return torch.zeros_like(x)

    probe = Denoiser(zero, denoiser.schedule, denoiser.prediction)
    grid = default_spacing(denoiser.schedule) if grid is None else grid
    sample(probe, torch.zeros((1, *shape)), solver, steps, grid, **sample_kwargs)
    return torch.unique(torch.cat(seen))

"""Stochastic samplers on the exact Gaussian mixture: SW2 to exact samples per sampler and NFE.

Called by ``timestepper bench gmm --stochastic`` (the rows are added to its table, SW2 only: a
stochastic sampler has no single reference trajectory to compare against).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..diffusion.grids import make_grid
from ..diffusion.schedules import NoiseSchedule, VPLinearSchedule
from ..sampling.sample import sample
from .gmm import GaussianMixture
from .metrics import sliced_wasserstein

# registry name -> (solver options, model calls per step)
STOCHASTIC_SAMPLERS: dict[str, tuple[dict[str, Any], int]] = {
    "ddpm": ({}, 1),
    "euler-ancestral": ({}, 1),
    "ddim": ({"eta": 0.5}, 1),
    "dpmpp-2s-ancestral": ({}, 2),
    "dpm-2-ancestral": ({}, 2),
    "dpmpp-sde": ({}, 2),
    "sde-dpmpp-2m": ({}, 1),
    "sde-dpmpp-3m": ({}, 1),
    "euler-maruyama": ({}, 1),
    "pc": ({"predictor": "euler-maruyama", "snr": 0.16, "n_corrector": 1}, 2),
}


def stochastic_rows(  # noqa: PLR0913 - keyword options of the benchmark
    gmm: GaussianMixture,
    nfes: Sequence[int] = (5, 6, 8, 10, 15, 20),
    *,
    schedule: NoiseSchedule | None = None,
    prediction: str = "epsilon",
    grid: str = "logsnr",
    n_samples: int = 1000,
    n_refs: int = 3,
    seed: int = 0,
    solvers: Sequence[str] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """SW2 of each stochastic sampler at each NFE budget, and the exact-vs-exact baseline.

    Args:
        gmm: the mixture (its exact denoiser is the model).
        nfes: model-call budgets; a sampler with ``k`` calls per step gets ``max(1, nfe // k)``
            steps (the row's ``nfe`` is the count actually made).
        schedule: noise schedule (default :class:`VPLinearSchedule`).
        prediction: the model's prediction type.
        grid: the time grid spacing.
        n_samples: samples per run (and per exact set).
        n_refs: the SW2 of a row is its mean over ``n_refs`` independent exact sets; the baseline
            is the mean SW2 between ``n_refs`` pairs of exact sets (one pair alone is noisy).
        seed: seeds the starting noise (``seed``), the solvers' generator (``seed + 1``) and the
            exact sets (``seed + 2`` onwards).
        solvers: names from :data:`STOCHASTIC_SAMPLERS` (default: all).
        on_row: called with each row as it is produced (progress display).

    Returns:
        A list of dicts with keys ``solver`` (name, with options), ``nfe_budget``, ``nfe``,
        ``steps``, ``sw2``, ``sw2_ratio`` (to the baseline), ``time_s``; the first row is the
        baseline with ``solver="exact (baseline)"``.
    """
    schedule = VPLinearSchedule() if schedule is None else schedule
    names = list(STOCHASTIC_SAMPLERS) if solvers is None else list(solvers)
    unknown = [n for n in names if n not in STOCHASTIC_SAMPLERS]
    if not isinstance(n_refs, int) or n_refs < 1:
        raise ValueError(f"n_refs must be an integer >= 1, got {n_refs!r}")
    if unknown:
        raise ValueError(f"unknown stochastic samplers {unknown}; "
                         f"choose from {', '.join(STOCHASTIC_SAMPLERS)}")
    den = gmm.denoiser(schedule, prediction)
    noise = torch.randn(n_samples, gmm.dim, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
    refs = [gmm.sample(n_samples, torch.Generator().manual_seed(seed + 2 + k))
            for k in range(n_refs)]
    others = [gmm.sample(n_samples, torch.Generator().manual_seed(seed + 2 + n_refs + k))
              for k in range(n_refs)]
    base = sum(sliced_wasserstein(o, r) for o, r in zip(others, refs)) / n_refs
    rows = [{"solver": "exact (baseline)", "nfe_budget": 0, "nfe": 0, "steps": 0, "sw2": base,
             "sw2_ratio": 1.0, "time_s": 0.0}]
    if on_row is not None:
        on_row(rows[0])
    for name in names:
        opts, per_step = STOCHASTIC_SAMPLERS[name]
        label = name + "".join(f" {k}={v}" for k, v in opts.items())
        for nfe in nfes:
            steps = max(1, int(nfe) // per_step)
            make_grid(schedule, steps, grid)  # validate before timing
            t0 = time.perf_counter()
            sol = sample(den, noise, name, steps=steps, grid=grid, solver_options=opts,
                         generator=torch.Generator().manual_seed(seed + 1), return_solution=True)
            elapsed = time.perf_counter() - t0
            sw2 = sum(sliced_wasserstein(sol.x, r) for r in refs) / n_refs
            row = {"solver": label, "nfe_budget": int(nfe), "nfe": sol.stats.nfe, "steps": steps,
                   "sw2": sw2, "sw2_ratio": sw2 / base, "time_s": elapsed}
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows

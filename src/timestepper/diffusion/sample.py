"""``sample``: the front for diffusion and flow models."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core.integrate import integrate
from ..core.solution import Solution
from ..core.solver import Solver, get
from ..core.terms import check_state
from .denoiser import Denoiser
from .grids import SamplingGrid, make_grid
from .term import DiffusionTerm


def sample(
    denoiser: Denoiser,
    noise: Tensor,
    solver: str | Solver = "dpmpp-2m",
    steps: int = 10,
    grid: str | Tensor = "logsnr",
    *,
    final: str = "zero",
    shift: float | None = None,
    grid_options: dict[str, Any] | None = None,
    solver_options: dict[str, Any] | None = None,
    generator: torch.Generator | int | None = None,
    return_solution: bool = False,
    save: str = "final",
    progress: bool = False,
    check_finite: bool = True,
    callback=None,
) -> Tensor | Solution:
    """Sample a diffusion or flow model by solving its probability-flow ODE (or SDE).

    Args:
        denoiser: the :class:`Denoiser` (network, schedule, prediction type).
        noise: standard Gaussian noise shaped like a batch of samples; the initial state is
            ``noise * sqrt(alpha^2 + sigma^2)`` at the first grid time (``noise`` itself for VP
            schedules and flows, ``noise * sqrt(1 + sigma_max^2)`` for EDM/VE).
        solver: registry name (``ts.solvers.available()``) or a solver instance.
        steps: number of steps (ignored when ``grid`` is a tensor).
        grid: spacing name or explicit 1-D tensor of model-evaluation times (noise to data); see
            :mod:`timestepper.diffusion.grids`.
        final: ``"zero"`` (last step to sigma = 0, default) or ``"sigma_min"``.
        shift: flow time-shift factor applied to a named grid.
        grid_options: spacing options, e.g. ``{"rho": 7}``.
        solver_options: options for a solver given by name, e.g. ``{"order": 3}``.
        generator: ``torch.Generator`` or integer seed for stochastic solvers.
        return_solution: return the :class:`Solution` (grid, stats) instead of the final state.
        save: ``"final"`` or ``"all"`` (every intermediate state in ``Solution.ys``).
        progress: show a progress bar.
        check_finite: raise naming the step and time where NaN/inf appeared.
        callback: ``callback(i, t, x)`` after each step.
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
    check_state("noise", noise)
    solver = get(solver, **(solver_options or {}))
    sgrid = make_grid(denoiser.schedule, steps, grid, final=final, shift=shift, **(grid_options or {}))
    if isinstance(generator, int):
        generator = torch.Generator(device=noise.device).manual_seed(generator)
    term = DiffusionTerm(denoiser, generator=generator)
    scale = float(torch.sqrt(sgrid.alpha[0] ** 2 + sgrid.sigma[0] ** 2))
    x0 = noise * scale if scale != 1.0 else noise
    if getattr(solver, "adaptive", False):
        sol = _sample_adaptive(term, solver, sgrid, x0, save, progress, callback)
    else:
        sol = integrate(term, solver, sgrid, x0, save=save, check_finite=check_finite, progress=progress,
                        callback=callback)
    sol.extras["grid"] = sgrid
    return sol if return_solution else sol.x


def _sample_adaptive(term, solver, sgrid, x0, save, progress, callback) -> Solution:
    """An adaptive solver (``solver.adaptive``) integrates in log-SNR with its own controller from
    the grid's first to its last noisy point; a final step to zero noise is the data prediction."""
    term.prepare(sgrid, x0)
    sol = integrate(term, solver, solver.controller, x0, t_span=solver.log_snr_span(sgrid), save=save,
                    progress=progress, callback=callback)
    if float(sgrid.sigma[-1]) == 0.0:
        nfe = term.nfe
        last = SamplingGrid.from_times(term.schedule, sgrid.t[-2:])
        x = term.data_prediction(sol.x, term.add_points(last)) * float(sgrid.alpha[-1])
        sol.stats.nfe += term.nfe - nfe
        sol.x = x
    return sol

"""``sample``: the front for diffusion and flow models."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core.integrate import integrate
from ..core.solution import Solution, Stats
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
    if not solver.samples_diffusion:
        raise TypeError(f"solver {type(solver).__name__} does not sample diffusion models; choose a diffusion solver "
                        f"({', '.join(diffusion_solver_names())})")
    sgrid = make_grid(denoiser.schedule, steps, grid, final=final, shift=shift, **(grid_options or {}))
    if isinstance(generator, int):
        generator = torch.Generator(device=noise.device).manual_seed(generator)
    term = DiffusionTerm(denoiser, generator=generator)
    scale = float(torch.sqrt(sgrid.alpha[0] ** 2 + sgrid.sigma[0] ** 2))
    x0 = noise * scale if scale != 1.0 else noise
    if _starts_from_pure_noise(sgrid, solver):
        sol = _sample_from_pure_noise(term, solver, sgrid, x0, save, check_finite, progress, callback)
    elif _is_adaptive(solver):
        sol = _sample_adaptive(term, solver, sgrid, x0, save, progress, callback)
    else:
        sol = integrate(term, solver, sgrid, x0, save=save, check_finite=check_finite, progress=progress,
                        callback=callback)
    sol.extras["grid"] = sgrid
    return sol if return_solution else sol.x


def _is_adaptive(solver: Solver) -> bool:
    from ..solvers.base import DiffusionSolver

    return isinstance(solver, DiffusionSolver) and bool(getattr(solver, "adaptive", False))


def diffusion_solver_names() -> list[str]:
    """Registry names of the solvers ``sample`` accepts."""
    from ..core.solver import available

    out = []
    for name in available():
        try:
            if get(name).samples_diffusion:
                out.append(name)
        except TypeError:  # needs options to be built
            continue
    return out


def _starts_from_pure_noise(sgrid: SamplingGrid, solver: Solver) -> bool:
    from ..solvers.ddim import DDIM

    return float(sgrid.alpha[0]) == 0.0 and sgrid.steps > 1 and not isinstance(solver, DDIM)


def _sample_from_pure_noise(term, solver, sgrid, x0, save, check_finite, progress, callback) -> Solution:
    """A grid that starts where ``alpha = 0`` (a flow model at ``t = 1``): log-SNR is -inf there, so
    multistep history, noise-prediction forms (``x / alpha``) and sigma-space methods
    (``sigma / alpha``) are undefined on the first step. That step is taken by DDIM, which is the
    exact limit of every first-order method there, and in distribution of every stochastic one
    too (at ``alpha = 0`` the denoiser does not depend on the state, so ``x_1 = alpha_1 D +
    sigma_1 x_0`` has the law of the ancestral step); ``solver`` starts from the second point."""
    from ..solvers.ddim import DDIM

    head = integrate(term, DDIM(), sgrid.points(0, 2), x0, save=save, check_finite=check_finite,
                     callback=callback)
    shifted = None if callback is None else (lambda i, t, x: callback(i + 1, t, x))
    rest = sgrid.points(1)
    if _is_adaptive(solver):
        tail = _sample_adaptive(term, solver, rest, head.x, save, progress, shifted)
    else:
        tail = integrate(term, solver, rest, head.x, save=save, check_finite=check_finite, progress=progress,
                         callback=shifted)
    stats = Stats(nfe=head.stats.nfe + tail.stats.nfe, steps=head.stats.steps + tail.stats.steps,
                  accepted=head.stats.accepted + tail.stats.accepted,
                  rejected=head.stats.rejected + tail.stats.rejected)
    ys = None if head.ys is None or tail.ys is None else torch.cat([head.ys, tail.ys[1:]])
    return Solution(x=tail.x, ts=torch.cat([head.ts[:1], tail.ts]), ys=ys, stats=stats, extras=tail.extras)


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

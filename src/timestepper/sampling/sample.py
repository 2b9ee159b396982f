"""``sample``: the front for diffusion and flow models."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core.solution import SaveAt, Solution
from ..core.solver import Solver
from ..core.validation import as_generator, check_choice, check_state
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import make_grid
from ..diffusion.term import DiffusionTerm
from ..loop import integrate
from ..solvers.registry import available, get
from ..solvers.schedule import SolverSchedule
from .scheduled import check_schedule_nfe, resolve_schedule, searched_path

SAVES = ("final", "all")


def sample(  # noqa: PLR0913 - keyword options of the front, all with defaults
    denoiser: Denoiser,
    noise: Tensor,
    solver: str | Solver | None = None,
    steps: int | None = None,
    grid: str | Tensor | None = None,
    *,
    schedule: SolverSchedule | str | None = None,
    force: bool = False,
    final: str | None = None,
    shift: float | str | None = None,
    grid_options: dict[str, Any] | None = None,
    solver_options: dict[str, Any] | None = None,
    generator: torch.Generator | int | None = None,
    return_solution: bool = False,
    save: str = "final",
    progress: bool = False,
    check_finite: bool = True,
    callback=None,
    grad: bool = False,
) -> Tensor | Solution:
    """Sample a diffusion or flow model by solving its probability-flow ODE (or SDE).

    Args:
        denoiser: the :class:`Denoiser` (network, schedule, prediction type).
        noise: standard Gaussian noise shaped like a batch of samples; the initial state is
            ``noise * sqrt(alpha^2 + sigma^2)`` at the first grid time (``noise`` itself for VP
            schedules and flows, ``noise * sqrt(1 + sigma_max^2)`` for EDM/VE).
        solver: registry name (``ts.solvers.available("diffusion")``) or a solver instance
            (default ``"dpmpp-2m"``).
        steps: number of steps (default 10; ignored when ``grid`` is a tensor).
        grid: spacing name (default ``"logsnr"``) or explicit 1-D tensor of model-evaluation
            times (noise to data), see :mod:`timestepper.diffusion.grids`; or
            ``"searched:PATH"``: the solver schedule saved at ``PATH`` (as ``schedule=PATH``).
        schedule: a :class:`~timestepper.solvers.schedule.SolverSchedule` (or the path of its
            JSON): its times and per-step solver (or its registered solver) are run, exactly
            ``schedule.nfe`` model calls. ``solver``, ``grid``, ``final``, ``shift``,
            ``grid_options`` and ``solver_options`` are then refused, and ``steps`` unless equal
            to the schedule's step count. See ``docs/schedules.md``.
        force: run a schedule whose provenance names another noise schedule or prediction type
            than the model's (refused by default).
        final: ``"zero"`` (last step to sigma = 0, default) or ``"sigma_min"``.
        shift: flow time-shift factor applied to a named grid, or ``"resolution"`` (with
            ``grid_options={"tokens": m, "base_tokens": n}``: ``sqrt(m / n)``, SD3/Lumina-Next).
        grid_options: spacing options, e.g. ``{"rho": 7}``.
        solver_options: options for a solver given by name, e.g. ``{"order": 3}``.
        generator: ``torch.Generator`` or integer seed for stochastic solvers.
        return_solution: return the :class:`Solution` (grid, stats) instead of the final state.
        save: ``"final"`` or ``"all"`` (every intermediate state in ``Solution.ys``).
        progress: show a progress bar.
        check_finite: raise naming the step and time where NaN/inf appeared.
        callback: ``callback(i, t, x)`` after each step.
        grad: record the autograd graph through the steps (to differentiate the sample with
            respect to the noise or the model's parameters). By default sampling runs under
            ``torch.no_grad()``, so memory does not grow with the number of steps; a model that
            needs gradients inside its call (classifier guidance) enables them itself.

    A solver that chooses its own steps (``"dpm-adaptive"``) runs over the grid's log-SNR range
    with its own controller; ``steps`` then only fixes the grid's end points.
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
    check_state("noise", noise)
    check_choice(save, SAVES, "save")
    path = searched_path(grid)
    if path is not None or schedule is not None:
        if path is not None and schedule is not None:
            raise ValueError('give either schedule= or grid="searched:PATH", not both')
        given = dict(solver=solver, steps=steps, final=final, shift=shift, grid_options=grid_options,
                     solver_options=solver_options, grid=None if path is not None else grid)
        source = path if path is not None else schedule
        assert source is not None
        slv, sgrid, sched = resolve_schedule(denoiser, source, force, given)
    else:
        sched = None
        slv = get("dpmpp-2m" if solver is None else solver, **(solver_options or {}))
        sgrid = make_grid(denoiser.schedule, 10 if steps is None else steps,
                          "logsnr" if grid is None else grid, final=final or "zero", shift=shift,
                          **(grid_options or {}))
    if slv.family != "diffusion":
        raise TypeError(f"solver {slv.display_name!r} ({slv.family}) does not sample diffusion "
                        f"models; choose a diffusion solver ({', '.join(available('diffusion'))})")
    term = DiffusionTerm(denoiser, generator=as_generator(generator, noise.device))
    scale = float(torch.sqrt(sgrid.alpha[0] ** 2 + sgrid.sigma[0] ** 2))
    x0 = noise * scale if scale != 1.0 else noise
    options: dict[str, Any] = dict(saveat=SaveAt(steps=save == "all"), progress=progress,
                                   callback=callback, check_finite=check_finite)
    controller = slv.default_controller(sgrid)
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        if controller is None:
            sol = integrate(term, slv, sgrid, x0, **options)
        else:  # the solver's own steps over the grid's log-SNR range
            lam = sgrid.log_snr.tolist()
            sol = integrate(term, slv, controller, x0, t_span=(lam[0], lam[-1]), **options)
    sol.extras["grid"] = sgrid
    if sched is not None:
        check_schedule_nfe(sched, sol.stats.nfe)
    return sol if return_solution else sol.x


__all__ = ["sample"]

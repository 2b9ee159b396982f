"""The per-step schedule of an existing multistep solver on a grid
(:meth:`~timestepper.solvers.schedule.SolverSchedule.from_solver`): the orders, prediction type,
variant and correctors that solver uses at each step, read from its own order rules."""

from __future__ import annotations

from ..diffusion.grids import SamplingGrid
from .base import DiffusionSolver
from .ddim import DDIM
from .dpmpp import DPMSolverMultistep
from .expint import first_order_at
from .step_spec import StepSpec
from .unipc import UniPC, unipc_orders


def _table_grid(solver: DiffusionSolver, grid: SamplingGrid) -> tuple[SamplingGrid, int]:
    """The grid the solver's table covers (without the DDIM step from pure noise) and that step
    count (0 or 1)."""
    if solver.starts_from_pure_noise(grid):
        return grid.points(1), 1
    return grid, 0


def _dpm_specs(solver: DPMSolverMultistep, grid: SamplingGrid) -> list[StepSpec]:
    if solver.eta != 0.0 or (solver.max_order == 3 and solver.third_order_weight != "taylor"):
        raise ValueError("from_solver reproduces the ODE multistep DPM-Solver with the Taylor "
                         "third-order weight (eta = 0, third_order_weight='taylor')")
    variant = "midpoint" if solver.solver_type == "midpoint" else "taylor"
    return [StepSpec(k, solver.prediction, False, variant) for k in solver.step_orders(grid)]


def _unipc_specs(solver: UniPC, grid: SamplingGrid) -> list[StepSpec]:
    n = grid.steps
    orders = unipc_orders(n, solver.predictor_order, solver.lower_order_final)
    return [
        StepSpec(1 if first_order_at(grid, i) else k, "data",
                 i < n - 1 and i not in solver.disable_corrector, solver.variant)
        for i, k in enumerate(orders)
    ]


def specs_of_solver(solver: object, grid: SamplingGrid) -> tuple[StepSpec, ...]:
    """The :class:`StepSpec` of every step of ``grid`` that reproduces ``solver`` bit for bit."""
    if isinstance(solver, DDIM):
        if solver.is_stochastic:
            raise ValueError("from_solver reproduces the deterministic DDIM (eta = 0) only")
        return tuple(StepSpec(1, "data", False, "ddim") for _ in range(grid.steps))
    if isinstance(solver, DPMSolverMultistep):
        sub, skipped = _table_grid(solver, grid)
        rest = _dpm_specs(solver, sub) if sub.steps else []
    elif isinstance(solver, UniPC):
        sub, skipped = _table_grid(solver, grid)
        rest = _unipc_specs(solver, sub) if sub.steps else []
    else:
        name = getattr(solver, "display_name", type(solver).__name__)
        raise ValueError(f"from_solver cannot express {name!r} as per-step specs (it handles ddim, "
                         "dpmpp-2m/3m, dpm-solver-2m/3m, unipc-bh1/bh2); run it over the times with "
                         "SolverSchedule(times, solver=name, solver_options=...)")
    first = [StepSpec(1, rest[0].prediction if rest else "data", False, "midpoint")] * skipped
    return tuple(first + rest)


__all__ = ["specs_of_solver"]

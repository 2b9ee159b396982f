"""The solver that runs a per-step solver schedule (USF, Liu et al. 2023): registered as ``"usf"``.

Every step is a multistep exponential-integrator step ``x_{i+1} = cx x_i + sum_j w_j m_{i-j}``
whose order, prediction type and coefficient variant come from its :class:`StepSpec`; an
optional UniC corrector (Zhao et al. 2023) corrects the step's result with the model output of
the next step, as :mod:`timestepper.solvers.unipc` does (one model call per step in all cases).
The coefficients are those of the existing solvers, computed by their own functions:
:func:`~timestepper.solvers.dpmpp.dpm_multistep_weights` (``midpoint``/``taylor``) and
:func:`~timestepper.solvers.unipc.unipc_weights` (``bh1``/``bh2`` and every corrector, in data
or noise prediction), once per grid in float64. So DPM-Solver++(2M/3M), multistep DPM-Solver,
UniPC and DDIM are special cases (reproduced bit-for-bit: ``tests/solvers/test_schedule.py``).

History with mixed prediction types: at each point the solver forms, from the one model output,
exactly the predictions (data, noise or both) that this step or a later one combines there --
decided when the table is built -- and keeps them in the state, newest first, as
``(data, noise, model output)`` entries with ``None`` where unused (the raw output serves the
``ddim`` variant). A schedule in one prediction type thus does the same
tensor work as the solver it generalises; a mixed one converts the model output twice only at the
points where both are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..diffusion.term import EvalPoint
from .base import DiffusionSolver, lincomb, nonzero
from .ddim import first_order_coefficients
from .dpmpp import dpm_multistep_weights
from .expint import first_order_at, step_phis
from .registry import register
from .step_spec import CORRECTOR_VARIANT, StepSpec, check_history, spec_from
from .unipc import unipc_weights

KIND = {"data": 0, "noise": 1, "output": 2}
MAX_PHI = 5  # phi_1 .. phi_5: UniC at predictor order 3 needs phi_{order + 2}

Terms = tuple[tuple[float, int, int], ...]


@dataclass(slots=True)
class ScheduledRow:
    """Step ``i``: evaluate at ``point``; keep ``kinds`` (data?, noise?, output?) of it; UniC
    corrects the previous step's state (``ccx x_prev + sum w h[j][k]`` over ``cterms``; ``None``:
    no correction); the predictor gives ``pcx x_i + sum w h[j][k]`` over ``pterms`` (``h[j]`` the
    entry ``(data, noise, model output)`` of point ``i - j``); ``keep`` entries stay."""

    point: EvalPoint
    kinds: tuple[bool, bool, bool]
    ccx: float | None
    cterms: Terms | None
    pcx: float | None
    pterms: Terms
    keep: int


class Coefficients:
    """The float64 coefficient rules of one grid, evaluated by the existing solvers' functions."""

    def __init__(self, grid) -> None:
        self.grid = grid
        self.phis = step_phis(grid, [(i, i + 1) for i in range(grid.steps)], MAX_PHI)
        self._ddim: tuple[list, list] | None = None

    def predictor(self, i: int, spec: StepSpec, point: EvalPoint) -> tuple[float, Terms]:
        """``(cx, terms)`` of the predictor of step ``i`` (weights on points ``i, i - 1, ..``)."""
        if spec.variant == "ddim":  # DDIM's own arithmetic: x1 = (cx + cd a) x + (cd b) m
            if self._ddim is None:
                self._ddim = first_order_coefficients(self.grid)
            cx, cd = self._ddim[0][i], self._ddim[1][i]
            return cx + cd * point.a, ((cd * point.b, 0, KIND["output"]),)
        if spec.variant in ("midpoint", "taylor"):
            solver_type = "midpoint" if spec.variant == "midpoint" else "heun"
            cx, w = dpm_multistep_weights(self.grid, i, spec.order, self.phis, spec.prediction, solver_type)
        else:
            cx, w = unipc_weights(self.grid, i, i + 1, spec.order, spec.variant, False, self.phis,
                                  spec.prediction)
        return cx, tuple((wj, j, KIND[spec.prediction]) for j, wj in enumerate(w))

    def corrector(self, i: int, spec: StepSpec) -> tuple[float, Terms]:
        """``(cx, terms)`` of UniC after step ``i`` (weights on points ``i + 1, i, i - 1, ..``)."""
        cx, w = unipc_weights(self.grid, i, i + 1, spec.order, CORRECTOR_VARIANT[spec.variant], True,
                              self.phis, spec.prediction)
        return cx, tuple((wj, j, KIND[spec.prediction]) for j, wj in enumerate(w))


def needed(specs: Sequence[StepSpec]) -> list[list[tuple[int, str]]]:
    """Per row ``r``: the (point, prediction) pairs its corrector and predictor combine."""
    rows: list[list[tuple[int, str]]] = []
    for r, s in enumerate(specs):
        own = "output" if s.variant == "ddim" else s.prediction
        need = [(r - j, own) for j in range(s.order)]
        if r > 0 and specs[r - 1].corrector:
            p = specs[r - 1]
            need += [(r - j, p.prediction) for j in range(p.order + 1)]
        rows.append(need)
    return rows


def history_plan(specs: Sequence[StepSpec]) -> tuple[list[tuple[bool, bool, bool]], list[int]]:
    """Which predictions each point forms (data, noise, the raw output), and how many history entries each step
    keeps for the later ones."""
    need = needed(specs)
    kinds = [[False, False, False] for _ in specs]
    for row in need:
        for p, kind in row:
            kinds[p][KIND[kind]] = True
    n = len(specs)
    keep = [max([0, *(i + 1 - min(p for p, _ in need[r]) for r in range(i + 1, n))]) for i in range(n)]
    return [(k[0], k[1], k[2]) for k in kinds], keep


def declared_order(specs: Sequence[StepSpec]) -> int:
    """The lowest ``order + corrector`` of the steps, leaving out the warm-up (the first
    ``max order - 1`` steps) and the last step (first order to zero noise, or uncorrected), as
    the order of the multistep solvers is declared; all steps when no others remain."""
    warm = max(s.order for s in specs) - 1
    core = specs[warm:-1] or specs
    return min(s.order + int(s.corrector) for s in core)


class ScheduledSolver(DiffusionSolver):
    """A per-step solver schedule run as one diffusion solver (USF, Liu et al. 2023).

    Args:
        steps: one :class:`StepSpec` (or dict of its fields) per grid step -- checked against the
            grid: orders within the history, no corrector on the last step, first order on a step
            to zero noise -- or a single :class:`StepSpec` used on every step of any grid, its
            order then lowered to the history available (warm-up) and to 1 on a step to zero
            noise, and its corrector left out on the last step. Default: ``StepSpec()``
            (UniP-2, data prediction).

    The declared ``order`` is the lowest ``order + corrector`` of the steps (UniC raises the
    order by one, Zhao et al. 2023, Theorem 3.3), leaving out the warm-up and the last step of
    an explicit list (:func:`declared_order`); one model call per step.
    """

    fitted_to_model = True

    nfe_per_step = 1
    _offset = 0

    def __init__(self, steps: StepSpec | Sequence[StepSpec | dict] | None = None) -> None:
        if steps is None or isinstance(steps, (StepSpec, dict)):
            self.uniform: StepSpec | None = spec_from(0, steps or StepSpec())
            self.specs: tuple[StepSpec, ...] | None = None
            specs: Sequence[StepSpec] = (self.uniform,)
        else:
            self.uniform = None
            self.specs = tuple(spec_from(i, s) for i, s in enumerate(steps))
            if not self.specs:
                raise ValueError("steps must hold at least one StepSpec")
            specs = self.specs
        self.order = declared_order(specs)

    def init(self, term, grid, x0):
        # a grid from pure noise: its first step is the DDIM step (base class) and the table
        # covers the rest, which the explicit specs then start one step later
        self._offset = int(grid is not None and self.starts_from_pure_noise(grid))
        if grid is not None and self.specs is not None and len(self.specs) != grid.steps:
            raise ValueError(f"the schedule has {len(self.specs)} steps but the grid has "
                             f"{grid.steps}: the NFE must match (len(steps) == len(times) - 1)")
        return super().init(term, grid, x0)

    def grid_specs(self, grid) -> tuple[StepSpec, ...]:
        """The specs of the steps of ``grid`` (the table's grid: without the DDIM step from pure
        noise), checked against it."""
        n = grid.steps
        if self.specs is not None:
            check_history(self.specs, first_with_history=self._offset,
                          final_zero=first_order_at(grid, n - 1))
            return self.specs[self._offset:]
        u = self.uniform
        assert u is not None
        return tuple(
            StepSpec(1 if first_order_at(grid, i) else min(u.order, i + 1), u.prediction,
                     u.corrector and i < n - 1, u.variant)
            for i in range(n)
        )

    def table(self, term, grid, points, x0):
        specs = self.grid_specs(grid)
        coef = Coefficients(grid)
        kinds, keep = history_plan(specs)
        rows = []
        for i, s in enumerate(specs):
            pcx, pterms = coef.predictor(i, s, points[i])
            ccx, cterms = None, None
            if i > 0 and specs[i - 1].corrector:
                c, cterms = coef.corrector(i - 1, specs[i - 1])
                ccx = nonzero(c)
            rows.append(ScheduledRow(points[i], kinds[i], ccx, cterms, nonzero(pcx), pterms, keep[i]))
        return rows

    def start_state(self, x0: Any) -> Any:
        return (x0, ())

    def advance(self, term, x, state, row):
        # state = (x_{i-1}, entries): the previous step's start and the kept (data, noise, output)
        m = term.model_output(x, row.point)
        entry = (term.data_from_output(x, m, row.point) if row.kinds[0] else None,
                 term.noise_from_output(x, m, row.point) if row.kinds[1] else None,
                 m if row.kinds[2] else None)
        hist = (entry, *state[1])
        if row.cterms is not None:  # UniC: correct x_i with the model output just computed
            x = lincomb(state[0], row.ccx, tuple((w, hist[j][k]) for w, j, k in row.cterms))
        out = lincomb(x, row.pcx, tuple((w, hist[j][k]) for w, j, k in row.pterms))
        return out, (x, hist[: row.keep]), None, 1


register("usf", ScheduledSolver,
         summary="A per-step solver schedule (USF, Liu et al. 2023): order, data/noise prediction, "
                 "coefficient variant and UniC corrector chosen per step. One model call per step.")

__all__ = ["ScheduledRow", "ScheduledSolver"]

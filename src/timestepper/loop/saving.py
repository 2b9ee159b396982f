"""What the shared-step loop keeps while it runs: :class:`Recorder` serves a :class:`SaveAt`.

* ``steps``: the state after every accepted step (and the initial one);
* ``ts``: the state at given times, from the solver's dense output inside a step when it has
  one (the loop otherwise shortens steps to land on them, or, on a fixed grid, they are grid
  points);
* ``dense``: every accepted step's interpolation data, for ``Solution.interpolation``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core.solution import DenseInterpolation, SaveAt
from ..core.solver import Solver
from ..core.validation import save_times


class Recorder:
    """Collects saved states of a shared-step solve from ``t0`` towards ``t1``.

    Args:
        saveat: what to keep.
        solver, term: used for dense output.
        t0, t1: the interval.
        x0: the initial state.
        fixed_times: the grid of a fixed-grid solve (save times must be among its points).
    """

    def __init__(self, saveat: SaveAt, solver: Solver, term: Any, t0: float, t1: float,  # noqa: PLR0913
                 x0: Tensor, fixed_times: list[float] | None) -> None:
        self.solver, self.term = solver, term
        self.direction = 1.0 if t1 >= t0 else -1.0
        self.ts = save_times(saveat.ts, t0, t1) if saveat.ts is not None else []
        self.steps = saveat.steps
        self.use_dense = bool(self.ts) and solver.has_dense_output and fixed_times is None
        if saveat.dense and not solver.has_dense_output:
            raise ValueError(f"SaveAt(dense=True) needs a solver with dense output; "
                             f"{solver.display_name!r} has none")
        if self.ts and fixed_times is not None:
            on_grid = set(fixed_times)
            missing = [s for s in self.ts if s not in on_grid]
            if missing:
                raise ValueError(f"on a fixed grid the save times must be grid points; "
                                 f"{missing[0]:.6g} is not (add it to the grid)")
        self.dense = DenseInterpolation(t0, self.direction, solver.interpolate) if saveat.dense else None
        self.out_ts: list[float] = []
        self.out_ys: list[Tensor] = []
        self.k = 0
        self.active = bool(self.steps or self.ts or self.dense is not None)
        if self.steps:
            self.out_ts.append(t0)
            self.out_ys.append(x0)
        self._take(t0, t0, x0, None)

    def next_stop(self) -> float | None:
        """The next save time a step must land on (``None`` when dense output serves them)."""
        if self.use_dense or self.k >= len(self.ts):
            return None
        return self.ts[self.k]

    def accepted(self, t_prev: float, t: float, x: Tensor, state: Any) -> tuple[Any, int]:
        """Record an accepted step from ``t_prev`` to ``t``; returns the (possibly updated) solver
        state and the evaluations the dense output made."""
        if self.steps:
            self.out_ts.append(t)
            self.out_ys.append(x)
        nfe = 0
        needs_dense = self.dense is not None or (
            self.use_dense and self.k < len(self.ts) and self.direction * (self.ts[self.k] - t) < 0)
        if needs_dense:
            state, nfe = self.solver.prepare_dense(self.term, state)
            if self.dense is not None:
                self.dense.add(t_prev, t, state)
        self._take(t_prev, t, x, state)
        return state, nfe

    def _take(self, t_prev: float, t: float, x: Tensor, state: Any) -> None:
        while self.k < len(self.ts) and self.direction * (self.ts[self.k] - t) <= 0:
            s = self.ts[self.k]
            if s == t or state is None:
                self.out_ys.append(x)
            else:
                self.out_ys.append(self.solver.interpolate(state, (s - t_prev) / (t - t_prev)))
            self.out_ts.append(s)
            self.k += 1

    def result(self) -> tuple[Tensor | None, list[float]]:
        """``(ys, ts)`` of what was saved (``ys`` stacked along dim 0; ``None`` when nothing was
        asked for)."""
        if not self.steps and not self.ts:
            return None, []
        return (torch.stack(self.out_ys) if self.out_ys else None), self.out_ts


__all__ = ["Recorder"]

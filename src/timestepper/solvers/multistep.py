"""The one step shared by the linear multistep diffusion solvers.

DPM-Solver(++) multistep, DEIS, LMS and PLMS all advance by ``x_{i+1} = cx_i x_i + sum_j w_ij m_{i-j}``,
where ``m`` is the model's data or noise prediction at past grid points (newest first). A method
is therefore a coefficient rule: a subclass implements ``weights(grid, i, k, phis)`` and
``orders(grid)``; this module builds the table and applies it. The history lives in the solver
state (a tuple of past predictions, newest first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..diffusion.grids import SamplingGrid
from ..diffusion.term import EvalPoint
from .base import DiffusionSolver, lincomb, may_overwrite, nonzero, stacked_column, stacked_points, stacked_weights
from .expint import PhiTable, first_order_at, step_phis


@dataclass(slots=True)
class MultistepRow:
    """Step ``i``: evaluate at ``point``; ``x_{i+1} = cx x_i + sum_j weights[j] m_{i-j}``."""

    point: EvalPoint
    cx: float | None
    weights: tuple[float, ...]


_PLAIN = (type(None), bool, int, float, str)


def _configuration(solver: object) -> tuple | None:
    """A hashable key of everything that configures ``solver`` (its class and its attributes);
    ``None`` when an attribute is not a plain value (a tensor, fitted data): never cached then."""
    items = sorted(vars(solver).items())
    if not all(isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(e, _PLAIN) for e in v))
               for _, v in items):
        return None
    return (type(solver), tuple(items))


class LinearMultistep(DiffusionSolver):
    """Base class: one model call per step, ``max_order - 1`` past predictions kept in the state.

    Subclasses set ``prediction`` (``"data"`` or ``"noise"``) and implement
    ``orders(grid) -> list[int]`` (the order used at each step) and
    ``weights(grid, i, k, phis) -> (cx, [w_0, ..., w_{k-1}])`` for step ``i`` at order ``k``
    (``w_j`` multiplies the prediction at grid point ``i - j``).
    """

    prediction: str = "data"
    nfe_per_step = 1
    stacks_rows: ClassVar[bool] = True  # subclasses with a step or state of their own set it False
    reuses_state_memory: ClassVar[bool] = True  # likewise
    max_order = 1  # predictions combined per step (the declared ``order`` is the convergence order)
    first_order_to_zero: ClassVar[bool] = True  # exponential integrators: higher terms diverge at h = inf

    def orders(self, grid: SamplingGrid) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def weights(self, grid: SamplingGrid, i: int, k: int,
                phis: PhiTable) -> tuple[float, list[float]]:  # pragma: no cover - interface
        raise NotImplementedError

    def phi_table(self, grid: SamplingGrid) -> PhiTable:
        """The phi values the weights need: ``phi_k(+-h)`` of every step (one call per ``k``)."""
        return step_phis(grid, [(i, i + 1) for i in range(grid.steps)], self.max_order + 1)

    def step_orders(self, grid: SamplingGrid) -> list[int]:
        """The order actually used at each step: ``orders`` within the warm-up, first order on a
        step to zero noise."""
        return [1 if (self.first_order_to_zero and first_order_at(grid, i)) else min(k, i + 1)
                for i, k in enumerate(self.orders(grid))]

    def table(self, term, grid, points, x0):
        return [MultistepRow(points[i], cx, w) for i, (cx, w) in enumerate(self.grid_weights(grid))]

    def grid_weights(self, grid: SamplingGrid) -> list[tuple[float | None, tuple[float, ...]]]:
        """``(cx, weights)`` of every step of ``grid``: float64 rules of the grid alone, computed
        once per grid and solver configuration (cached on the grid, like its floats), so a
        sampler called batch after batch on one grid does not rebuild them."""
        key = _configuration(self)
        cache = grid.__dict__.setdefault("_multistep_weights", {})
        if key is not None and key in cache:
            return cache[key]
        phis = self.phi_table(grid)
        rows = []
        for i, k in enumerate(self.step_orders(grid)):
            cx, w = self.weights(grid, i, k, phis)
            rows.append((nonzero(cx), tuple(w)))
        if key is not None:
            cache[key] = rows
        return rows

    def stacked_rows(self, table, x0):
        """Every row as tensors (cast to the state's dtype, as a Python float coefficient is): the
        warm-up's missing weights and an absent ``x`` term are zeros, the history starts as zeros,
        so every step is the same update (it adds exact zeros where the eager step leaves terms
        out)."""
        if not self.stacks_rows or not table or any(type(r) is not MultistepRow for r in table):
            return None
        point = stacked_points([r.point for r in table], x0)
        cx = stacked_column([0.0 if r.cx is None else r.cx for r in table], x0)
        weights = stacked_weights([r.weights for r in table], self.max_order, x0)
        history = tuple(torch.zeros_like(x0) for _ in range(self.max_order - 1))
        return MultistepRow(point, cx, weights), history  # type: ignore[arg-type]

    def advance(self, term, x, state, row):
        return self._advance(term, x, state, row, reuse_x=False)

    def step_into(self, term, t0, t1, x, state, row):
        if not self.reuses_state_memory or type(row) is not MultistepRow:  # (the first step from pure noise)
            return self.step(term, t0, t1, x, state, row)
        return self._advance(term, x, state, row, reuse_x=True)

    def _advance(self, term, x, state, row, reuse_x: bool):
        m = term.prediction(x, row.point, self.prediction)
        hist = (m, *state)
        out = lincomb(x, row.cx, tuple(zip(row.weights, hist)), into_x=reuse_x and may_overwrite(x, m))
        return out, hist[: self.max_order - 1], None, 1

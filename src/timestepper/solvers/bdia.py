"""BDIA-DDIM: bi-directional integration approximation (Zhang, Lewis & Kleijn 2023, "Exact
diffusion inversion via bi-directional integration approximation", ECCV 2024), and its exact
inverse.

Write ``D_{k->j}(x_k) = alpha_j x0(x_k) + sigma_j eps(x_k)`` for the DDIM map from grid point
``k`` to point ``j`` with the model evaluated once at ``(x_k, t_k)``; the integration
approximations of the paper are ``Delta(t_k -> t_j | x_k) = D_{k->j}(x_k) - x_k``. With the
previous state ``x_{k-1}`` the BDIA step to the next point is

``x_{k+1} = gamma x_{k-1} + (1 - gamma) x_k - gamma Delta(t_k -> t_{k-1} | x_k)
+ Delta(t_k -> t_{k+1} | x_k) = gamma x_{k-1} - gamma D_{k->k-1}(x_k) + D_{k->k+1}(x_k)``:

the backward DDIM step from ``x_k`` re-estimates the integral over the previous interval, and
``gamma`` weighs it against the estimate ``x_k - x_{k-1}`` made when ``x_k`` was computed
(``gamma = 0`` is DDIM; ``gamma = 1`` replaces it entirely). The first step (no previous state)
is DDIM. In our grid indexing ``k`` counts from noise to data, the paper's ``i`` the other way.

Every step is linear in ``(x_{k-1}, x_k, m(x_k))``, so for ``gamma > 0``
``x_{k-1} = (x_{k+1} - D_{k->k+1}(x_k) + gamma D_{k->k-1}(x_k)) / gamma`` recovers the previous
state from the last two with one model call per step (:func:`invert_bdia`); step 1 is linear in
``x_0``, so the first (DDIM) step needs no inversion. The pair ``(x_N, x_{N-1})`` is what is
inverted: from an image alone the companion ``x_{N-1}`` must be estimated (as the paper does
with a DDIM inversion step), and the round trip is then exact from the recovered pair
``(x_0, x_1)``, not from ``x_0`` alone.

One model call per step, ``carries_state``: a step needs the previous state.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.validation import check_in_range
from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm, EvalPoint
from .base import DiffusionSolver, lincomb, nonzero
from .registry import register


def ddim_map_coefficients(grid: SamplingGrid, k: int, j: int) -> tuple[float, float]:
    """``(sigma_j / sigma_k, alpha_j - sigma_j alpha_k / sigma_k)``: ``D_{k->j}(x) =
    cx x + cd x0(x)``, the DDIM map from grid point ``k`` (``sigma_k > 0``) to point ``j`` in
    either direction (float64 -> floats)."""
    sk, sj, ak, aj = grid.sigma[k], grid.sigma[j], grid.alpha[k], grid.alpha[j]
    return float(sj / sk), float(aj - sj * ak / sk)


@dataclass(slots=True)
class BDIARow:
    """``x_{k+1} = cp x_{k-1} + cx x_k + cm m(x_k)`` (``cp = None``: the first, DDIM step);
    ``cd`` is the weight of the data prediction (``cm = cd b``, ``cx`` includes ``cd a``)."""

    point: EvalPoint
    cp: float | None
    cx: float | None
    cm: float
    cd: float


def bdia_rows(grid: SamplingGrid, points: list[EvalPoint], gamma: float) -> list[BDIARow]:
    """The rows of every step of ``grid`` (float64 coefficients folded once)."""
    rows = []
    for k in range(grid.steps):
        sx, cd = ddim_map_coefficients(grid, k, k + 1)
        cp = None
        if k > 0:
            bx, bd = ddim_map_coefficients(grid, k, k - 1)
            sx, cd, cp = sx - gamma * bx, cd - gamma * bd, gamma
        p = points[k]
        rows.append(BDIARow(p, cp, nonzero(sx + cd * p.a), cd * p.b, cd))
    return rows


class BDIA(DiffusionSolver):
    """BDIA-DDIM (Zhang et al. 2023, eq. 14 with the DDIM integration approximations).

    Args:
        gamma: weight in ``[0, 1]`` of the backward DDIM re-estimate of the previous interval;
            0 is DDIM, 1 (default) the time-symmetric update. Inversion needs ``gamma > 0`` and
            amplifies round-off by about ``1 / gamma`` per step, so only ``gamma = 1`` inverts
            long grids (measured in ``tests/solvers/test_bdia.py`` and ``docs/inversion.md``).

    Order 2 for ``gamma = 1`` (the update is symmetric in time, like the leapfrog scheme), 1
    otherwise (measured on the exact Gaussian mixture).
    """

    order = 1
    nfe_per_step = 1
    handles_pure_noise = True
    carries_state = True

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = check_in_range(gamma, "gamma", 0.0, 1.0)
        self.order = 2 if self.gamma == 1.0 else 1

    def table(self, term, grid, points, x0):
        return bdia_rows(grid, points, self.gamma)

    def advance(self, term, x, state, row):
        m = term.model_output(x, row.point)
        terms = ((row.cm, m),) if row.cp is None else ((row.cm, m), (row.cp, state))
        return lincomb(x, row.cx, terms), x, None, 1


def invert_bdia(term: DiffusionTerm, grid: SamplingGrid, last: Tensor, previous: Tensor,
                gamma: float) -> tuple[Tensor, Tensor]:
    """The first two states ``(x_0, x_1)`` of a BDIA trajectory on ``grid`` from its last two,
    ``(x_N, x_{N-1})``, running the BDIA steps backwards: one model call per step, exact up to
    round-off (step 1 is linear in ``x_0``, so the first, DDIM step needs no inversion)."""
    if gamma <= 0.0:
        raise ValueError("inverting BDIA needs gamma > 0 (gamma = 0 is DDIM, which has no exact "
                         "inverse; use method='fixed-point')")
    if grid.steps < 2:
        raise ValueError(f"inverting BDIA needs at least 2 steps, got {grid.steps}")
    rows = bdia_rows(grid, term.points(grid, last), gamma)
    nxt, cur = last, previous
    for k in range(grid.steps - 1, 0, -1):
        r = rows[k]
        fwd = lincomb(cur, r.cx, ((r.cm, term.model_output(cur, r.point)),))
        nxt, cur = cur, (nxt - fwd) / gamma
    return cur, nxt


register("bdia-ddim", BDIA,
         summary="BDIA-DDIM (Zhang et al. 2023): DDIM with a backward re-estimate of the previous "
                 "interval weighted by gamma; exactly invertible for gamma > 0. Order 2 at gamma = 1 "
                 "(default), else 1.")

__all__ = ["BDIA", "bdia_rows", "ddim_map_coefficients", "invert_bdia"]

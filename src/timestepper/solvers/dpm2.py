"""DPM-2 (k-diffusion's ``sample_dpm_2``; Karras et al. 2022 name it after DPM-Solver-2).

The midpoint rule on ``dy/drho = eps`` for the scaled state ``y = x / alpha`` and
``rho = sigma / alpha``, with the stage at the geometric mean ``rho_mid = sqrt(rho_i rho_{i+1})``
(the log-SNR midpoint, as in DPM-Solver-2, Lu et al. 2022a, Algorithm 1 with ``r_1 = 1/2``):

``y_mid = y_i + (rho_mid - rho_i) eps(x_i)``, ``y_{i+1} = y_i + (rho_{i+1} - rho_i) eps(x_mid)``.

Two model calls per step; the step to zero noise is an Euler step (one call), as in k-diffusion.
The stage times are registered with the term once per grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm, EvalPoint
from .base import DiffusionSolver, lincomb, ve_sigmas
from .expint import first_order_at
from .registry import register


@dataclass(slots=True)
class MidpointRow:
    """A two-stage step: ``x_mid = cm x + em m(x)`` at ``mid`` (``None``: a one-stage step), then
    ``x1 = cx x + ce m(x_mid)``, with ``m`` the model's data or noise prediction."""

    point: EvalPoint
    mid: EvalPoint | None
    cm: float
    em: float
    cx: float | None
    ce: float


def midpoint_step(term: DiffusionTerm, x: Tensor, row: MidpointRow, prediction: str) -> tuple[Tensor, int]:
    """The step of a :class:`MidpointRow` and its model evaluations (DPM-2's midpoint rule, and the
    deterministic part of DPM-Solver++(2S) ancestral)."""
    m = term.prediction(x, row.point, prediction)
    nfe = 1
    if row.mid is not None:
        x_mid = lincomb(x, row.cm, ((row.em, m),))
        m, nfe = term.prediction(x_mid, row.mid, prediction), 2
    return lincomb(x, row.cx, ((row.ce, m),)), nfe


def log_snr_midpoints(schedule, grid: SamplingGrid, r: float = 0.5) -> SamplingGrid:
    """The points at ``lambda_i + r h_i`` (the log-SNR midpoint for ``r = 1/2``) of every step
    that does not end at zero noise (a placeholder copy of the step start on those that do; it is
    never evaluated)."""
    lam = grid.log_snr
    mid = torch.where(torch.isfinite(lam[1:]), lam[:-1] + r * (lam[1:] - lam[:-1]), lam[:-1])
    return SamplingGrid.from_times(schedule, schedule.t_from_log_snr(mid))


@register("dpm-2")
class DPM2(DiffusionSolver):
    """k-diffusion's DPM-2 (``sample_dpm_2`` with ``s_churn = 0``). Order 2, two model calls per step."""

    order = 2
    nfe_per_step = 2

    def table(self, term, grid, points, x0):
        mids = log_snr_midpoints(term.schedule, grid)
        mid_points = term.points(mids, x0)
        rho, a = ve_sigmas(grid).tolist(), grid.alpha.tolist()
        rho_m, a_m = ve_sigmas(mids).tolist(), mids.alpha.tolist()
        return [MidpointRow(points[i], None if first_order_at(grid, i) else mid_points[i],
                        a_m[i] / a[i], a_m[i] * (rho_m[i] - rho[i]),
                        a[i + 1] / a[i], a[i + 1] * (rho[i + 1] - rho[i]))
                for i in range(grid.steps)]

    def advance(self, term, x, state, row):
        x1, nfe = midpoint_step(term, x, row, "noise")
        return x1, state, None, nfe

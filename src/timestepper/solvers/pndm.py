"""Pseudo numerical methods (Liu et al. 2022, PNDM): PLMS and PRK on the DDIM transfer.

The transfer ``phi(x, eps, s -> t)`` of eq. 9 moves the state with a fixed noise prediction; it is
algebraically DDIM, ``x_t = (alpha_t / alpha_s) x_s - alpha_t (rho_s - rho_t) eps`` with
``rho = sigma / alpha``. PNDM replaces ``eps`` by a higher-order combination:

* PLMS (eq. 12): ``eps' = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24``, with the
  Adams-Bashforth ramp ``e_i``, ``(3 e_i - e_{i-1}) / 2``, ``(23 e_i - 16 e_{i-1} + 5 e_{i-2}) / 12`` on
  the first steps. The weights assume equal steps; as a method on the probability-flow ODE the
  result converges at order 2 (the transfer's implicit quadrature in ``rho`` meets the constant
  weights only to second order; measured in ``tests/solvers/test_convergence.py``).
* Warm-up ``plms`` (``skip_prk_steps=True`` in diffusers, crowsonkb's PLMS): the first step is a
  pseudo improved-Euler step: transfer with ``e_0``, evaluate at the result, transfer again from
  ``x_0`` with the average (two model calls).
* Warm-up ``pndm`` (eq. 13, PRK): the first three steps are pseudo Runge-Kutta-4 steps with stages
  at the step's midpoint in time (four model calls each); their first-stage predictions seed PLMS.

NFE: ``steps + 1`` (``plms``), ``steps + 9`` (``pndm``). ``pndm`` refuses fewer than four steps:
on such a grid the warm-up would reach zero noise, where a PRK stage cannot be evaluated, and the
steps it left to PLMS diverged (errors of ~4e2 on the Gaussian-mixture benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..diffusion.grids import SamplingGrid
from ..diffusion.term import EvalPoint
from .base import lincomb, ve_sigmas
from .expint import PhiTable, first_order_at, grid_floats
from .multistep import LinearMultistep, MultistepRow
from .registry import register

ADAMS_BASHFORTH = (
    (1.0,),
    (1.5, -0.5),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
PRK_STEPS = 3


@dataclass(slots=True)
class WarmupRow:
    """A warm-up step from ``point`` to ``end`` with the transfer ``x -> cx x + ce eps``; PRK steps
    also transfer to the step's midpoint in time (``mid``, ``cm``, ``em``)."""

    point: EvalPoint
    end: EvalPoint
    cx: float
    ce: float
    mid: EvalPoint | None = None
    cm: float = 0.0
    em: float = 0.0


def transfer_table(grid: SamplingGrid) -> tuple[list, list]:
    """Per step ``(alpha_{i+1} / alpha_i, -alpha_{i+1} (rho_i - rho_{i+1}))``: the DDIM transfer."""
    rho = ve_sigmas(grid)
    return (grid.alpha[1:] / grid.alpha[:-1]).tolist(), (
        -grid.alpha[1:] * (rho[:-1] - rho[1:])
    ).tolist()


class _PseudoLinearMultistep(LinearMultistep):
    """PLMS after a warm-up of ``warmup_steps`` special steps (implemented by subclasses).

    A PLMS step is the transfer of the Adams-Bashforth combination, i.e. the linear multistep step
    ``x_{i+1} = cx_i x_i + sum_j ce_i ab_j e_{i-j}`` of :class:`LinearMultistep`; step ``i`` combines
    ``min(i + 1, 4)`` predictions (the warm-up steps leave one prediction each in the history).
    A warm-up step needs the model at its end point, so a step to zero noise is never one.
    """

    order = 2
    prediction = "noise"
    stacks_rows = False  # its warm-up steps call the model at their end points
    reuses_state_memory = False  # a step of its own (advance)
    max_order = 4
    first_order_to_zero = False  # the transfer to rho = 0 is finite at every order
    warmup_steps = 1

    def orders(self, grid):
        return [4] * grid.steps

    def phi_table(self, grid):
        return PhiTable([], 0)  # Adams-Bashforth weights on the noise: no phi functions

    def weights(self, grid, i, k, phis):
        f = grid_floats(grid)
        a0, a1 = f.alpha[i], f.alpha[i + 1]
        ce = -a1 * (f.rho[i] - f.rho[i + 1])
        return a1 / a0, [ce * w for w in ADAMS_BASHFORTH[k - 1]]

    def table(self, term, grid, points, x0):
        rows = super().table(term, grid, points, x0)
        cx, ce = transfer_table(grid)
        for i in range(min(self.warmup_steps, grid.steps)):
            if not first_order_at(grid, i):
                rows[i] = WarmupRow(points[i], points[i + 1], cx[i], ce[i])
        return rows

    def advance(self, term, x, state, row):
        if type(row) is MultistepRow:
            return super().advance(term, x, state, row)
        return self.warmup_step(term, x, state, row)

    def warmup_step(self, term, x, state, row):  # pragma: no cover - interface
        raise NotImplementedError


class PLMS(_PseudoLinearMultistep):
    """PLMS with the pseudo improved-Euler first step (diffusers' ``PNDMScheduler`` with
    ``skip_prk_steps=True``). Order 2; ``steps + 1`` model calls."""

    def warmup_step(self, term, x, state, row):
        e0 = term.noise_prediction(x, row.point)
        x1 = lincomb(x, row.cx, ((row.ce, e0),))
        e1 = term.noise_prediction(x1, row.end)
        eps = lincomb(e0, 0.5, ((0.5, e1),))
        return lincomb(x, row.cx, ((row.ce, eps),)), (e0,), None, 2


class PNDM(_PseudoLinearMultistep):
    """PNDM: three pseudo Runge-Kutta steps (PRK, eq. 13), then PLMS (diffusers' ``PNDMScheduler``,
    ``skip_prk_steps=False``). Order 2; four model calls on each of the first three steps."""

    warmup_steps = PRK_STEPS
    min_steps = PRK_STEPS + 1
    min_steps_reason = "three pseudo Runge-Kutta warm-up steps, then PLMS; 'plms' warms up in one step"

    def table(self, term, grid, points, x0):
        rows = super().table(term, grid, points, x0)
        mids = SamplingGrid.from_times(term.schedule, 0.5 * (grid.t[:-1] + grid.t[1:]))
        mid_points = term.points(mids, x0)
        rho, rho_m = ve_sigmas(grid), ve_sigmas(mids)
        cm = (mids.alpha / grid.alpha[:-1]).tolist()
        em = (-mids.alpha * (rho[:-1] - rho_m)).tolist()
        return [WarmupRow(r.point, r.end, r.cx, r.ce, mid_points[i], cm[i], em[i])
                if isinstance(r, WarmupRow) else r for i, r in enumerate(rows)]

    def warmup_step(self, term, x, state, row):
        k1 = term.noise_prediction(x, row.point)
        k2 = term.noise_prediction(lincomb(x, row.cm, ((row.em, k1),)), row.mid)
        k3 = term.noise_prediction(lincomb(x, row.cm, ((row.em, k2),)), row.mid)
        k4 = term.noise_prediction(lincomb(x, row.cx, ((row.ce, k3),)), row.end)
        eps = lincomb(k1, 1 / 6, ((1 / 3, k2), (1 / 3, k3), (1 / 6, k4)))
        return lincomb(x, row.cx, ((row.ce, eps),)), (k1, *state)[:3], None, 4


register("plms", PLMS)
register("pndm", PNDM)

"""UniPC (Zhao et al. 2023): the unified predictor UniP-p and corrector UniC-p, B(h) variants
bh1 (``B(h) = h``) and bh2 (``B(h) = e^h - 1``), in data prediction (diffusers'
``UniPCMultistepScheduler`` with ``predict_x0=True``).

With ``h = lambda_t - lambda_s``, offsets ``r_k = (lambda_{s-k} - lambda_s) / h`` and the
prediction ``m_s`` at the step start, both updates have the form (Algorithm 2, eq. 8/9):

``x_t = (sigma_t / sigma_s) x_s - alpha_t expm1(-h) m_s - alpha_t B(h) sum_k rho_k D_k``,
``D_k = (m_{s-k} - m_s) / r_k``,

where ``rho`` solves ``R rho = b`` with ``R_{nk} = r_k^{n-1}`` and
``b_n = (-h) phi_{n+1}(-h) n! / B(h)`` (the phi functions of :mod:`timestepper.core.phi`). The
predictor uses the past predictions (``rho = 1/2`` at order 2, as the paper's Appendix); the
corrector adds the prediction ``m_t`` at the new point with ``r = 1`` (``rho = 1/2`` at order 1)
and **reuses the next step's model evaluation**: the model is called once per step, at the
predicted state, and that output both corrects the state and feeds the next predictor. NFE =
steps, as in diffusers.

Orders: the predictor at step ``i`` has order ``min(order, i + 1)``, and with
``lower_order_final`` (default) also ``<= steps - i`` (diffusers' rule); the corrector after step
``i`` has that step's order (UniC-p raises it by one). A step to zero noise is first order.

A deliberate difference from the peer: diffusers' bh1 returns NaN on the final step to
``sigma = 0`` (its first-order predictor computes ``alpha_t * B(h) * 0`` with ``B(h) = -inf``).
The first-order step's correction term is zero, so ours returns the finite limit there (the
data prediction). The parity test pins the peer's NaN and compares on ``sigma_min`` grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.ops import add_scaled_
from ..core.validation import check_choice, check_order
from ..diffusion.term import EvalPoint
from .base import DiffusionSolver, lincomb, nonzero, stacked_column, stacked_points, stacked_weights
from .expint import (
    PhiTable,
    expm1_any,
    first_order_at,
    grid_floats,
    lambda_offsets,
    solve_small,
    step_phis,
    taylor_weights,
)
from .registry import register

VARIANTS = ("bh1", "bh2")


@dataclass(slots=True)
class UniPCRow:
    """Step ``i``: evaluate at ``point``; UniC corrects the previous step's state with
    ``ccx x_prev + sum cw_j m_{i-j}`` (``cw=None``: no correction), then UniP predicts
    ``pcx x_i + sum pw_j m_{i-j}``. ``keep`` is only set on rows stacked as tensors
    (:meth:`UniPC.stacked_rows`): the weight of ``x_i`` itself in the corrected state, 1 on the
    steps without correction (whose other weights are zeros) and 0 on the others."""

    point: EvalPoint
    pcx: float | None
    pw: tuple[float, ...]
    ccx: float | None
    cw: tuple[float, ...] | None
    keep: Tensor | None = None


def unipc_weights(  # noqa: PLR0913 - the coefficient rule's parameters, all explicit
    grid, s: int, t: int, order: int, variant: str, corrector: bool, phis: PhiTable,
    prediction: str = "data", new_log_snr=None,
) -> tuple[float, list[float]]:
    """``(cx, w)`` of UniP (``corrector=False``: ``w`` on ``m_s, m_{s-1}, ..., m_{s-order+1}``) or
    UniC (``w`` on ``m_t, m_s, m_{s-1}, ..., m_{s-order+1}``), in data (``m = x0``) or noise
    (``m = eps``) prediction: the noise form (Zhao et al. 2023, Algorithm 3 / Appendix; diffusers'
    ``predict_x0=False``) is the data form with ``-h`` replaced by ``h``, ``alpha_t`` by
    ``sigma_t`` and ``cx = alpha_t / alpha_s``.

    ``new_log_snr``: the log-SNR at which UniC's new output ``m_t`` was evaluated, when not the
    step's end (the Time-Shift Sampler's shifted time; its offset ``r`` then enters the system and
    the difference ``D = (m_t - m_s) / r`` in place of ``r = 1``). A batch of grids (2-D fields,
    :mod:`~timestepper.solvers.expint`) gives ``(C,)`` tensors."""
    cx, e = taylor_weights(grid, s, t, prediction, 1)
    k_hist = order - 1
    if not corrector and k_hist == 0:
        return cx, e
    f = grid_floats(grid)
    if prediction == "data":
        hh, a_t = f.lam[s] - f.lam[t], f.alpha[t]
    else:
        hh, a_t = f.lam[t] - f.lam[s], f.sigma[t]
    b_h = hh if variant == "bh1" else expm1_any(hh)
    r = lambda_offsets(grid, s, t, [s - k for k in range(1, order)])
    r_new = 1.0 if new_log_snr is None else (new_log_snr - f.lam[s]) / (f.lam[t] - f.lam[s])
    n = order if corrector else order - 1
    if (corrector and order == 1) or (not corrector and order == 2):
        rho = [0.5]
    else:
        rks = (r + [r_new])[:n]  # the predictor's system leaves out the new point
        big_r = [[rk**j for rk in rks] for j in range(n)]
        b = [hh * phis(j + 2, hh) * math.factorial(j + 1) / b_h for j in range(n)]
        rho = solve_small(big_r, b)
    scale = -a_t * b_h
    w_hist = [scale * rho[k] / r[k] for k in range(k_hist)]
    w_s = e[0] - sum(w_hist)
    if corrector:
        w_t = scale * rho[-1] / r_new
        return cx, [w_t, w_s - w_t] + w_hist
    return cx, [w_s] + w_hist


def unipc_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    """Predictor order at each step: warm-up and diffusers' ``lower_order_final`` rule."""
    return [
        min(order, i + 1, steps - i) if lower_order_final else min(order, i + 1)
        for i in range(steps)
    ]


class UniPC(DiffusionSolver):
    """UniPC with UniP-``order`` predictor and UniC corrector (Zhao et al. 2023, Algorithm 2).

    Args:
        order: predictor order 1, 2 or 3 (default 2). The corrected method has order
            ``order + 1`` (Zhao et al. 2023, Theorem 3.3), which is the declared ``order``
            attribute; with ``lower_order_final`` the uncorrected first-order last step limits it
            to 2 as ``h -> 0``, so convergence is measured without it.
        variant: ``"bh1"`` or ``"bh2"``.
        lower_order_final: lower predictor orders on the last steps (diffusers' rule).
        disable_corrector: step indices after which the corrector is skipped (diffusers' option).
    """

    nfe_per_step = 1
    stacks_rows = True

    def __init__(
        self,
        order: int = 2,
        variant: str = "bh2",
        lower_order_final: bool = True,
        disable_corrector: tuple[int, ...] = (),
    ) -> None:
        self.predictor_order = check_order(order, (1, 2, 3))
        self.order = self.predictor_order + 1
        self.variant = check_choice(variant, VARIANTS, "variant")
        self.lower_order_final = bool(lower_order_final)
        self.disable_corrector = tuple(int(i) for i in disable_corrector)

    def table(self, term, grid, points, x0):
        orders, phis = self.orders_and_phis(grid)
        return [self.row(grid, i, orders, phis, points[i]) for i in range(grid.steps)]

    def orders_and_phis(self, grid) -> tuple[list[int], PhiTable]:
        """The predictor order of every step and the phi values of the grid's steps."""
        return (unipc_orders(grid.steps, self.predictor_order, self.lower_order_final),
                step_phis(grid, [(i, i + 1) for i in range(grid.steps)], self.predictor_order + 2))

    def step_orders_at(self, grid, i: int, orders: list[int]) -> tuple[int, int]:
        """Step ``i``'s predictor order (first order to zero noise) and the order of the
        correction it applies to the previous step (0: none)."""
        corrects = i > 0 and (i - 1) not in self.disable_corrector
        return (1 if first_order_at(grid, i) else orders[i]), (orders[i - 1] if corrects else 0)

    def row(self, grid, i: int, orders: list[int], phis: PhiTable, point: EvalPoint) -> UniPCRow:
        """Step ``i``'s row on ``grid``: UniC's weights for the previous step, UniP's for this one."""
        k, k_c = self.step_orders_at(grid, i, orders)
        pcx, pw = unipc_weights(grid, i, i + 1, k, self.variant, False, phis)
        ccx, cw = None, None
        if k_c:
            c, w = unipc_weights(grid, i - 1, i, k_c, self.variant, True, phis)
            ccx, cw = nonzero(c), tuple(w)
        return UniPCRow(point, nonzero(pcx), tuple(pw), ccx, cw)

    def stacked_rows(self, table, x0):
        """Every row as tensors: the predictor's weights padded with zeros to ``order`` and the
        corrector's to ``order + 1``; a step without correction keeps ``x_i`` (``keep = 1``, its
        other corrector weights zero); the state starts as zeros, ``(x_prev, m_1, ..., m_order)``."""
        if not self.stacks_rows or not table or any(type(r) is not UniPCRow for r in table):
            return None
        p = self.predictor_order
        row = UniPCRow(stacked_points([r.point for r in table], x0),
                       stacked_column([r.pcx or 0.0 for r in table], x0),  # type: ignore[arg-type]
                       stacked_weights([r.pw for r in table], p, x0),  # type: ignore[arg-type]
                       stacked_column([r.ccx or 0.0 for r in table], x0),  # type: ignore[arg-type]
                       stacked_weights([r.cw for r in table], p + 1, x0),  # type: ignore[arg-type]
                       stacked_column([1.0 if r.cw is None else 0.0 for r in table], x0))
        return row, tuple(torch.zeros_like(x0) for _ in range(p + 1))

    def advance(self, term, x, state, row):
        # state = (x_{i-1}, m_{i-1}, m_{i-2}, ...): the previous step's start and predictions
        preds = (term.data_prediction(x, row.point), *state[1:])
        x = unic_correct(x, state, row, preds)
        return unip_predict(x, row, preds), (x, *preds[: self.predictor_order]), None, 1


def unic_correct(x: Tensor, state: tuple, row: UniPCRow, preds: tuple[Tensor, ...]) -> Tensor:
    """UniC: the state ``x_i`` corrected with the model output ``preds[0]`` just computed at it,
    from the previous step's start ``state[0]`` (``x`` itself where the row has no correction)."""
    if row.cw is None:
        return x
    corrected = lincomb(state[0], row.ccx, tuple(zip(row.cw, preds)))
    return corrected if row.keep is None else add_scaled_(corrected, x, row.keep)  # type: ignore[arg-type]


def unip_predict(x: Tensor, row: UniPCRow, preds: tuple[Tensor, ...]) -> Tensor:
    """UniP: the next state predicted from ``x`` and the predictions ``preds`` (newest first)."""
    return lincomb(x, row.pcx, tuple(zip(row.pw, preds)))


register("unipc-bh1", UniPC, variant="bh1", summary="UniPC with B(h) = h (Zhao et al. 2023, eq. 17).")
register("unipc-bh2", UniPC, variant="bh2", summary="UniPC with B(h) = e^h - 1 (Zhao et al. 2023, eq. 17).")

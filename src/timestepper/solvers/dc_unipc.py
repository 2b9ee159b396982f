"""DC-Solver: UniPC with dynamic compensation (Zhao, Wang, Zhou & Lu, ECCV 2024, "DC-Solver:
Improving Predictor-Corrector Diffusion Sampler via Dynamic Compensation", Sec. 3.2).

The misalignment it corrects: UniPC (:mod:`timestepper.solvers.unipc`) calls the model once per
step, at the *predicted* state ``x~_i``; that output ``m_i = x0(x~_i, t_i)`` corrects the state
(UniC) and then feeds the next predictor, which starts from the *corrected* state ``x_i^c``, where
the model was never evaluated. DC-Solver replaces ``m_i``, after the correction and before the
predictor, by the Lagrange interpolant of the last ``K + 1`` model outputs through the step times
``t_i, t_{i-1}, ..., t_{i-K}``, evaluated at the shifted time
``tau_i = t_{i-1} + rho_i (t_i - t_{i-1})``:

``m_i^DC = sum_k l_k(tau_i) m_{i-k}``,  ``l_k(tau) = prod_{j != k} (tau - t_{i-j}) / (t_{i-k} - t_{i-j})``,

with one *compensation ratio* ``rho_i`` per step (``rho_i = 1`` gives ``tau_i = t_i`` and ``m_i``
itself: plain UniPC). The interpolation runs in the grid's own time variable, as the authors'
code does (it is invariant under affine changes of that variable). The compensated output takes
``m_i``'s place in the history, so later corrections, predictions and interpolations use it (as
in the authors' implementation). Compensation needs ``K + 1`` outputs: the first ``K`` steps are
plain UniPC steps and their ratios must be 1. ``K = dc_order = 2`` is the paper's choice.

With ``u = (t - t_{i-1}) / (t_i - t_{i-1})`` the nodes are ``u = 1, 0, (t_{i-2} - t_{i-1}) / (t_i -
t_{i-1}), ...`` and the evaluation point is ``u = rho_i``, so the weights are polynomials in the
ratio: ``l_k = sum_n B[n][k] rho^n`` with ``B`` the inverse Vandermonde matrix of the nodes
(:func:`~timestepper.solvers.expint.polynomial_basis`). The table keeps ``B`` (float64, once per
grid) so that :mod:`timestepper.tuning.dc` can differentiate the step with respect to the ratio.

The ratios are fitted per grid (NFE) on about ten trajectories against a reference
(:func:`timestepper.tuning.dc.fit_ratios`) or predicted for an unseen NFE by the cascade polynomial
regression (:class:`timestepper.tuning.dc.CascadePolynomialRegression`). With ratios other than
1 held fixed as the steps shrink, the compensated output lags ``m_i`` by ``O(h)`` and the method
is first order; the ratios are a low-NFE device, fitted for each grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..core.validation import check_int
from .base import lincomb
from .expint import polynomial_basis
from .registry import register
from .unipc import UniPC, UniPCRow, unic_correct, unip_predict


@dataclass(slots=True)
class DCRow(UniPCRow):
    """A UniPC row plus the compensation of step ``i``: ``basis`` is the inverse Vandermonde matrix
    of the interpolation nodes in ``u`` (``None`` during the warm-up), ``dcw`` the weights on
    ``m_i, m_{i-1}, ...`` at the step's ratio (``None``: no compensation, ratio 1 or warm-up)."""

    basis: tuple[tuple[float, ...], ...] | None = None
    dcw: tuple[float, ...] | None = None


def compensation_weights(basis: Sequence[Sequence[float]], ratio: Any) -> list[Any]:
    """``l_k(rho) = sum_n basis[n][k] rho^n``: the Lagrange weights on ``m_i, m_{i-1}, ...`` at the
    ratio ``rho`` (a float, or a tensor when the ratio is being fitted)."""
    return [sum(basis[n][k] * ratio**n for n in range(len(basis))) for k in range(len(basis))]


def compensate(preds: tuple[Tensor, ...], weights: Sequence[float]) -> tuple[Tensor, ...]:
    """``preds`` with the newest output replaced by its compensation ``sum_k w_k preds[k]``."""
    return (lincomb(preds[0], None, tuple(zip(weights, preds))), *preds[1:])


def check_ratios(ratios: Sequence[float] | None) -> tuple[float, ...] | None:
    """The ratios as a tuple of finite floats (``None``: every step neutral); refused otherwise."""
    if ratios is None:
        return None
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence | Tensor):
        raise TypeError(f"ratios must be a sequence of numbers, one per step, got {type(ratios).__name__}")
    out = tuple(float(r) for r in (ratios.tolist() if isinstance(ratios, Tensor) else ratios))
    bad = [i for i, r in enumerate(out) if not math.isfinite(r)]
    if bad:
        raise ValueError(f"ratios must be finite; ratios[{bad[0]}] = {out[bad[0]]}")
    return out


class DCUniPC(UniPC):
    """UniPC-``order`` with dynamic compensation of the model outputs (DC-Solver, Zhao et al. 2024).

    Args:
        ratios: one compensation ratio per step (``None``: all 1, which is ``unipc-bh2`` exactly);
            the first ``dc_order`` steps (after a DDIM first step from pure noise, if any) must
            have ratio 1.
        dc_order: ``K``, the degree of the Lagrange interpolation (``K + 1`` outputs; 1..3, default
            2 as in the paper).
        order, variant, lower_order_final, disable_corrector: as :class:`UniPC`.

    The declared ``order`` is UniPC's when every ratio is 1 and 1 otherwise (module docstring).
    """

    fitted_to_model = True
    stacks_rows = False  # its compensation rows and step of its own (advance)

    def __init__(  # noqa: PLR0913 - UniPC's options plus the compensation's two
        self,
        ratios: Sequence[float] | None = None,
        dc_order: int = 2,
        order: int = 2,
        variant: str = "bh2",
        lower_order_final: bool = True,
        disable_corrector: tuple[int, ...] = (),
    ) -> None:
        super().__init__(order, variant, lower_order_final, disable_corrector)
        self.ratios = check_ratios(ratios)
        self.dc_order = check_int(dc_order, "dc_order", 1)
        if self.dc_order > 3:
            raise ValueError(f"dc_order must be 1, 2 or 3, got {self.dc_order}")
        self.history = max(self.predictor_order, self.dc_order + 1)
        if self.ratios is not None and any(r != 1.0 for r in self.ratios):
            self.order = 1
        self._skip = 0

    def init(self, term, grid, x0):
        n = grid.steps
        if self.ratios is not None and len(self.ratios) != n:
            raise ValueError(f"ratios must have one entry per step: {n}, got {len(self.ratios)}")
        self._skip = 1 if self.starts_from_pure_noise(grid) and n > 1 else 0
        warm = self._skip + self.dc_order
        if self.ratios is not None and any(r != 1.0 for r in self.ratios[:warm]):
            raise ValueError(f"ratios[:{warm}] must be 1: the first steps have fewer than "
                             f"dc_order + 1 = {self.dc_order + 1} model outputs to interpolate")
        return super().init(term, grid, x0)

    def table(self, term, grid, points, x0):
        t = grid.t.tolist()
        rows = []
        for i, row in enumerate(super().table(term, grid, points, x0)):
            basis, dcw = None, None
            if i >= self.dc_order:
                nodes = [(t[i - k] - t[i - 1]) / (t[i] - t[i - 1]) for k in range(self.dc_order + 1)]
                basis = tuple(map(tuple, polynomial_basis(nodes)))
                ratio = 1.0 if self.ratios is None else self.ratios[self._skip + i]
                dcw = None if ratio == 1.0 else tuple(compensation_weights(basis, ratio))
            rows.append(DCRow(row.point, row.pcx, row.pw, row.ccx, row.cw, basis=basis, dcw=dcw))
        return rows

    def advance(self, term, x, state, row):
        # as UniPC.advance, with the compensation between the correction and the prediction
        preds = (term.data_prediction(x, row.point), *state[1:])
        x = unic_correct(x, state, row, preds)
        if row.dcw is not None:
            preds = compensate(preds, row.dcw)
        return unip_predict(x, row, preds), (x, *preds[: self.history]), None, 1


register("dc-unipc", DCUniPC, summary="UniPC-bh2 with dynamic compensation ratios (DC-Solver, Zhao et al. 2024).")

__all__ = ["DCRow", "DCUniPC", "check_ratios", "compensate", "compensation_weights"]

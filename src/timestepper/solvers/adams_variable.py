"""Variable-order, variable-step Adams–Bashforth–Moulton in modified divided differences
(Shampine & Gordon 1975, "Computer solution of ordinary differential equations: the initial
value problem", ch. 5; Hairer, Nørsett & Wanner, Solving ODEs I, III.5 and III.7).

The state keeps the modified divided differences ``phi_j(n) = psi_1(n) ... psi_{j-1}(n)
f[t_n, ..., t_{n-j+1}]`` of the past derivatives, with ``psi_i(n) = t_n - t_{n-i}``. A step of
order ``k`` from ``t_n`` to ``t_{n+1} = t_n + h``:

* rescales them to the new step, ``phi*_j = beta_j phi_j(n)``,
  ``beta_j = prod_{i<j} psi_i(n+1) / psi_i(n)``;
* predicts with the ``k``-step Adams–Bashforth formula ``p = x_n + h sum_{j<=k} g_j phi*_j``, where
  ``g_j = int_0^1 prod_{i<j} ((s - 1) h + psi_i(n+1)) / psi_i(n+1) ds`` (Gauss–Legendre, exact for
  these polynomials);
* evaluates ``f(t_{n+1}, p)`` and corrects with the Adams–Moulton formula through ``t_{n+1}`` and
  the ``k`` past times, ``x_{n+1} = p + h g_{k+1} phi_{k+1}(n+1)`` with
  ``phi_{k+1}(n+1) = f(t_{n+1}, p) - sum_{j<=k} phi*_j`` (order ``k + 1``: local extrapolation,
  as in Shampine & Gordon's DE);
* estimates the local error of the order-``q`` formula as the difference of the order-``q`` and
  order-``q + 1`` correctors, ``h (g_{q+1} - g_q) phi_{q+1}(n+1)``, for ``q = k`` (it decides
  acceptance) and ``q = k - 1``, ``k + 1`` (for the choice of the next order: the step-size
  controller picks it, :func:`timestepper.core.controllers.select_order`);
* evaluates ``f(t_{n+1}, x_{n+1})`` and updates the differences (PECE: two evaluations).

The estimate at ``k + 1`` is offered (so the order may rise) only after ``k + 1`` steps in a row
at order ``k``, when the differences reflect that order (Shampine & Gordon's and CVODE's wait),
except in the start phase: the first step is order 1 (Euler predictor, trapezoidal corrector)
from the controller's small starting step, and while every step raises the order it may rise
again at the next (as soon as ``k + 1`` past derivatives are known), as in Shampine & Gordon's
phase 1. Lowering is always offered. Dense output integrates the corrector's polynomial over
part of the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..core.solver import OrderErrors, Solver
from ..core.terms import VectorFieldTerm
from ..core.validation import check_int
from .registry import register
from .rk import weighted_sum

MAX_ORDER = 12  # Shampine & Gordon's bound (the corrector is then of order 13)

_u, _w = np.polynomial.legendre.leggauss(8)  # exact up to degree 15 >= MAX_ORDER + 1
GAUSS_NODES = tuple(float(v) for v in (_u + 1) / 2)
GAUSS_WEIGHTS = tuple(float(v) for v in _w / 2)


def adams_integrals(h: float, psi: tuple[float, ...], count: int, theta: float = 1.0) -> list[float]:
    """``G_j = int_0^theta prod_{i<j} ((s - 1) h + psi_i) / psi_i ds`` for ``j = 1..count``
    (``G_j(1) = g_j``), by Gauss–Legendre quadrature in float64."""
    s = [theta * u for u in GAUSS_NODES]
    prods = [1.0] * len(s)
    out = [theta]
    for i in range(count - 1):
        p = psi[i]
        prods = [q * ((sm - 1.0) * h + p) / p for q, sm in zip(prods, s, strict=True)]
        out.append(theta * sum(w * q for w, q in zip(GAUSS_WEIGHTS, prods, strict=True)))
    return out


@dataclass(frozen=True)
class DividedDifferences:
    """What a step carries: the past times (newest first), the modified divided differences
    ``phi_j(n)`` (``phi_1 = f_n``), the order of the last step, how many steps in a row took it
    and whether every step so far raised the order (the start phase); and for dense output the
    last step's start, size, ``psi`` values and the terms of its corrector polynomial
    (``phi*_1..phi*_k, phi_{k+1}``)."""

    ts: tuple[float, ...] = ()
    phi: tuple[Tensor, ...] = ()
    order: int = 0
    held: int = 0
    start: bool = True
    x0: Tensor | None = None
    h: float = 0.0
    psi: tuple[float, ...] = ()
    terms: tuple[Tensor, ...] = ()


class VariableOrderAdams(Solver):
    """Variable-order (1..``max_order``), variable-step Adams–Bashforth–Moulton PECE in modified
    divided differences (see the module docstring). Adaptive only: the step-size controller
    chooses the order of each step (``variable_order``) from the step's error estimates at the
    neighbouring orders.

    Args:
        max_order: the highest order ``k`` of the error-controlled formula (1..12; the result is
            the order-``k + 1`` corrector).
    """

    family = "ode"
    term_type = VectorFieldTerm
    provides_first_derivative = True
    has_dense_output = True
    carries_state = True
    variable_order = True
    error_order = 2  # the first step is of order 1
    nfe_per_step = 2

    def __init__(self, max_order: int = MAX_ORDER) -> None:
        self.max_order = check_int(max_order, "max_order", 1)
        if self.max_order > MAX_ORDER:
            raise ValueError(f"max_order must be <= {MAX_ORDER}, got {max_order}")
        self.order = self.max_order + 1

    def init(self, term, grid, x0):
        if grid is not None:
            raise ValueError(f"{self.display_name} chooses its own steps and orders: give rtol/atol "
                             "(an adaptive controller), not a fixed grid (adams-moulton steps on one)")
        return DividedDifferences(), None

    def first_derivative(self, term, t0, x0, state):
        f0 = term.vf(t0, x0)
        return f0, DividedDifferences((t0,), (f0,))

    def step(self, term, t0, t1, x, state: DividedDifferences, row):
        if not isinstance(row, int):
            raise TypeError(f"{self.display_name} is variable-order: it needs a step-size controller "
                            "that chooses the order of each step (PIDController), got none")
        nfe = 0
        if not state.phi:
            state, nfe = DividedDifferences((t0,), (term.vf(t0, x),)), 1
        m = len(state.phi)
        k = min(row, m)
        h = t1 - t0
        psi = tuple(t1 - s for s in state.ts)  # psi_i(n+1), i = 1..m
        star = self._rescaled(state, psi)
        g = adams_integrals(h, psi, min(k + 2, m + 1))
        predicted = weighted_sum(x, h, g[:k], star[:k])
        assert predicted is not None
        f_p = term.vf(t1, predicted)
        top = weighted_sum(f_p, -1.0, [1.0] * k, star[:k])  # phi_{k+1}(n+1), predicted
        assert top is not None
        x1 = predicted + (h * g[k]) * top
        held = state.held + 1 if k == state.order else 1
        start = state.start and (k > state.order or state.held == 1)  # raised, or could not be
        raise_ok = (start or held >= k + 1) and k < min(m, self.max_order)
        errors = self._estimates(h, g, k, star, top, raise_ok)
        f1 = term.vf(t1, x1)
        new = DividedDifferences((t1,) + state.ts[: self.max_order - 1], self._differences(f1, star),
                                 k, held, start, x, h, psi[:k], star[:k] + (top,))
        return x1, new, OrderErrors(k, errors), nfe + 2

    @staticmethod
    def _rescaled(state: DividedDifferences, psi: tuple[float, ...]) -> tuple[Tensor, ...]:
        """``phi*_j = beta_j phi_j(n)`` with ``beta_j = prod_{i<j} psi_i(n+1) / psi_i(n)``."""
        t0 = state.ts[0]
        beta, out = 1.0, [state.phi[0]]
        for j in range(1, len(state.phi)):
            beta *= psi[j - 1] / (t0 - state.ts[j])
            out.append(beta * state.phi[j])
        return tuple(out)

    @staticmethod
    def _estimates(h: float, g: list[float], k: int, star: tuple[Tensor, ...],  # noqa: PLR0913
                   top: Tensor, higher: bool) -> dict[int, Tensor]:
        """Local error estimates of the orders ``k``, ``k - 1`` (when ``k > 1``) and ``k + 1``
        (when ``higher``): ``h (g_{q+1} - g_q) phi_{q+1}(n+1)``. Shampine & Gordon lower the order
        only when neither ``k - 1`` nor ``k - 2`` estimates more than ``k``, so that a difference
        that happens to vanish (a zero of the derivative) does not lower it: the ``k - 1``
        estimate reported is the elementwise larger of the two."""
        out = {k: (h * (g[k] - g[k - 1])) * top}
        if k > 1:
            lower = top + star[k - 1]  # phi_k(n+1)
            out[k - 1] = (h * (g[k - 1] - g[k - 2])) * lower
            if k > 2:
                below = (h * (g[k - 2] - g[k - 3])) * (lower + star[k - 2])
                out[k - 1] = torch.maximum(out[k - 1].abs(), below.abs())
        if higher:
            out[k + 1] = (h * (g[k + 1] - g[k])) * (top - star[k])
        return out

    def _differences(self, f1: Tensor, star: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """``phi_1(n+1) = f_{n+1}``, ``phi_{j+1}(n+1) = phi_j(n+1) - phi*_j`` (the ``max_order``
        that an order-``max_order`` step and its estimates need)."""
        out = [f1]
        for j in range(min(len(star), self.max_order - 1)):
            out.append(out[-1] - star[j])
        return tuple(out)

    def interpolate(self, state: DividedDifferences, theta):
        assert state.x0 is not None
        k = len(state.terms)
        weights = adams_integrals(state.h, state.psi, k, float(theta))
        out = weighted_sum(state.x0, state.h, weights, state.terms)
        assert out is not None
        return out


register("vode-adams", VariableOrderAdams, family="ode",
         summary="Variable-order (1..12), variable-step Adams–Bashforth–Moulton PECE in modified "
                 "divided differences (Shampine & Gordon; order chosen per step by the controller).")

__all__ = ["DividedDifferences", "VariableOrderAdams", "adams_integrals"]

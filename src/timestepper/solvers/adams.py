"""Adams–Bashforth and Adams–Bashforth–Moulton methods on a fixed grid, with the order growing
as the history fills (torchdiffeq's ``explicit_adams`` / ``implicit_adams``).

Step ``k`` evaluates ``f_k = f(t_k, x_k)`` and keeps the last ``max_order - 1`` derivatives. With
``n`` of them the Adams–Bashforth step integrates their Lagrange polynomial over the step
(Hairer, Nørsett & Wanner, Solving ODEs I, III.1, eq. 1.5; III.5 for variable steps: the weights
are computed from the grid's actual times, once per grid, so a non-uniform grid keeps the
order). The implicit variant corrects with the Adams–Moulton formula through the ``n + 1`` nodes
``t_{k+1}, t_k, ...`` (HNW I, III.1, eq. 1.8), by a fixed number of fixed-point iterations
``x_{k+1} = x_k + w_0 f(t_{k+1}, x_{k+1}) + sum_j w_{j+1} f_{k-j}`` started from the
predictor (PE(CE)^m). While fewer than three derivatives are known the step is Kutta's 3/8 rule,
as in torchdiffeq.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..core.solver import Solver
from ..core.terms import VectorFieldTerm
from ..core.validation import check_int
from .expint import lagrange_integral_weights
from .registry import register
from .rk import ExplicitRK, RKState, weighted_sum
from .rk_tableaux import RK4_38

MIN_HISTORY = 3  # fewer derivatives: a Runge–Kutta step


@dataclass(frozen=True)
class AdamsRow:
    """One step's coefficients: the Adams–Bashforth weights of the known derivatives (newest
    first; empty for a Runge–Kutta warm-up step) and the Adams–Moulton weights (``t_{k+1}`` first)."""

    bashforth: tuple[float, ...]
    moulton: tuple[float, ...]


class AdamsBashforthMoulton(Solver):
    """Variable-order Adams–Bashforth(–Moulton) on a fixed grid (see the module docstring).

    Args:
        implicit: correct with Adams–Moulton (``True``) or not.
        max_order: at most ``max_order - 1`` past derivatives (4..12; torchdiffeq's 12).
        max_iters: corrector iterations per step (implicit only; torchdiffeq's bound, 4). The
            count is fixed, so a step's evaluations never depend on the data.
    """

    family = "ode"
    term_type = VectorFieldTerm
    carries_state = True

    def __init__(self, implicit: bool = True, max_order: int = 12, max_iters: int = 4) -> None:
        self.implicit = bool(implicit)
        self.max_order = check_int(max_order, "max_order", 4)
        if self.max_order > 12:
            raise ValueError(f"max_order must be <= 12, got {max_order}")
        self.max_iters = check_int(max_iters, "max_iters", 1)
        # global order: the warm-up (one step of 3 derivatives) bounds it
        self.order = min(5, self.max_order) if self.implicit else min(4, self.max_order - 1)
        self.nfe_per_step = 1 + (self.max_iters if self.implicit else 0)
        self._rk = ExplicitRK(RK4_38)

    def init(self, term, grid, x0):
        if grid is None:
            raise ValueError(f"{self.display_name} steps on a fixed grid (give dt= or a grid)")
        ts = [float(v) for v in grid.tolist()]
        keep = self.max_order - 1
        table = []
        for k in range(len(ts) - 1):
            n = min(k + 1, keep)
            if n < MIN_HISTORY:
                table.append(AdamsRow((), ()))
                continue
            past = ts[k - n + 1: k + 1][::-1]
            ab = lagrange_integral_weights(past, ts[k], ts[k + 1], log=False)
            am = lagrange_integral_weights([ts[k + 1]] + past, ts[k], ts[k + 1], log=False) \
                if self.implicit else []
            table.append(AdamsRow(tuple(ab), tuple(am)))
        return (), table

    def step(self, term, t0, t1, x, state, row: AdamsRow):
        f0 = term.vf(t0, x)
        history = (f0,) + tuple(state)[: self.max_order - 2]
        if not row.bashforth:
            x1, _, _, nfe = self._rk.step(term, t0, t1, x, RKState(f=f0), None)
            return x1, history, None, 1 + nfe
        x1 = weighted_sum(x, 1.0, row.bashforth, history)
        if not self.implicit:
            return x1, history, None, 1
        assert x1 is not None
        known = weighted_sum(x, 1.0, row.moulton[1:], history)
        for _ in range(self.max_iters):
            x1 = known + row.moulton[0] * term.vf(t1, x1)
        return x1, history, None, 1 + self.max_iters


def _registered(implicit: bool):
    def build(max_order: int = 12, max_iters: int = 4) -> AdamsBashforthMoulton:
        return AdamsBashforthMoulton(implicit=implicit, max_order=max_order, max_iters=max_iters)

    return build


register("adams-bashforth", _registered(False), family="ode",
         summary="Variable-order Adams–Bashforth on a fixed grid (torchdiffeq's explicit_adams).")
register("adams-moulton", _registered(True), family="ode",
         summary="Variable-order Adams–Bashforth–Moulton, PE(CE)^m on a fixed grid (torchdiffeq's "
                 "implicit_adams).")



@dataclass(frozen=True)
class AdamsHistory:
    """What an adaptive Adams step carries: the past times and derivatives (newest first), and
    for dense output the last step's start, stages (the Runge–Kutta start) or Adams nodes."""

    ts: tuple[float, ...] = ()
    fs: tuple[Tensor, ...] = ()
    x0: Tensor | None = None
    rk: RKState | None = None
    nodes: tuple[float, ...] = ()
    node_fs: tuple[Tensor, ...] = ()


class AdaptiveAdams(Solver):
    """Variable-step Adams–Bashforth–Moulton PECE of order 5 with an error estimate (HNW I,
    III.5: the weights integrate the Lagrange polynomial through the actual past times, so every
    step size is allowed).

    The predictor is the four-step Adams–Bashforth formula (local error ``O(h^5)``), the
    corrector the Adams–Moulton formula through ``t1`` and the four past times (order 5), and
    ``f`` is re-evaluated at the corrected state (PECE: two evaluations per step). The difference
    corrector - predictor estimates the local error (``O(h^5)``, Milne's device), which the
    step-size controller reads with exponent 1/5. The first three steps, before four derivatives
    are known, are Dormand–Prince 5(4) steps (same error order). Dense output integrates the
    corrector's polynomial over part of the step (the Runge–Kutta interpolant on the first steps).
    """

    family = "ode"
    term_type = VectorFieldTerm
    provides_first_derivative = True
    order = 5
    error_order = 5
    nfe_per_step = 2
    has_dense_output = True
    carries_state = True
    steps = 4

    def __init__(self) -> None:
        from .rk_tableaux import DOPRI5_SHAMPINE

        self._start = ExplicitRK(DOPRI5_SHAMPINE)

    def init(self, term, grid, x0):
        return AdamsHistory(), None

    def first_derivative(self, term, t0, x0, state):
        f0 = term.vf(t0, x0)
        return f0, AdamsHistory((t0,), (f0,))

    def step(self, term, t0, t1, x, state: AdamsHistory, row):
        nfe = 0
        if not state.fs:
            f0 = term.vf(t0, x)
            state, nfe = AdamsHistory((t0,), (f0,)), 1
        if len(state.fs) < self.steps:
            x1, rk, err, n = self._start.step(term, t0, t1, x, RKState(f=state.fs[0]), None)
            return x1, self._advance(state, t1, rk.f, AdamsHistory(x0=x, rk=rk)), err, nfe + n
        past = state.ts[: self.steps]
        fs = state.fs[: self.steps]
        predicted = weighted_sum(x, 1.0, lagrange_integral_weights(past, t0, t1, log=False), fs)
        assert predicted is not None
        nodes = (t1,) + past
        am = lagrange_integral_weights(nodes, t0, t1, log=False)
        known = weighted_sum(x, 1.0, am[1:], fs)
        x1 = known + am[0] * term.vf(t1, predicted)
        f1 = term.vf(t1, x1)
        dense = AdamsHistory(x0=x, nodes=nodes, node_fs=(f1,) + fs)
        return x1, self._advance(state, t1, f1, dense), x1 - predicted, nfe + 2

    def _advance(self, state: AdamsHistory, t1: float, f1: Any, dense: AdamsHistory) -> AdamsHistory:
        keep = self.steps
        return AdamsHistory((t1,) + state.ts[: keep - 1], (f1,) + state.fs[: keep - 1], dense.x0,
                            dense.rk, dense.nodes, dense.node_fs)

    def interpolate(self, state: AdamsHistory, theta):
        if state.rk is not None:
            return self._start.interpolate(state.rk, theta)
        assert state.x0 is not None
        t0, h = state.ts[1], state.ts[0] - state.ts[1]
        w = lagrange_integral_weights(state.nodes, t0, t0 + float(theta) * h, log=False)
        out = weighted_sum(state.x0, 1.0, w, state.node_fs)
        assert out is not None
        return out


register("abm", AdaptiveAdams, family="ode",
         summary="Adaptive variable-step Adams–Bashforth–Moulton PECE of order 5 (HNW I, III.5).")

__all__ = ["AdamsBashforthMoulton", "AdamsHistory", "AdamsRow", "AdaptiveAdams"]

"""The implicit Runge–Kutta step: diagonally implicit methods stage by stage, fully implicit
ones (Radau IIA, Gauss–Legendre) on all stages at once, both through the Newton iteration of
:mod:`.newton`.

Stage derivatives are recovered from the stage values (``k_i = (Y_i - base_i) / (h a_ii)``, or
``K = A^-1 (Y - x0) / h``), never by evaluating ``f`` again (HW IV.8: evaluating ``f`` at the
stages of a stiff problem amplifies the Newton error by ``|J|``). For stiffly accurate methods
``x1`` is the last stage and its derivative is reused as the next step's ``f(t0, x0)``.

Starting values: a diagonally implicit stage starts from the quadratic through the three earlier
stage derivatives with the nearest nodes; a fully implicit step (shared step size) from the
previous step's collocation polynomial extrapolated (HW IV.8, eq. 8.5), else from ``Z = 0``.

Evaluations (``nfe``) count every call of ``f``: each Newton iteration one per stage; a dense
Jacobian one (its ``m`` reverse passes are counted in ``stats["jacobians"]``, not as
evaluations); each Jacobian–vector product one (``stats["jvps"]``); the explicit first stage one
unless reused; under autograd, one more per stage for the implicit-function gradient.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ...core.solver import Solver
from ...core.terms import VectorFieldTerm
from .newton import (
    FALLBACK_ATOL,
    FALLBACK_RTOL,
    KAPPA,
    NewtonError,
    NewtonOptions,
    StageSystem,
    Workspace,
    linear_solver,
    new_counters,
    newton_solve,
)
from .tableaux import ImplicitTableau


@dataclass
class ImplicitState:
    """The Newton workspace (shared by every attempt of a solve), ``f(t0, x0)`` when the
    previous step provides it and, for a fully implicit method on shared steps, the previous
    step's stage increments ``Z`` and size ``h`` (the collocation polynomial the next step's
    Newton iteration starts from)."""

    ws: Workspace
    f: Tensor | None = None
    z: Tensor | None = None
    h: float | None = None


@dataclass
class _Attempt:
    """One try at a step: the result, the last stage derivative, the error, the blocks whose
    Newton iteration converged and the evaluations made."""

    x1: Tensor
    f1: Tensor | None
    err: Tensor | None
    ok: Tensor
    nfe: int
    z: Tensor | None = None


class ImplicitRK(Solver):
    """An implicit Runge–Kutta method solved by simplified Newton (Hairer & Wanner, *Solving
    ODEs II*, IV.8), for stiff ODEs.

    Args:
        tableau: the method (:mod:`timestepper.solvers.implicit.tableaux`).
        jacobian: ``"dense"`` (autograd Jacobian, reused across steps; small states) or
            ``"krylov"`` (GMRES on ``torch.func.jvp`` products; large states).
        newton: a :class:`~timestepper.solvers.implicit.newton.NewtonOptions` or a dict of its
            fields (``rtol``, ``atol``, ``max_iter``, ``recompute_rate``, ``max_failures``,
            ``krylov_rtol``, ``krylov_max_iter``).

    After a solve, ``solver.stats`` holds its counters: ``jacobians``, ``factorizations``,
    ``newton_iterations``, ``jvps`` and ``newton_failures``.
    """

    family = "ode"
    term_type = VectorFieldTerm
    per_sample = True
    is_implicit: ClassVar[bool] = True

    def __init__(self, tableau: ImplicitTableau, jacobian: str = "dense",
                 newton: NewtonOptions | dict[str, Any] | None = None) -> None:
        if not isinstance(tableau, ImplicitTableau):
            raise TypeError(f"tableau must be an ImplicitTableau, got {type(tableau).__name__}")
        if newton is None:
            newton = NewtonOptions()
        elif isinstance(newton, dict):
            newton = NewtonOptions(**newton)
        elif not isinstance(newton, NewtonOptions):
            raise TypeError(f"newton must be NewtonOptions or a dict, got {type(newton).__name__}")
        self.tableau = tableau
        rate = newton.recompute_rate
        if rate is None:
            rate = 1e-3 if tableau.radau_error is not None else 0.05
        self._given = newton  # the user's options (None tolerances follow the solve's)
        self.newton = replace(newton, jacobian=jacobian, recompute_rate=rate,
                              rtol=FALLBACK_RTOL if newton.rtol is None else newton.rtol,
                              atol=FALLBACK_ATOL if newton.atol is None else newton.atol)
        self._lin = linear_solver(self.newton)
        self._record: dict[str, Workspace] = {}  # the last solve's workspace, shared with copies
        self.order = tableau.order
        self.error_order = tableau.error_order
        self.provides_first_derivative = tableau.explicit_first_stage or tableau.radau_error is not None  # type: ignore[misc]
        implicit = tableau.stages - (1 if tableau.explicit_first_stage else 0)
        self.nfe_per_step = 2 * implicit + (1 if tableau.radau_error is not None else 0)  # typical: 2 iterations
        a = np.array(tableau.a)
        c = tableau.c
        self._predictor = tuple(_predictor_weights(c, i, 3) for i in range(tableau.stages))
        self._fsal = tableau.stiffly_accurate
        if not tableau.diagonally_implicit:
            ainv = np.linalg.inv(a)
            self._ainv = tuple(tuple(float(v) for v in r) for r in ainv)
            self._d = tuple(float(v) for v in np.array(tableau.b) @ ainv)

    @property
    def display_name(self) -> str:
        return self.registry_name or self.tableau.name

    @property
    def stats(self) -> dict[str, int]:
        """The counters of the last solve started with this solver (or a copy of it made by
        :meth:`with_tolerances`)."""
        ws = self._record.get("ws")
        return dict(ws.counters) if ws is not None else new_counters()

    def with_tolerances(self, rtol: float, atol: float) -> ImplicitRK:
        """This solver with the Newton tolerances the user left unset following a solve's
        tolerances (``KAPPA`` times them); it shares :attr:`stats` with this one."""
        out = copy.copy(self)
        g = self._given
        out.newton = replace(self.newton, rtol=KAPPA * rtol if g.rtol is None else g.rtol,
                             atol=KAPPA * atol if g.atol is None else g.atol)
        out._lin = linear_solver(out.newton)
        return out

    def init(self, term, grid, x0):
        ws = Workspace(fixed=grid is not None)
        self._record["ws"] = ws
        return ImplicitState(ws), None

    def first_derivative(self, term, t0, x0, state):
        f0 = term.vf(t0, x0)
        return f0, ImplicitState(state.ws, f0)

    def merge(self, accept, new, old):
        f = None
        if new.f is not None and old.f is not None:
            f = torch.where(accept, new.f, old.f)
        return ImplicitState(new.ws, f)  # per-sample steps start each Newton iteration from Z = 0

    # -- the step ----------------------------------------------------------------------------------

    def step(self, term, t0, t1, x, state, row):
        ws: Workspace = state.ws
        h = t1 - t0
        blocks = x.shape[0] if isinstance(h, Tensor) and h.ndim == 1 else 1
        nfe = self._lin.begin_step(ws, term, t0, x, blocks)
        ws.theta = 0.0
        ws.retry = blocks == 1 and (ws.last_t0 is None or ws.last_t0 == t0)  # first step, or after a rejection
        ws.eta = max(ws.eta, 1e-16) ** 0.8  # HW IV.8: the first iteration's convergence test
        att = self._attempt(term, t0, h, x, state, blocks)
        nfe += att.nfe
        ws.last_t0 = t0 if blocks == 1 and not isinstance(t0, Tensor) else None
        if bool(att.ok.all()):
            ws.failures = 0
            ws.recompute = ws.theta > self.newton.recompute_rate  # type: ignore[operator]
            hf = h if att.z is not None and not isinstance(h, Tensor) else None
            return att.x1, ImplicitState(ws, att.f1, att.z if hf is not None else None, hf), att.err, nfe
        return self._failed(term, t0, t1, x, state, att, nfe)

    def _failed(self, term, t0, t1, x, state, att: _Attempt, nfe: int):  # noqa: PLR0913
        """Newton did not converge (for some samples): recompute an old Jacobian; reject the step
        (``err = inf``) so that the loop retries smaller; raise after ``max_failures`` in a row,
        or at once on a fixed step that a fresh Jacobian did not save."""
        ws: Workspace = state.ws
        ws.counters["newton_failures"] += 1
        ws.failures += 1
        dense = self.newton.jacobian == "dense"
        fresh = not dense or ws.jac_x is x
        if dense and not fresh:
            ws.recompute = True
        if ws.fixed:
            if not fresh:
                x1, st, err, n = self.step(term, t0, t1, x, state, None)
                return x1, st, err, nfe + n
            raise NewtonError(
                f"{self.display_name}: the Newton iteration did not converge on the fixed step from "
                f"t={_show(t0)} to t={_show(t1)}; use a smaller dt, an adaptive solve (no dt), or looser "
                "newton tolerances")
        if ws.failures > self.newton.max_failures:
            raise NewtonError(
                f"{self.display_name}: the Newton iteration failed on {ws.failures} consecutive attempts "
                f"at t={_show(t0)} (last step {_show(t1 - t0)}); the problem may be singular or need "
                "tighter tolerances or a smaller first step")
        ok = att.ok.reshape((-1,) + (1,) * (x.ndim - 1)) if att.ok.numel() > 1 else att.ok.reshape(())
        inf = torch.full_like(x, math.inf)
        err = inf if att.err is None else torch.where(ok, att.err, inf)
        x1 = torch.where(ok, att.x1, x)
        f1 = None if att.f1 is None or state.f is None else torch.where(ok, att.f1, state.f)
        return x1, ImplicitState(ws, f1), err, nfe

    def _attempt(self, term, t0, h, x: Tensor, state: ImplicitState, blocks: int) -> _Attempt:
        if self.tableau.diagonally_implicit:
            return self._diagonal(term, t0, h, x, state, blocks)
        return self._coupled(term, t0, h, x, state, blocks)

    def _diagonal(self, term, t0, h, x: Tensor, state: ImplicitState, blocks: int) -> _Attempt:  # noqa: PLR0913
        """Stage by stage (DIRK/SDIRK/ESDIRK): one Newton solve per implicit stage, all with the
        same iteration matrix when the diagonal is constant."""
        tab, ws = self.tableau, state.ws
        xb = x.reshape(blocks, -1)
        hb, hden = _as_block(h, xb), _safe(h, xb)
        ks: list[Tensor] = []
        ok = torch.ones(blocks, dtype=torch.bool, device=x.device)
        nfe, y = 0, xb
        prev_f = None if state.f is None else state.f.reshape(blocks, -1)
        for i, c in enumerate(tab.c):
            aii = tab.a[i][i]
            if aii == 0.0:  # the explicit first stage
                ks.append(prev_f if prev_f is not None else term.vf(t0, x).reshape(blocks, -1))
                nfe += 0 if prev_f is not None else 1
                continue
            base = _weighted(xb, hb, tab.a[i][:i], ks)
            k_guess = _lincomb(self._predictor[i], ks) if ks else prev_f
            guess = base if k_guess is None else base + (hb * aii) * k_guess
            sys = StageSystem(term, x, (t0 + c * h,), h, ((aii,),), base[:, None], blocks)
            res = newton_solve(sys, guess[:, None], self._lin, ws, self.newton)
            nfe += res.nfe
            ok = ok & res.ok
            if blocks == 1 and not bool(ok.all()):
                return _Attempt(x, None, None, ok, nfe)
            y = res.y[:, 0]
            ks.append((y - base) / (hden * aii))
        x1b = y if self._fsal else _weighted(xb, hb, tab.b, ks)
        err = None
        if tab.b_err is not None and not ws.fixed:
            err = _weighted(None, hb, [b - e for b, e in zip(tab.b, tab.b_err)], ks).reshape(x.shape)
        f1 = ks[-1].reshape(x.shape) if self._fsal else None
        return _Attempt(x1b.reshape(x.shape), f1, err, ok, nfe)

    def _coupled(self, term, t0, h, x: Tensor, state: ImplicitState, blocks: int) -> _Attempt:  # noqa: PLR0913
        """All stages at once (Radau IIA, Gauss–Legendre): ``Z = Y - x0`` from the previous step's
        collocation polynomial extrapolated (HW IV.8, eq. 8.5), or from ``Z = 0``."""
        tab, ws = self.tableau, state.ws
        xb = x.reshape(blocks, -1)
        s = tab.stages
        base = xb[:, None].expand(blocks, s, xb.shape[1])
        times = tuple(t0 + c * h for c in tab.c)
        sys = StageSystem(term, x, times, h, tab.a, base, blocks)
        guess = base
        if state.z is not None and state.h is not None and not isinstance(h, Tensor) and state.z.shape == base.shape:
            w = self._extrapolation(h / state.h)
            guess = base + torch.stack([_lincomb(row, state.z.unbind(1)) for row in w], dim=1)
        res = newton_solve(sys, guess, self._lin, ws, self.newton)
        nfe = res.nfe
        if blocks == 1 and not bool(res.ok.all()):
            return _Attempt(x, None, None, res.ok, nfe)
        z = res.y - base
        zs = z.unbind(1)
        x1b = xb + _lincomb(self._d, zs)
        f1 = None
        if self._fsal:
            f1 = (_lincomb(self._ainv[-1], zs) / _safe(h, xb)).reshape(x.shape)
        err = None
        if tab.radau_error is not None and not ws.fixed:
            err, n = self._radau_error(term, t0, h, x, state, z, blocks)
            nfe += n
        return _Attempt(x1b.reshape(x.shape), f1, err, res.ok, nfe, z.detach())

    def _extrapolation(self, r: float) -> list[list[float]]:
        """``W[j][i]``: the new stage increment ``j`` from the previous step's ``Z_i``: the
        collocation polynomial through ``(0, 0), (c_i, Z_i)`` at ``1 + c_j r`` (``r`` the step
        ratio), minus the previous step's increment ``sum_i d_i Z_i``."""
        nodes = (0.0, *self.tableau.c)

        def basis(i: int, tau: float) -> float:
            out = 1.0
            for k, nk in enumerate(nodes):
                if k != i + 1:
                    out *= (tau - nk) / (nodes[i + 1] - nk)
            return out

        s = self.tableau.stages
        return [[basis(i, 1.0 + cj * r) - self._d[i] for i in range(s)] for cj in self.tableau.c]

    def _radau_error(self, term, t0, h, x: Tensor, state: ImplicitState, z: Tensor,  # noqa: PLR0913
                     blocks: int) -> tuple[Tensor, int]:
        """HW IV.8 (8.19)–(8.20): ``(I - h g0 J)^-1 (g0 h f0 + sum e_i Z_i)``."""
        assert self.tableau.radau_error is not None
        g0, *e = self.tableau.radau_error
        xb = x.reshape(blocks, -1)
        nfe = 0
        if state.f is None:
            f0, nfe = term.vf(t0, x).reshape(blocks, -1), 1
        else:
            f0 = state.f.reshape(blocks, -1)
        ze = _lincomb(e, z.unbind(1))
        v = (_as_block(h, xb) * g0) * f0 + ze
        sys = StageSystem(term, x, (t0,), h, ((g0,),), xb[:, None], blocks)
        d, n = self._lin.solve(state.ws, sys, xb[:, None], v[:, None])
        nfe += n
        if state.ws.retry:  # HW: on the first step and after a rejection, filter once more
            f1 = term.vf(t0, (xb + d[:, 0]).reshape(x.shape)).reshape(blocks, -1)
            d, n = self._lin.solve(state.ws, sys, xb[:, None], ((h * g0) * f1 + ze)[:, None])
            nfe += 1 + n
        return d[:, 0].reshape(x.shape), nfe


def _predictor_weights(c: tuple[float, ...], i: int, points: int) -> tuple[float, ...]:
    """Weights on the earlier stage derivatives that predict ``k_i``: the polynomial through the
    (at most ``points``) earlier stages with distinct nodes nearest to ``c_i`` (the latest stage
    of a repeated node), evaluated at ``c_i``."""
    w = [0.0] * i
    if i == 0:
        return tuple(w)
    best: dict[float, int] = {}
    for j in range(i):
        best[c[j]] = j  # the latest stage at each node
    near = sorted(best, key=lambda n: abs(c[i] - n))[:points]
    for n in near:
        lj = 1.0
        for m in near:
            if m != n:
                lj *= (c[i] - m) / (n - m)
        w[best[n]] = lj
    return tuple(w)


def _as_block(h: float | Tensor, xb: Tensor) -> float | Tensor:
    return h.reshape(-1, 1).to(xb.dtype) if isinstance(h, Tensor) else h


def _safe(h: float | Tensor, xb: Tensor) -> float | Tensor:
    """``h`` as a divisor: a finished sample's zero-length step divides by 1 instead."""
    if not isinstance(h, Tensor):
        return h if h != 0.0 else 1.0
    hb = h.reshape(-1, 1).to(xb.dtype)
    return torch.where(hb == 0, torch.ones_like(hb), hb)


def _lincomb(ws, vs) -> Tensor:
    """``sum_j w_j v_j`` over the nonzero weights (zeros when there are none)."""
    acc = torch.zeros_like(vs[0])
    for w, v in zip(ws, vs):
        if w != 0.0:
            acc = acc + w * v
    return acc


def _weighted(x: Tensor | None, h: float | Tensor, ws, ks: list[Tensor]) -> Tensor:
    """``x + h sum_j w_j k_j`` over the nonzero weights (``x = None``: from zero)."""
    if not ks:
        assert x is not None
        return x
    acc = _lincomb(ws, ks)
    return acc * h if x is None else x + h * acc


def _show(t: Any) -> str:
    if isinstance(t, Tensor):
        return str([round(v, 6) for v in t.detach().reshape(-1).tolist()][:4])
    return f"{t:.6g}"


__all__ = ["ImplicitRK", "ImplicitState"]

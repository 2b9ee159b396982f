"""A linearly implicit (Rosenbrock) method for stiff problems: Rosenbrock 2(3), the L-stable
pair of Shampine & Reichelt (1997), "The MATLAB ODE Suite", SIAM J. Sci. Comput. 18(1),
section 3 (MATLAB's ``ode23s``).

With ``d = 1 / (2 + sqrt 2)``, ``W = I - h d J`` (``J = df/dx`` and ``T = df/dt`` at the start of
the step, by automatic differentiation):

    k1 = W^-1 (f0 + h d T)
    f1 = f(t0 + h/2, x0 + h k1 / 2);      k2 = W^-1 (f1 - k1) + k1
    x1 = x0 + h k2;  f2 = f(t1, x1)
    k3 = W^-1 (f2 - e32 (k2 - f1) - 2 (k1 - f0) + h d T),   e32 = 6 + sqrt 2
    err = h (k1 - 2 k2 + k3) / 6

Second order, with a third-order error estimate; ``f2`` is reused as the next step's ``f0``. The
Jacobian is dense over the whole (flattened) state, or, in per-sample mode, one block per sample
(samples are independent there): meant for small stiff systems. Each step evaluates ``f`` three
times (once more, under autograd, for ``J`` and ``T``), plus ``f0`` on the first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.solver import Solver
from ..core.terms import VectorFieldTerm
from .registry import register

_D = 1.0 / (2.0 + math.sqrt(2.0))
_E32 = 6.0 + math.sqrt(2.0)


@dataclass
class RosenbrockState:
    """``f(t1, x1)`` of the last step, the next step's ``f0``."""

    f: Tensor | None = None


def jacobians(term: VectorFieldTerm, t0: float | Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(J, T)``: the Jacobian ``df/dx`` and ``df/dt`` at ``(t0, x)``, as ``(B, m, m)`` and
    ``(B, m)`` blocks. A float ``t0`` treats the whole state as one block (``B = 1``, ``m`` its
    size); ``(B,)`` times give one block per sample (rows of a ``(B, ...)`` state)."""
    batched = isinstance(t0, Tensor) and t0.ndim == 1
    b = x.shape[0] if batched else 1
    m = x.numel() // b
    with torch.enable_grad():
        if isinstance(t0, Tensor) and batched:
            tt = t0.detach().to(x.dtype).requires_grad_(True)
        else:
            tt = torch.tensor(float(t0), dtype=x.dtype, device=x.device, requires_grad=True)
        xr = x.detach().requires_grad_(True)
        fx = term.vf(tt, xr).reshape(b, m)
        jac = x.new_empty((b, m, m))
        dt = x.new_zeros((b, m))
        for j in range(m):
            gx, gt = torch.autograd.grad(fx[:, j].sum(), (xr, tt), retain_graph=j < m - 1,
                                         allow_unused=True)
            jac[:, j, :] = gx.reshape(b, m) if gx is not None else 0.0
            if gt is not None:
                dt[:, j] = gt
    return jac.detach(), dt.detach()


@register("rosenbrock23")
class Rosenbrock23(Solver):
    """Shampine & Reichelt's Rosenbrock 2(3) (``ode23s``) for stiff ODEs. Order 2, error order 3."""

    family = "ode"
    term_type = VectorFieldTerm
    is_implicit = True
    order = 2
    error_order = 3
    nfe_per_step = 3
    per_sample = True
    provides_first_derivative = True

    def init(self, term, grid, x0):
        return RosenbrockState(), None

    def first_derivative(self, term, t0, x0, state):
        f0 = term.vf(t0, x0)
        return f0, RosenbrockState(f0)

    def merge(self, accept, new, old):
        if new.f is None or old.f is None:
            return RosenbrockState()
        return RosenbrockState(torch.where(accept, new.f, old.f))

    def step(self, term, t0, t1, x, state, row):
        h = t1 - t0
        reused = state.f is not None
        f0 = state.f if reused else term.vf(t0, x)
        jac, dt = jacobians(term, t0, x)
        b, m = dt.shape
        hb = h.reshape(b, 1, 1).to(x.dtype) if isinstance(h, Tensor) else h
        eye = torch.eye(m, dtype=x.dtype, device=x.device)
        lu = torch.linalg.lu_factor(eye - (hb * _D) * jac)

        def solve(v: Tensor) -> Tensor:
            return torch.linalg.lu_solve(*lu, v.reshape(b, m, 1)).reshape(x.shape)

        hx = h.reshape((-1,) + (1,) * (x.ndim - 1)).to(x.dtype) if isinstance(h, Tensor) else h
        tx = (hx * _D) * dt.reshape(x.shape)
        k1 = solve(f0 + tx)
        f1 = term.vf(t0 + 0.5 * h, x + (0.5 * hx) * k1)
        k2 = solve(f1 - k1) + k1
        x1 = x + hx * k2
        f2 = term.vf(t1, x1)
        k3 = solve(f2 - _E32 * (k2 - f1) - 2.0 * (k1 - f0) + tx)
        err = (hx / 6.0) * (k1 - 2.0 * k2 + k3)
        return x1, RosenbrockState(f2), err, 3 + (0 if reused else 1)

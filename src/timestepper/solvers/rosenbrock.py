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
Jacobian is dense over the whole (flattened) state: meant for small stiff systems.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.solver import Solver, register

_D = 1.0 / (2.0 + math.sqrt(2.0))
_E32 = 6.0 + math.sqrt(2.0)


@register("rosenbrock23")
class Rosenbrock23(Solver):
    """Shampine & Reichelt's Rosenbrock 2(3) (``ode23s``) for stiff ODEs."""

    order = 2
    error_order = 3
    nfe_per_step = 2
    adaptive = True
    has_dense_output = False

    def init(self, term, grid, x0):
        return None

    def _jacobians(self, term, t0: float, x: Tensor) -> tuple[Tensor, Tensor]:
        n = x.numel()
        with torch.enable_grad():
            tt = torch.tensor(t0, dtype=x.dtype, device=x.device, requires_grad=True)
            xr = x.detach().reshape(-1).requires_grad_(True)
            fx = term.vector_field(tt, xr.reshape(x.shape)).reshape(-1)
            rows = [torch.autograd.grad(fx[i], (xr, tt), retain_graph=i < n - 1,
                                        allow_unused=True) for i in range(n)]
        J = torch.stack([r[0] for r in rows])
        T = torch.stack([r[1] if r[1] is not None else tt.new_zeros(()) for r in rows])
        return J.detach(), T.detach()

    def step(self, term, t0, t1, x: Tensor, state):
        h = t1 - t0
        shape = x.shape
        f0 = state[1] if (state is not None and state[0] is x) else term.vf(t0, x)
        J, T = self._jacobians(term, t0, x)
        W = torch.eye(x.numel(), dtype=x.dtype, device=x.device) - (h * _D) * J
        lu = torch.linalg.lu_factor(W)

        def solve(v):
            return torch.linalg.lu_solve(*lu, v.reshape(-1, 1)).reshape(shape)

        Tx = T.reshape(shape)
        k1 = solve(f0 + (h * _D) * Tx)
        f1 = term.vf(t0 + 0.5 * h, x + (0.5 * h) * k1)
        k2 = solve(f1 - k1) + k1
        x1 = x + h * k2
        f2 = term.vf(t1, x1)
        k3 = solve(f2 - _E32 * (k2 - f1) - 2.0 * (k1 - f0) + (h * _D) * Tx)
        err = (h / 6.0) * (k1 - 2.0 * k2 + k3)
        return x1, (x1, f2), err

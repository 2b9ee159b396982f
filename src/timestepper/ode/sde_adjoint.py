"""The reversible adjoint of reversible Heun (Kidger, Foster, Li & Lyons 2021, "Efficient and
accurate gradients for neural SDEs", sec. 3.2).

The forward solve keeps no graph and no intermediate states. The backward pass walks the steps
in reverse: it reconstructs ``(x_n, z_n)`` from ``(x_{n+1}, z_{n+1})`` with the solver's exact
algebraic inverse (querying the same Brownian increments again), recomputes that one step with
a graph, and backpropagates through it. Memory is O(1) in the number of steps and the gradient
is that of the discretised forward solve (up to the roundoff of the reconstruction).
"""

from __future__ import annotations

import torch
from torch import Tensor


class ReversibleAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg, x0: Tensor, *params: Tensor) -> Tensor:
        term, solver, grid, keep, _ = cfg
        with torch.no_grad():
            state = solver.init(term, torch.tensor(grid, dtype=torch.float64), x0)
            x, saved = x0, [x0]
            for a, b in zip(grid[:-1], grid[1:]):
                x, state, _ = solver.step(term, a, b, x, state)
                saved.append(x)
        ctx.cfg, ctx.final = cfg, (x, state)
        return torch.stack([saved[i] for i in keep])

    @staticmethod
    def backward(ctx, g_ys: Tensor):
        term, solver, grid, keep, params = ctx.cfg
        direct = {}
        for k, i in enumerate(keep):
            direct[i] = direct.get(i, 0) + g_ys[k]
        n = len(grid) - 1
        x, state = ctx.final
        a_x = torch.zeros_like(x) + direct.get(n, 0)
        a_z = torch.zeros_like(x)
        pgrads = [torch.zeros_like(p) for p in params]
        for i in reversed(range(n)):
            t0, t1 = grid[i], grid[i + 1]
            with torch.no_grad():
                x, state = solver.reverse_step(term, t0, t1, x, state)
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                zr = state[0].detach().requires_grad_(True)
                st = (zr, term.drift(t0, zr), term.diffusion(t0, zr))
                x1, st1, _ = solver.step(term, t0, t1, xr, st)
                got = torch.autograd.grad((x1, st1[0]), (xr, zr, *params), (a_x, a_z),
                                          allow_unused=True)
            a_x = got[0] + direct.get(i, 0)
            a_z = got[1] if got[1] is not None else torch.zeros_like(a_z)
            for acc, gp in zip(pgrads, got[2:]):
                if gp is not None:
                    acc.add_(gp)
        return (None, a_x + a_z, *pgrads)


def reversible_sdeint(term, solver, grid: list[float], keep: list[int], x0: Tensor,
                      params: tuple[Tensor, ...]) -> Tensor:
    """Run reversible Heun over ``grid`` and return the states at the indices ``keep``, with
    gradients for ``x0`` and ``params`` by the reversible adjoint."""
    if not hasattr(solver, "reverse_step"):
        raise ValueError("adjoint='reversible' needs solver='reversible-heun'")
    return ReversibleAdjoint.apply((term, solver, grid, keep, tuple(params)), x0, *params)

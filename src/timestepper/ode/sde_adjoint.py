"""The reversible adjoint of reversible Heun (Kidger, Foster, Li & Lyons 2021, "Efficient and
accurate gradients for neural SDEs", sec. 3.2).

The forward solve keeps no graph and no intermediate states. The backward pass walks the steps
in reverse: it reconstructs ``(x_n, z_n)`` from ``(x_{n+1}, z_{n+1})`` with the solver's exact
algebraic inverse (querying the same Brownian increments again), recomputes that one step with
a graph, and backpropagates through it. Memory is O(1) in the number of steps and the gradient
is that of the discretised forward solve (up to the roundoff of the reconstruction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.terms import SDETerm
from ..loop import StepRecord, integrate
from ..solvers.sde import SDEReversibleHeun


@dataclass
class _ReversibleRun:
    """One differentiated reversible-Heun solve: the term, solver, grid, the indices of the saved
    times, the parameters, and (after the forward pass) the final state and evaluation count."""

    term: SDETerm
    solver: SDEReversibleHeun
    grid: list[float]
    keep: list[int]
    params: tuple[Tensor, ...]
    final: tuple[Tensor, Any] | None = None
    nfe: int = 0


class ReversibleAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: _ReversibleRun, x0: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        last: dict[str, StepRecord] = {}

        def keep_last(step: StepRecord) -> None:  # the solver state to walk back from
            last["step"] = step

        with torch.no_grad():
            sol = integrate(run.term, run.solver, torch.tensor(run.grid, dtype=torch.float64), x0,
                            saveat=[run.grid[i] for i in run.keep], on_accept=keep_last)
        run.final, run.nfe = (sol.x, last["step"].state), sol.stats.nfe
        ctx.run = run
        return sol.ys

    @staticmethod
    def backward(ctx, g_ys: Tensor):  # type: ignore[override]
        run: _ReversibleRun = ctx.run
        term, solver, grid = run.term, run.solver, run.grid
        direct: dict[int, Any] = {}
        for k, i in enumerate(run.keep):
            direct[i] = direct.get(i, 0) + g_ys[k]
        n = len(grid) - 1
        assert run.final is not None
        x, state = run.final
        a_x = torch.zeros_like(x) + direct.get(n, 0)
        a_z = torch.zeros_like(x)
        pgrads = [torch.zeros_like(p) for p in run.params]
        for i in reversed(range(n)):
            t0, t1 = grid[i], grid[i + 1]
            with torch.no_grad():
                x, state = solver.reverse_step(term, t0, t1, x, state)
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                zr = state[0].detach().requires_grad_(True)
                x1, st1, _, _ = solver.step(term, t0, t1, xr, solver.start(term, t0, zr), None)
                got = torch.autograd.grad((x1, st1[0]), (xr, zr, *run.params), (a_x, a_z),
                                          allow_unused=True)
            a_x = got[0] + direct.get(i, 0)
            a_z = got[1] if got[1] is not None else torch.zeros_like(a_z)
            for acc, gp in zip(pgrads, got[2:]):
                if gp is not None:
                    acc.add_(gp)
        return (None, a_x + a_z, *pgrads)


def reversible_sdeint(term: SDETerm, solver: Any, grid: list[float], keep: list[int],  # noqa: PLR0913
                      x0: Tensor, params: tuple[Tensor, ...]) -> tuple[Tensor, int]:
    """Run reversible Heun over ``grid``; the states at the indices ``keep`` (with gradients for
    ``x0`` and ``params`` by the reversible adjoint) and the evaluations made."""
    if not isinstance(solver, SDEReversibleHeun):
        raise ValueError("adjoint='reversible' needs solver='reversible-heun'")
    run = _ReversibleRun(term, solver, grid, keep, tuple(params))
    ys = ReversibleAdjoint.apply(run, x0, *params)
    return ys, run.nfe

"""Gradients through sampling whose memory does not grow with the number of steps.

``sample(..., gradient=...)``:

* ``"direct"``: autograd records every step (``grad=True``); memory grows with the steps.
* ``"checkpoint"``: the steps run in ``ceil(sqrt(N))`` segments under
  ``torch.utils.checkpoint`` (non-reentrant): the backward pass recomputes one segment at a
  time from its stored start, so ``O(sqrt(N))`` states are held; the gradient equals direct
  backpropagation. Every diffusion solver qualifies (a multistep history is part of the
  segment's input).
* ``"adjoint"``: AdjointDPM (Pan et al. 2023, "AdjointDPM: adjoint sensitivity method for
  gradient backpropagation of diffusion probabilistic models"). In the paper's reparameterisation
  ``y = x / alpha``, ``rho = sigma / alpha`` the probability-flow ODE is ``dy/drho = eps(x, t)``
  and its adjoint ``da/drho = -a^T d eps / dy``, ``dL/dtheta = -int a^T d eps / dtheta drho``;
  both are integrated backwards over the same grid with the same first-order exponential
  integrator (the DDIM step, exact in the linear part), so one backward step is the vector-Jacobian
  product of the forward step at the state recovered there. Only the final state is kept: memory
  is independent of the number of steps. The state is recovered by

  - ``"ddim"`` (``eta = 0``): fixed-point inversion of each step (``adjoint_iterations``
    iterations, :func:`timestepper.sampling.adjoint_recovery.ddim_inverse_step`); the gradient then
    agrees with direct backpropagation to the inversion's accuracy (the paper's backward ODE
    solve, with its discretisation error);
  - ``"bdia-ddim"``: the exact BDIA inverse (Zhang et al. 2023), so the gradient equals direct
    backpropagation up to round-off.

  Other solvers have no adjoint form here and are refused with the list of those that do.

The gradients reach the noise, the parameters of ``denoiser.model_fn`` (an ``nn.Module``) and
the tensors of ``denoiser.model_kwargs`` (the conditioning) that require grad. A loss that does
not depend on the sample gets zero gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm
from ..loop import integrate
from ..solvers.base import lincomb, nonzero
from ..solvers.bdia import BDIA, bdia_rows, ddim_map_coefficients
from ..solvers.ddim import DDIM
from .adjoint_recovery import ddim_inverse_step

GRADIENTS = ("direct", "checkpoint", "adjoint")
ADJOINT_SOLVERS = ("ddim (eta=0)", "bdia-ddim (gamma > 0)")
ADJOINT_ITERATIONS = 3


def gradient_inputs(term: DiffusionTerm) -> tuple[Tensor, ...]:
    """The tensors the backward pass differentiates: the model's parameters and the conditioning
    tensors in ``model_kwargs`` that require grad."""
    den = term.denoiser
    params: list[Tensor] = [p for p in den.model_fn.parameters() if p.requires_grad] \
        if isinstance(den.model_fn, torch.nn.Module) else []
    params += [v for v in den.model_kwargs.values() if isinstance(v, Tensor) and v.requires_grad]
    return tuple(params)


def check_adjoint_solver(solver: Any) -> None:
    """Refuse a solver without an adjoint form, naming those that have one."""
    if (isinstance(solver, BDIA) and solver.gamma > 0) or (type(solver) is DDIM and not solver.is_stochastic):
        return
    raise ValueError(f"gradient='adjoint' needs a solver with an adjoint form ({', '.join(ADJOINT_SOLVERS)}), "
                     f"got {solver.display_name!r}; use gradient='checkpoint' or 'direct'")


def differentiable_sample(mode: str, term: DiffusionTerm, solver: Any, grid: SamplingGrid,
                          x0: Tensor) -> Tensor:
    """The final state of sampling ``x0`` on ``grid`` with gradients by ``mode``
    (``"checkpoint"`` or ``"adjoint"``)."""
    if mode == "checkpoint":
        return checkpointed_steps(term, solver, grid, x0)
    if mode != "adjoint":
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {mode!r}")
    check_adjoint_solver(solver)
    params = gradient_inputs(term)
    return _AdjointDPM.apply(term, solver, grid, x0, *params)


# -- checkpointing ---------------------------------------------------------------------------

def _segment(term, solver, grid, rows, span, x, state):
    for i in range(*span):
        x, state, _, _ = solver.step(term, float(grid.t[i]), float(grid.t[i + 1]), x, state, rows[i])
    return x, state


def checkpointed_steps(term: DiffusionTerm, solver: Any, grid: SamplingGrid, x0: Tensor) -> Tensor:
    """Sampling in ``ceil(sqrt(N))``-step segments under ``torch.utils.checkpoint``."""
    if solver.default_controller(grid) is not None:
        raise ValueError(f"gradient='checkpoint' replays fixed grid steps; {solver.display_name!r} "
                         "chooses its own steps: use gradient='direct'")
    state, rows = solver.init(term, grid, x0)
    n = grid.steps
    size = max(1, math.ceil(math.sqrt(n)))
    x = x0
    with torch.enable_grad():
        for lo in range(0, n, size):
            x, state = checkpoint(_segment, term, solver, grid, rows, (lo, min(n, lo + size)), x, state,
                                  use_reentrant=False)
    return x


# -- AdjointDPM ------------------------------------------------------------------------------

def _vjp(out: Tensor, x: Tensor, params: Sequence[Tensor], a: Tensor) -> tuple[Tensor, list]:
    grads = torch.autograd.grad(out, (x, *params), a, allow_unused=True)
    gx = grads[0] if grads[0] is not None else torch.zeros_like(x)
    return gx, list(grads[1:])


def _accumulate(total: list, new: list) -> None:
    for i, g in enumerate(new):
        if g is not None:
            total[i] = g if total[i] is None else total[i] + g


def _ddim_backward(term, grid, x_last, a, params):
    points = term.points(grid, x_last)
    pgrads: list = [None] * len(params)
    x = x_last
    for k in range(grid.steps - 1, -1, -1):
        with torch.no_grad():
            xk = ddim_inverse_step(term, grid, k, x, ADJOINT_ITERATIONS, points)
        sx, cd = ddim_map_coefficients(grid, k, k + 1)
        with torch.enable_grad():
            xr = xk.detach().requires_grad_(True)
            out = lincomb(xr, nonzero(sx), ((cd, term.data_prediction(xr, points[k])),))
            a, g = _vjp(out, xr, params, a)
        _accumulate(pgrads, g)
        x = xk
    return a, pgrads


def _bdia_backward(term, grid, pair, a, params, gamma):
    rows = bdia_rows(grid, term.points(grid, pair[0]), gamma)
    pgrads: list = [None] * len(params)
    (x_next, x_cur), (a_next, a_cur) = pair, (a, torch.zeros_like(a))
    for k in range(grid.steps - 1, -1, -1):
        r = rows[k]
        with torch.enable_grad():
            xr = x_cur.detach().requires_grad_(True)
            f = lincomb(xr, r.cx, ((r.cm, term.model_output(xr, r.point)),))
            gx, g = _vjp(f, xr, params, a_next)
        _accumulate(pgrads, g)
        a_cur = a_cur + gx
        if k == 0:
            break
        x_prev = (x_next - f.detach()) / gamma
        x_next, x_cur, a_next, a_cur = x_cur, x_prev, a_cur, gamma * a_next
    return a_cur, pgrads


class _AdjointDPM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, term, solver, grid, x0, *params):
        last: list[Tensor] = [x0, x0]

        def keep(i, t, x):
            last[0], last[1] = last[1], x

        with torch.no_grad():
            x1 = integrate(term, solver, grid, x0.detach(), callback=keep).x
        ctx.term, ctx.solver, ctx.grid = term, solver, grid
        ctx.save_for_backward(x1, last[0])
        return x1

    @staticmethod
    def backward(ctx, g):
        x1, prev = ctx.saved_tensors
        params = gradient_inputs(ctx.term)
        if isinstance(ctx.solver, BDIA):
            a, pg = _bdia_backward(ctx.term, ctx.grid, (x1, prev), g, params, ctx.solver.gamma)
        else:
            a, pg = _ddim_backward(ctx.term, ctx.grid, x1, g, params)
        return (None, None, None, a, *pg)


__all__ = ["ADJOINT_SOLVERS", "GRADIENTS", "check_adjoint_solver", "checkpointed_steps",
           "differentiable_sample", "gradient_inputs"]

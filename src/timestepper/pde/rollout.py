"""Autoregressive rollout of a neural surrogate through the one ``integrate`` loop.

A surrogate's model step is a discrete map; :class:`SurrogateTerm` holds it (counting model
calls as ``nfe``) and the ``"autoregressive"`` solver applies it once per grid step, so rollouts
share the loop, the saving and the statistics of every other solve.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.integrate import integrate
from ..core.solver import Solver, register
from ..core.terms import Term


class SurrogateTerm(Term):
    """A learned one-step map ``u(t + dt) = predict(u(t))`` (anything with ``predict``).

    Args:
        surrogate: e.g. :class:`~timestepper.pde.surrogate.OneStepSurrogate` or
            :class:`~timestepper.pde.refiner.PDERefiner`.
        generator: noise source for stochastic surrogates (PDE-Refiner).
    """

    def __init__(self, surrogate, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not callable(getattr(surrogate, "predict", None)):
            raise TypeError(
                f"surrogate needs a predict(u, generator) method, got {type(surrogate).__name__}"
            )
        self.surrogate = surrogate
        self.generator = generator

    def advance(self, x: Tensor) -> Tensor:
        self.nfe += 1
        return self.surrogate.predict(x, self.generator)


@register("autoregressive")
class Autoregressive(Solver):
    """Apply a :class:`SurrogateTerm`'s learned map once per step (the step size is the model's)."""

    order = 1
    nfe_per_step = 1

    def init(self, term, grid, x0):
        if not isinstance(term, SurrogateTerm):
            raise TypeError(
                f"the autoregressive solver advances a SurrogateTerm, got {type(term).__name__}"
            )
        return None

    def step(self, term, t0, t1, x, state):
        return term.advance(x), state, None


@torch.no_grad()
def rollout(
    surrogate,
    u0: Tensor,
    steps: int,
    *,
    dt: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Roll ``surrogate`` out for ``steps`` model steps from ``u0`` (``(B, *space)``).

    Returns ``(B, steps + 1, *space)`` starting with ``u0``. Non-finite states are returned, not
    raised: a diverging surrogate is a measurement, not an error.
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    grid = dt * torch.arange(steps + 1, dtype=torch.float64)
    sol = integrate(
        SurrogateTerm(surrogate, generator),
        Autoregressive(),
        grid,
        u0,
        save="all",
        check_finite=False,
        progress=progress,
    )
    return sol.ys.transpose(0, 1)


__all__ = ["Autoregressive", "SurrogateTerm", "rollout"]

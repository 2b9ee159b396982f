"""Autoregressive rollout of a neural surrogate through the one ``integrate`` loop.

A surrogate's model step is a discrete map; :class:`~timestepper.core.terms.SurrogateTerm` holds it
and the ``"autoregressive"`` solver (:mod:`timestepper.solvers.autoregressive`) applies it once per
grid step, so rollouts share the loop, the saving and the statistics of every other solve.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.solution import SaveAt
from ..core.terms import SurrogateTerm
from ..loop import integrate


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
    sol = integrate(SurrogateTerm(surrogate, generator), "autoregressive", grid, u0,
                    saveat=SaveAt(steps=True), check_finite=False, progress=progress)
    return sol.ys.transpose(0, 1)


__all__ = ["SurrogateTerm", "rollout"]

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
from ..core.validation import as_generator, check_int, check_state
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
    steps = check_int(steps, "steps", 1)
    check_state("u0", u0)
    _check_matches_parameters(surrogate, u0)
    grid = dt * torch.arange(steps + 1, dtype=torch.float64)
    sol = integrate(SurrogateTerm(surrogate, as_generator(generator, u0.device)), "autoregressive", grid, u0,
                    saveat=SaveAt(steps=True), check_finite=False, progress=progress)
    return sol.ys.transpose(0, 1)


def _check_matches_parameters(surrogate, u0: Tensor) -> None:
    """A module surrogate's floating parameters must share ``u0``'s dtype and device (else torch
    fails inside the first layer with a message about matrix types)."""
    if not isinstance(surrogate, torch.nn.Module):
        return
    param = next((p for p in surrogate.parameters() if p.is_floating_point()), None)
    if param is None:
        return
    if param.dtype != u0.dtype:
        raise TypeError(f"u0 is {u0.dtype} but the surrogate's parameters are {param.dtype}: pass "
                        f"u0.to({param.dtype}) (or convert the surrogate)")
    if param.device != u0.device:
        raise ValueError(f"u0 is on {u0.device} but the surrogate is on {param.device}: move one of them")


__all__ = ["SurrogateTerm", "rollout"]

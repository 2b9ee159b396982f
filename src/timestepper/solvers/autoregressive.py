"""The ``"autoregressive"`` solver: a neural surrogate's learned one-step map, once per grid step.

A surrogate is a discrete map (:class:`~timestepper.core.terms.SurrogateTerm`), so a rollout is a
fixed-grid solve whose step applies it; rollouts share the loop, the saving and the statistics of
every other solve (:func:`timestepper.pde.rollout`).
"""

from __future__ import annotations

from ..core.solver import Solver
from ..core.terms import SurrogateTerm
from .registry import register


@register("autoregressive")
class Autoregressive(Solver):
    """Apply a :class:`SurrogateTerm`'s learned map once per step (the step size is the model's)."""

    family = "surrogate"
    term_type = SurrogateTerm
    order = 1
    nfe_per_step = 1

    def step(self, term, t0, t1, x, state, row):
        return term.advance(x), state, None, 1


__all__ = ["Autoregressive"]

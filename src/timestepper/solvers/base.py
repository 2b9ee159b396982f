"""Shared machinery of the diffusion solvers.

A diffusion solver computes, once per grid, a table of float64 coefficients (returned by
``coefficients(grid)`` as lists of Python floats) and then applies them with a few fused tensor
ops per step. Its state is a :class:`DiffusionState`: the step index and the model history of
multistep methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.solver import Solver
from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm


@dataclass
class DiffusionState:
    """Step index ``i``, the coefficient table, and the history of model outputs (newest last)."""

    i: int
    coeffs: dict[str, list]
    history: tuple[Tensor, ...] = field(default_factory=tuple)

    def advance(self, history: tuple[Tensor, ...] | None = None) -> DiffusionState:
        return DiffusionState(self.i + 1, self.coeffs, self.history if history is None else history)


def step_sizes(grid: SamplingGrid) -> Tensor:
    """``h_i = lambda_{i+1} - lambda_i`` (float64; ``inf`` for a step to zero noise)."""
    return grid.log_snr[1:] - grid.log_snr[:-1]


def ve_sigmas(grid: SamplingGrid) -> Tensor:
    """``s = sigma / alpha``: the noise level of the scaled state ``x / alpha`` (k-diffusion's sigma)."""
    return grid.sigma / grid.alpha


class DiffusionSolver(Solver):
    """Base class of solvers that advance a :class:`DiffusionTerm` on a :class:`SamplingGrid`."""

    samples_diffusion = True

    def init(self, term: Any, grid: Any, x0: Tensor) -> DiffusionState:
        if not isinstance(term, DiffusionTerm):
            raise TypeError(f"{type(self).__name__} advances a DiffusionTerm, got {type(term).__name__}")
        if not isinstance(grid, SamplingGrid):
            raise TypeError(f"{type(self).__name__} needs a SamplingGrid, got {type(grid).__name__}")
        term.prepare(grid, x0)
        with torch.no_grad():
            coeffs = self.coefficients(grid)
        return DiffusionState(0, coeffs)

    def coefficients(self, grid: SamplingGrid) -> dict[str, list]:  # pragma: no cover - interface
        raise NotImplementedError


def lincomb(x: Tensor, cx: float, terms: list[tuple[float, Tensor]]) -> Tensor:
    """``cx * x + sum(c * y)``, skipping zero coefficients (the coefficients are Python floats).

    One new tensor is allocated and the sum accumulates into it in place, which keeps a step's
    memory traffic to one pass per operand.
    """
    live = [(c, y) for c, y in terms if c != 0.0]
    if cx != 0.0:
        out = x * cx
    elif live:
        c0, y0 = live.pop(0)
        out = y0 * c0
    else:
        return torch.zeros_like(x)
    for c, y in live:
        out.add_(y, alpha=c)
    return out

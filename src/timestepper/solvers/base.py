"""Shared machinery of the diffusion solvers.

A diffusion solver advances a :class:`~timestepper.diffusion.term.DiffusionTerm` on a
:class:`~timestepper.diffusion.grids.SamplingGrid`. In ``init`` it computes, once per grid and in
float64, one table row per step (:meth:`DiffusionSolver.table`): the evaluation points of the
step and the coefficients of its update as Python floats. A step (:meth:`DiffusionSolver.advance`)
then applies them with a few fused tensor ops; its state is the history of model predictions a
multistep method needs (a tuple of tensors, newest first).

Flow models sampled from pure noise (a grid that starts where ``alpha = 0``, e.g. a rectified
flow at ``t = 1``): log-SNR is ``-inf`` there, so multistep history, noise-prediction forms
(``x / alpha``) and sigma-space methods (``sigma / alpha``) are undefined on the first step. That
step is then the DDIM step, which is the exact limit of every first-order method there, and in
distribution of every stochastic one too (at ``alpha = 0`` the denoiser does not depend on the
state, so ``x_1 = alpha_1 D + sigma_1 x_0`` has the law of the ancestral step); the solver's own
method starts from the second point as if the grid began there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..core.ops import add_scaled_
from ..core.solver import Solver, StepResult
from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm, EvalPoint


@dataclass(slots=True)
class PureNoiseStartRow:
    """The first step of a grid that starts at ``alpha = 0``: ``x1 = cx x + cd x0(x)`` (DDIM)."""

    point: EvalPoint
    cx: float
    cd: float


def step_sizes(grid: SamplingGrid) -> Tensor:
    """``h_i = lambda_{i+1} - lambda_i`` (float64; ``inf`` for a step to zero noise)."""
    return grid.log_snr[1:] - grid.log_snr[:-1]


def ve_sigmas(grid: SamplingGrid) -> Tensor:
    """``s = sigma / alpha``: the noise level of the scaled state ``x / alpha`` (k-diffusion's sigma)."""
    return grid.sigma / grid.alpha


def nonzero(c: float) -> float | None:
    """``None`` for a coefficient that is exactly 0 (its term is left out of the step)."""
    return None if c == 0.0 else c


def lincomb(x: Tensor, cx: float | None, terms: Sequence[tuple[float, Tensor]], into_x: bool = False) -> Tensor:
    """``cx * x + sum(c * y)`` (``cx=None``: no ``x`` term; at least one term then).

    One new tensor is allocated and the sum accumulates into it in place, which keeps a step's
    memory traffic to one pass per operand. ``into_x``: the result is written into ``x`` itself
    (the caller owns it and no ``y`` shares its memory), which saves writing a fresh buffer.
    Which terms are present is decided when the table is built (``None`` coefficients), never by
    looking at values in the step."""
    if cx is not None:
        out = x.mul_(cx) if into_x else x * cx
        rest = terms
    else:
        c0, y0 = terms[0]
        out = torch.mul(y0, c0, out=x) if into_x else y0 * c0
        rest = terms[1:]
    for c, y in rest:
        add_scaled_(out, y, c)
    return out


def stacked_column(values: Sequence[float], x0: Tensor) -> Tensor:
    """Per-step coefficients as one tensor in the state's dtype and device (what a Python float
    coefficient is cast to in the step), for :meth:`~timestepper.core.solver.Solver.stacked_rows`."""
    dtype = x0.dtype if x0.is_floating_point() else torch.float64
    return torch.tensor(list(values), dtype=torch.float64).to(device=x0.device, dtype=dtype)


def stacked_weights(per_step: Sequence[Sequence[float] | None], n: int, x0: Tensor) -> tuple[Tensor, ...]:
    """``n`` columns of per-step weights, each step's weights padded with zeros to ``n`` (a
    warm-up step uses fewer; ``None``: none at all), as :func:`stacked_column` tensors."""
    rows = [list(w or ()) + [0.0] * (n - len(w or ())) for w in per_step]
    return tuple(stacked_column([r[j] for r in rows], x0) for j in range(n))


def stacked_points(points: Sequence[EvalPoint], x0: Tensor) -> EvalPoint:
    """The evaluation points of every step as one :class:`EvalPoint` of tensors with the step as
    leading dimension (the model times, and the conversion coefficients as 0-d tensors per step,
    which the arithmetic takes as it takes floats)."""
    return EvalPoint(torch.stack([q.t for q in points]),
                     *(stacked_column([getattr(q, f) for q in points], x0) for f in "abcd"))  # type: ignore[arg-type]


def may_overwrite(x: Tensor, y: Tensor) -> bool:
    """Whether a step that read ``x`` and computed ``y`` from it may write its result into ``x``
    (which its caller owns): autograd does not record the step (it may need ``x`` for the
    backward pass) and ``y`` does not share ``x``'s memory (a model that returns its input)."""
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return False
    return y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


class DiffusionSolver(Solver):
    """Base class of the solvers that advance a :class:`DiffusionTerm` on a :class:`SamplingGrid`.

    Subclasses implement :meth:`table` (the per-step rows, float64 once per grid) and
    :meth:`advance` (one step from a row); ``handles_pure_noise`` declares a method defined at
    ``alpha = 0`` itself (DDIM and its stochastic forms), which then needs no special first step;
    ``evaluates_on_grid = False`` one that calls the model at data-dependent times;
    ``fitted_to_model = True`` one whose coefficients come from data fitted to a model.
    """

    family = "diffusion"
    term_type: ClassVar[type | tuple[type, ...]] = DiffusionTerm
    grid_type: ClassVar[type | None] = SamplingGrid
    handles_pure_noise: ClassVar[bool] = False
    #: the model is evaluated at the grid's times; False for data-dependent times off the grid (the
    #: Time-Shift Sampler), which the diffusers step protocol and fixed-grid convergence exclude
    evaluates_on_grid: ClassVar[bool] = True
    #: the coefficients come from data fitted to one model (a searched schedule, DC-Solver's
    #: ratios); without it the solver runs a default another solver already provides, so the
    #: training-free baselines (bench, tuning's fixed grid) leave it out. DPM-Solver-v3 is not one:
    #: without statistics it is DPM-Solver++(3M) with its pseudo-corrector, a method of its own
    fitted_to_model: ClassVar[bool] = False

    def init(self, term: DiffusionTerm, grid: SamplingGrid, x0: Tensor) -> tuple[Any, list]:
        if grid is None:
            raise ValueError(f"{self.display_name} steps on a fixed sampling grid")
        points = term.points(grid, x0)
        with torch.no_grad():
            if self.starts_from_pure_noise(grid):
                first = pure_noise_start(grid, points)
                rest = self.table(term, grid.points(1), points[1:], x0) if grid.steps > 1 else []
                return self.start_state(x0), [first, *rest]
            return self.start_state(x0), self.table(term, grid, points, x0)

    def starts_from_pure_noise(self, grid: SamplingGrid) -> bool:
        """Whether the first step must be the DDIM step from ``alpha = 0`` (module docstring)."""
        return float(grid.alpha[0]) == 0.0 and not self.handles_pure_noise

    def start_state(self, x0: Tensor) -> Any:
        """The state before the first step (no history)."""
        return ()

    def step(self, term: Any, t0: Any, t1: Any, x: Tensor, state: Any, row: Any) -> StepResult:
        if type(row) is PureNoiseStartRow:
            d = term.data_prediction(x, row.point)
            return lincomb(x, nonzero(row.cx), ((row.cd, d),)), state, None, 1
        return self.advance(term, x, state, row)

    def table(self, term: DiffusionTerm, grid: SamplingGrid, points: list[EvalPoint],
              x0: Tensor) -> list:  # pragma: no cover - interface
        """One row per step of ``grid`` (``points[i]`` is grid point ``i``)."""
        raise NotImplementedError

    def advance(self, term: DiffusionTerm, x: Tensor, state: Any,
                row: Any) -> StepResult:  # pragma: no cover - interface
        """One step from its table row: ``(x1, state, None, nfe)``."""
        raise NotImplementedError


def pure_noise_start(grid: SamplingGrid, points: list[EvalPoint]) -> PureNoiseStartRow:
    """The DDIM step from ``alpha = 0``: ``x1 = (sigma_1 / sigma_0) x + alpha_1 x0`` (with
    ``h = inf``, ``-alpha_1 expm1(-h) = alpha_1``)."""
    s0, s1, a1 = float(grid.sigma[0]), float(grid.sigma[1]), float(grid.alpha[1])
    return PureNoiseStartRow(points[0], s1 / s0, a1)


__all__ = ["DiffusionSolver", "PureNoiseStartRow", "lincomb", "nonzero", "step_sizes", "ve_sigmas"]

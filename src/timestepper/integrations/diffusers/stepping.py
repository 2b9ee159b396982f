"""Running a solver one pipeline ``step`` at a time.

The pipeline calls the model itself and hands its output to ``step``; :class:`Replay` is the model
function of the :class:`~timestepper.diffusion.term.DiffusionTerm` the solver sees, and returns
that output (after the class's data-prediction post-processing) exactly once per step, at the
state the pipeline evaluated. The solver's own ``step`` runs unchanged on its table row.

:class:`LoopRun` holds one sampling loop from the step where it started (the first ``step`` call,
or ``set_begin_index``): the solver's table for the grid from that point on, or — for classes whose
steps are not chained (DDIM steps to ``t - T // N`` whatever the spacing) — one row per step built
from that step's own two points, which only a memoryless solver may use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ...core.solver import Solver
from ...diffusion.denoiser import Denoiser
from ...diffusion.grids import SamplingGrid
from ...diffusion.predictions import data_coefficients
from ...diffusion.schedules import NoiseSchedule
from ...diffusion.term import DiffusionTerm


class Replay:
    """Model function returning the output the pipeline passed to ``step``, exactly once."""

    def __init__(self) -> None:
        self.pending: Tensor | None = None
        self.at: Tensor | None = None

    def __call__(self, x: Tensor, t: Tensor, **_: Any) -> Tensor:
        if self.pending is None:
            raise RuntimeError(
                "the solver asked for a second model evaluation within one step; the "
                "diffusers step protocol supplies one per step"
            )
        if x is not self.at:
            raise RuntimeError(
                "the solver evaluated the model at a state other than the sample the pipeline "
                "evaluated it at; this solver cannot run under the diffusers step protocol"
            )
        out, self.pending, self.at = self.pending, None, None
        return out


X0Transform = Callable[[Tensor], Tensor]


class LoopRun:
    """One sampling loop of a solver over ``start``/``end`` times from step ``first`` on.

    Args:
        solver: the solver (built for this loop).
        schedule: the noise schedule.
        prediction: what the pipeline's model output is.
        start, end: float64 step start and end times of the whole plan.
        first: the index of the loop's first step.
        x: the state at the first step (its dtype, device and shape set the table's).
        generator: the pipeline's generator (stochastic solvers draw from it).
        transform: post-processing of the data prediction (clip, thresholding) or ``None``.
        keep_model_noise: with ``transform``, keep the model's own noise prediction in the update
            next to the processed ``x0`` (DDIM's rule; ``eta`` is the DDIM noise scale).
    """

    def __init__(self, solver: Solver, schedule: NoiseSchedule, prediction: str,  # noqa: PLR0913 - one loop's context
                 start: Tensor, end: Tensor, first: int, x: Tensor,
                 generator: torch.Generator | None, transform: X0Transform | None,
                 keep_model_noise: float | None) -> None:
        self.solver, self.schedule, self.first = solver, schedule, first
        self.start, self.end = start, end
        self.replay = Replay()
        self.transform = transform
        self.kind = prediction
        model_kind = "sample" if transform is not None else prediction
        self.term = DiffusionTerm(Denoiser(self.replay, schedule, model_kind), generator)
        self.chained = bool((end[first:-1] == start[first + 1:]).all())
        self.state, self.rows = self._rows(x)
        a, b = data_coefficients(prediction, schedule, start)
        self.conv = list(zip(a.tolist(), b.tolist()))
        self.noise_keep = None if keep_model_noise is None else _ddim_noise_keep(
            schedule, start, end, keep_model_noise)

    def _rows(self, x: Tensor) -> tuple[Any, list[Any]]:
        """The solver's start state and one table row per step from ``first`` on."""
        if self.chained:
            times = torch.cat([self.start[self.first:], self.end[-1:]])
            grid = SamplingGrid.from_times(self.schedule, times)
            state, rows = self.solver.init(self.term, grid, x)
            return state, list(rows)
        if self.solver.order != 1 or getattr(self.solver, "registry_name", "") not in (
                "ddim", "euler", "ddpm", "euler-ancestral"):
            raise ValueError(
                f"solver {getattr(self.solver, 'registry_name', self.solver)!r} keeps a history "
                "between steps; this grid's steps do not chain (each ends at t - T // N), so "
                "only a one-step solver (ddim, euler, ddpm) can run on it")
        rows = []
        for i in range(self.first, self.start.numel()):
            if torch.isnan(self.end[i]):
                rows.append(None)
                continue
            grid = SamplingGrid.from_times(self.schedule, torch.stack([self.start[i], self.end[i]]))
            rows.append(self.solver.init(self.term, grid, x)[1][0])
        return (), rows

    def step(self, i: int, x: Tensor, model_output: Tensor) -> Tensor:
        """The state after step ``i`` from ``x`` given the model output there."""
        row = self.rows[i - self.first]
        if row is None:  # a zero-length step: diffusers' update is the identity there
            return x
        self.replay.pending, self.replay.at = self._output(i, x, model_output), x
        t0, t1 = float(self.start[i]), float(self.end[i])
        state = self.state if self.chained else ()
        x1, self.state, _, _ = self.solver.step(self.term, t0, t1, x, state, row)
        self.replay.pending = self.replay.at = None
        return x1

    def _output(self, i: int, x: Tensor, m: Tensor) -> Tensor:
        if self.transform is None:
            return m
        a, b = self.conv[i]
        x0 = x * a + m * b
        x0t = self.transform(x0)
        if self.noise_keep is None:
            return x0t
        return x0t + (x0t - x0) * self.noise_keep[i]


def _ddim_noise_keep(schedule: NoiseSchedule, start: Tensor, end: Tensor, eta: float) -> list[float]:
    """``k`` per step with ``x1 = a1 x0' + s_down eps + c z`` written as the data-form DDIM step
    ``cx x + cd x0*`` on ``x0* = x0' + k (x0' - x0)``: ``k = cx a0 / cd`` (``eps`` the model's own
    noise prediction, ``x0'`` the processed data prediction)."""
    a0, s0 = schedule.alpha_sigma(start)
    safe_end = torch.where(torch.isnan(end), start, end)
    a1, s1 = schedule.alpha_sigma(safe_end)
    is_end = safe_end == schedule.t_data
    a1 = torch.where(is_end, schedule.alpha(schedule.t_data), a1)
    s1 = torch.where(is_end, torch.zeros_like(s1), s1)
    # DDIM eq. 16: c^2 = eta^2 s1^2 (1 - (a0 s1 / (a1 s0))^2)
    ratio = (a0 * s1) / (a1 * s0)
    c2 = eta**2 * s1**2 * (1 - ratio**2)
    s_down = torch.sqrt(torch.clamp(s1**2 - c2, min=0.0))
    cx = s_down / s0
    cd = a1 - cx * a0
    return (cx * a0 / cd).tolist()

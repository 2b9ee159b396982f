"""Running a solver one pipeline ``step`` at a time.

The pipeline calls the model itself and hands its output to ``step``; :class:`Replay` is the model
function of the :class:`~timestepper.diffusion.term.DiffusionTerm` the solver sees, and returns
the outputs the pipeline supplied (after the class's data-prediction post-processing). The
solver's own ``step`` runs unchanged on its table row.

Solvers that evaluate the model more than once per step (Heun, DPM-Solver-2, PNDM's Runge-Kutta
warm-up) run through diffusers' order-2 protocol: the step's evaluation times are listed in
``timesteps`` one after the other (found once per grid by :func:`evaluation_times`, a run of the
solver on a dummy state). At each pipeline ``step`` the solver's step is re-run from its start
state with the outputs supplied so far; when it asks for one more, the state it asks at is handed
back as ``prev_sample`` and the pipeline evaluates the model there at the next timestep. Re-runs
cost no model calls; a stochastic solver re-draws the same noise (the generator's state is
restored before each re-run).

:class:`LoopRun` holds one sampling loop from the step where it started (the first ``step`` call,
or ``set_begin_index``): the solver's table for the grid from that point on, or — for classes whose
steps are not chained (DDIM steps to ``t - T // N`` whatever the spacing) — one row per step built
from that step's own two points, which only a memoryless solver may use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...core.solver import Solver
from ...diffusion.denoiser import Denoiser
from ...diffusion.grids import SamplingGrid
from ...diffusion.predictions import data_coefficients
from ...diffusion.schedules import NoiseSchedule
from ...diffusion.term import DiffusionTerm

MEMORYLESS = ("ddim", "euler", "ddpm", "euler-ancestral")


class NeedModel(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The solver asks for the model at state ``x`` (at time ``t``)."""

    def __init__(self, x: Tensor, t: Tensor) -> None:
        super().__init__("model output needed")
        self.x, self.t = x, t


class Replay:
    """Model function returning the outputs the pipeline supplied for the current step, in
    order; asking for one more raises :class:`NeedModel`."""

    def __init__(self) -> None:
        self.outputs: list[Tensor] = []
        self.used = 0

    def load(self, outputs: list[Tensor]) -> None:
        self.outputs, self.used = outputs, 0

    def __call__(self, x: Tensor, t: Tensor, **_: Any) -> Tensor:
        if self.used < len(self.outputs):
            self.used += 1
            return self.outputs[self.used - 1]
        raise NeedModel(x, t)


class _Probe:
    """A zero model that records the times it is called at."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, x: Tensor, t: Tensor, **_: Any) -> Tensor:
        self.times.append(float(t.reshape(-1)[0]))
        return torch.zeros_like(x)


def evaluation_times(solver: Solver, schedule: NoiseSchedule, start: Tensor,
                     end: Tensor) -> list[list[float]]:
    """The times (our schedule's) at which ``solver`` evaluates the model in each step of the
    chained grid ``start``/``end``, found by running it once on a dummy state. A step whose first
    evaluation is not at its start cannot take the pipeline's model output there: refused."""
    probe = _Probe()
    term = DiffusionTerm(Denoiser(probe, schedule, "sample"), torch.Generator().manual_seed(0))
    grid = SamplingGrid.from_times(schedule, torch.cat([start, end[-1:]]))
    x = torch.zeros(1, 1, dtype=torch.float64)
    with torch.no_grad():
        state, rows = solver.init(term, grid, x)
        per_step = []
        for i, row in enumerate(rows):
            probe.times = []
            x, state, _, _ = solver.step(term, float(start[i]), float(end[i]), x, state, row)
            per_step.append(probe.times)
    for i, times in enumerate(per_step):
        if not times or abs(times[0] - float(start[i])) > 1e-9 * max(1.0, abs(float(start[i]))):
            raise ValueError(
                f"solver {getattr(solver, 'registry_name', solver)!r} does not evaluate the model "
                f"at the start of step {i}; the diffusers step protocol supplies the model output "
                "there first"
            )
    return per_step


class _RngSnapshot:
    """The state of the generator (or torch's global RNG) at the start of a step."""

    def __init__(self, generator: torch.Generator | None, device: torch.device) -> None:
        self.generator = generator
        self.cuda = device.type == "cuda" and generator is None
        self.device = device
        self.state = generator.get_state() if generator is not None else torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if self.cuda else None

    def restore(self) -> None:
        if self.generator is not None:
            self.generator.set_state(self.state)
            return
        torch.set_rng_state(self.state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.device)


X0Transform = Callable[[Tensor], Tensor]


@dataclass
class Segment:
    """A run of ``solver`` from step ``loop_start`` up to the next segment, on the table it
    builds for the grid from step ``table_start <= loop_start`` to there (rows before
    ``loop_start`` unused), with the fresh state of that table. One segment ``(first, first)`` is the solver
    started at the loop's first step; diffusers' classes started mid-schedule keep the full
    schedule's table (LMS: ``(0, first)``) or its grouping (singlestep: a partial group, then
    the full schedule's groups); DDPM's ``fixed_large`` variance is one segment per step, each
    with its own noise scale."""

    table_start: int
    loop_start: int
    solver: Solver


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
            next to the processed ``x0`` (DDIM's rule; the value is DDIM's ``eta``).
        segments: the solver runs of a chained grid (:class:`Segment`, ``loop_start`` increasing
            from ``first``); default one run of ``solver`` from ``first``.
    """

    def __init__(self, solver: Solver, schedule: NoiseSchedule, prediction: str,  # noqa: PLR0913 - one loop's context
                 start: Tensor, end: Tensor, first: int, x: Tensor,
                 generator: torch.Generator | None, transform: X0Transform | None,
                 keep_model_noise: float | None, segments: list[Segment] | None = None) -> None:
        self.solver, self.schedule, self.first = solver, schedule, first
        self.segments = segments or [Segment(first, first, solver)]
        self.start, self.end = start, end
        self.replay = Replay()
        self.transform = transform
        self.generator = generator
        model_kind = "sample" if transform is not None else prediction
        self.term = DiffusionTerm(Denoiser(self.replay, schedule, model_kind), generator)
        self.chained = bool((end[first:-1] == start[first + 1:]).all()) and not bool(
            torch.isnan(end[-1]))
        self.solvers: list[Solver] = []
        self.fresh: dict[int, Any] = {}  # the state a segment starts with, by its first step
        self.state, self.rows = self._rows(x)
        a, b = data_coefficients(prediction, schedule, start)
        self.conv = list(zip(a.tolist(), b.tolist()))
        self.noise_keep = None if keep_model_noise is None else _ddim_noise_keep(
            schedule, start, end, keep_model_noise)
        self.x_start: Tensor | None = None
        self.outputs: list[Tensor] = []
        self.rng: _RngSnapshot | None = None
        #: steps with several evaluations are re-run: their noise draws must repeat
        self.multi_evaluation = True

    def _rows(self, x: Tensor) -> tuple[Any, list[Any]]:
        """The solver's start state and one table row per step from ``first`` on."""
        if self.chained:
            rows: list[Any] = []
            stops = [seg.loop_start for seg in self.segments[1:]] + [self.start.numel()]
            for seg, stop in zip(self.segments, stops):
                times = torch.cat([self.start[seg.table_start:stop], self.end[stop - 1:stop]])
                grid = SamplingGrid.from_times(self.schedule, times)
                state, table = seg.solver.init(self.term, grid, x)
                self.fresh[seg.loop_start] = state
                rows += list(table)[seg.loop_start - seg.table_start:stop - seg.table_start]
                self.solvers += [seg.solver] * (stop - seg.loop_start)
            return self.fresh[self.first], rows
        if getattr(self.solver, "registry_name", "") not in MEMORYLESS:
            raise ValueError(
                f"solver {getattr(self.solver, 'registry_name', self.solver)!r} keeps a history "
                "between steps; this grid's steps do not chain (each ends at t - T // N), so "
                f"only a one-step solver ({', '.join(MEMORYLESS)}) can run on it")
        rows = []
        for i in range(self.first, self.start.numel()):
            if torch.isnan(self.end[i]):
                rows.append(None)
                continue
            grid = SamplingGrid.from_times(self.schedule, torch.stack([self.start[i], self.end[i]]))
            rows.append(self.solver.init(self.term, grid, x)[1][0])
        self.solvers = [self.solver] * len(rows)
        return (), rows

    def step(self, i: int, sub: int, x: Tensor, model_output: Tensor) -> tuple[bool, Tensor]:
        """Feed the model output of evaluation ``sub`` of step ``i`` (at state ``x``).

        Returns ``(True, x1)`` when the step is complete, or ``(False, x_eval)``: the state at
        which the solver needs its next model output."""
        row = self.rows[i - self.first]
        if row is None:
            return True, self._zero_length_step(i, x, model_output)
        if sub == 0:
            if i in self.fresh:
                self.state = self.fresh[i]
            self.x_start, self.outputs = x, []
            self.rng = _RngSnapshot(self.generator, x.device) if self.multi_evaluation else None
        elif self.x_start is None:
            raise RuntimeError("a loop cannot start in the middle of a multi-evaluation step")
        self.outputs.append(self._output(i, x, model_output))
        if sub > 0 and self.rng is not None:
            self.rng.restore()
        self.replay.load(self.outputs)
        t0, t1 = float(self.start[i]), float(self.end[i])
        state = self.state if self.chained else ()
        try:
            x1, new_state, _, _ = self.solvers[i - self.first].step(
                self.term, t0, t1, self.x_start, state, row)
        except NeedModel as ask:
            return False, ask.x
        self.state = new_state
        return True, x1

    def _zero_length_step(self, i: int, x: Tensor, m: Tensor) -> Tensor:
        """DDIM from a time to itself: ``a x0' + s eps`` is ``x`` unless ``x0'`` is the processed
        data prediction next to the model's own noise prediction: ``x + a (x0' - x0)``."""
        if self.transform is None or self.noise_keep is None:
            return x
        a, b = self.conv[i]
        x0 = x * a + m * b
        return x + (self.transform(x0) - x0) * float(self.schedule.alpha(self.start[i]))

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

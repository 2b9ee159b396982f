"""The loop with one step size shared by the whole state: fixed grids and adaptive stepping.

Each iteration asks the controller where the step ends, takes it with the solver and lets the
controller accept or reject it. On a fixed grid (:class:`~timestepper.core.controllers.FixedGrid`)
every step is accepted without looking at the data, so the loop is plain Python over floats and
the steps run without a host synchronisation: finiteness is tracked on the device (one reduction
per step) and checked once at the end. An adaptive controller reads the error norm of each step
on the host (the decision is data dependent by nature); a step whose state or error is NaN/inf is
rejected and retried smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.controllers import FixedGrid
from ..core.solution import Solution, Stats
from ..core.status import MaxStepsError, NonFiniteError, Status, StepSizeUnderflowError
from ..core.validation import finiteness_probe
from .compiled import CompiledCall, clone_tensors, replays_cuda_graphs
from .options import LoopOptions, Problem, StepRecord, start_controller
from .saving import Recorder


@dataclass
class _Progress:
    """How a shared-step solve ended: its last accepted state and the counters."""

    t: float
    x: Tensor
    nfe: int = 0
    accepted: int = 0
    rejected: int = 0
    status: Status = Status.SUCCESS


class _Watchers:
    """What runs after an accepted step besides advancing: the saving, the user's ``callback``
    and ``on_accept``, the progress bar and the finiteness probe. ``active`` is False when none
    is asked for, and the loop then skips the call."""

    def __init__(self, opts: LoopOptions, recorder: Recorder, bar: Any, fixed: bool) -> None:
        self.opts, self.recorder, self.bar, self.fixed = opts, recorder, bar, fixed
        self.active = bool(recorder.active or opts.callback or opts.on_accept or bar is not None)
        self.nfe = 0

    def accepted(self, k: int, t0: float, t1: float, x0: Tensor, x1: Tensor, err: Any,  # noqa: PLR0913
                 state: Any) -> Any:
        """Step ``k`` from ``(t0, x0)`` to ``(t1, x1)`` was accepted; returns the solver state
        (dense output may have completed it)."""
        opts = self.opts
        if opts.on_accept is not None:
            opts.on_accept(StepRecord(t0, t1, x0, x1, err, state))
        if self.recorder.active:
            state, n = self.recorder.accepted(t0, t1, x1, state)
            self.nfe += n
        if opts.callback is not None:
            opts.callback(k, t1, x1)
        if self.bar is not None:
            _advance_bar(self.bar, 1.0 if self.fixed else abs(t1 - t0))
        return state


def run_shared(problem: Problem, opts: LoopOptions) -> Solution:
    """Integrate ``problem`` with one shared step size (see the module docstring). The loop body
    keeps its state in locals and calls the watchers only when one is asked for: on a fixed grid
    a step costs the solver's step and a few Python operations."""
    p = problem
    fixed = p.controller.fixed
    state, table = p.solver.init(p.term, p.grid if fixed else None, p.x0)
    cstate, state, nfe = start_controller(p, state, fixed)
    recorder = Recorder(opts.saveat, p.solver, p.term, p.t0, p.t1, p.x0,
                        p.controller.times if isinstance(p.controller, FixedGrid) else None)
    watch = _Watchers(opts, recorder, _progress_bar(opts.progress, p, fixed), fixed)
    probes: list[Tensor] = []  # finiteness of every accepted state, on a fixed grid
    step, finite = _fixed_grid_step(p, opts, probes) if fixed and opts.check_finite else (opts.step, None)
    if opts.compile is not None:
        step = _TensorTimes(step)
    step_into = _step_into(p, opts, recorder)
    next_time, adapt = p.controller.next_time, p.controller.adapt
    order = p.controller.next_order if p.solver.variable_order else None  # the row of an adaptive step
    term, t1, t, x = p.term, p.t1, p.t0, p.x0
    direction = 1.0 if p.t1 > p.t0 else -1.0
    step_ts = [t]
    accepted = rejected = nonfinite = 0  # nonfinite: rejected NaN/inf proposals in a row
    status = Status.SUCCESS
    while direction * (t1 - t) > 0:
        if accepted + rejected >= opts.max_steps:
            status = _fail(opts, MaxStepsError(
                f"max_steps={opts.max_steps} reached at t={t:.6g} before t1={t1:.6g}; pass "
                "on_failure='return' to get the state"))
            break
        t_next = next_time(t, cstate) if fixed else _step_end(p, t, cstate, recorder)
        row = table[accepted] if table is not None else order(cstate) if order is not None else None
        take = step if step_into is None or x is p.x0 else step_into
        x_new, state_new, err, n = take(term, t, t_next, x, state, row)
        nfe += n
        accept, cstate, underflow = adapt(t, t_next, x, x_new, err, cstate)
        if accept:
            if watch.active:
                state_new = watch.accepted(accepted, t, t_next, x, x_new, err, state_new)
            t, x, state = t_next, x_new, state_new
            accepted += 1
            nonfinite = 0
            step_ts.append(t)
            if finite is not None:
                finite.append(finiteness_probe(x))
        else:
            rejected += 1
            nonfinite = nonfinite + 1 if not bool(torch.isfinite(x_new).all()) else 0
        if underflow or nonfinite >= NONFINITE_TRIES:
            status = _fail(opts, _stop_error(t, t_next, nonfinite))
            break
    if watch.bar is not None:
        watch.bar.close()
    if probes:
        status = _check_finite(torch.stack(probes), step_ts, opts, status)
    return _solution(_Progress(t, x, nfe + watch.nfe, accepted, rejected, status), recorder, step_ts)


def _step_into(p: Problem, opts: LoopOptions, recorder: Recorder) -> Any:
    """The solver's ``step_into`` where the loop owns every state after the first and nothing
    else holds one (an eager fixed-grid solve that saves no step and calls no ``callback`` or
    ``on_accept``); else ``None``. The caller's ``x0`` itself is never written."""
    if (not p.controller.fixed or opts.compile is not None or not p.solver.reuses_state_memory
            or recorder.active or opts.callback is not None or opts.on_accept is not None):
        return None
    return p.solver.step_into


def _fixed_grid_step(p: Problem, opts: LoopOptions, probes: list[Tensor]) -> tuple[Any, list[Tensor] | None]:
    """The step of a fixed-grid solve that tracks finiteness, and the list the loop appends the
    probe of each accepted state to (``None`` when the step itself does: compiled, the step and
    its probe are one graph)."""
    if opts.compile is None:
        return opts.step, probes
    return _ProbedStep(p.solver, opts, probes), None


class _ProbedStep:
    """A compiled fixed-grid step fused with the finiteness probe of its result (one graph)."""

    def __init__(self, solver: Any, opts: LoopOptions, probes: list[Tensor]) -> None:
        assert opts.compile is not None
        self.solver, self.probes = solver, probes
        self.fn = CompiledCall(_step_and_probe, opts.compile, f"the step of {solver.display_name!r}")

        # CUDA graphs replay into the same output memory every step: what the loop keeps from
        # one step to the next is copied out of it.
        self.graphed = replays_cuda_graphs(opts.compile)

    def __call__(self, term: Any, t0: float, t1: float, x: Tensor, state: Any, row: Any) -> Any:  # noqa: PLR0913
        out = self.fn(self.solver, term, t0, t1, x, state, row)
        if self.graphed:
            out = clone_tensors(out)
        x1, state1, err, n, probe = out
        self.probes.append(probe)
        return x1, state1, err, n


def _step_and_probe(solver: Any, term: Any, t0: float, t1: float, x: Tensor, state: Any,  # noqa: PLR0913
                    row: Any) -> tuple[Any, ...]:
    x1, state1, err, n = solver.step(term, t0, t1, x, state, row)
    return x1, state1, err, n, finiteness_probe(x1)


class _TensorTimes:
    """A compiled step takes its times as 0-d float64 tensors: a Python float that changes every
    step and leaves the graph (a Runge-Kutta state keeps ``h`` and ``t0`` for dense output) would
    be specialised, one graph per step size."""

    def __init__(self, step: Any) -> None:
        self.step = step

    def __call__(self, term: Any, t0: float, t1: float, x: Tensor, state: Any, row: Any) -> Any:  # noqa: PLR0913
        times = torch.tensor([t0, t1], dtype=torch.float64, device=x.device).unbind(0)
        return self.step(term, times[0], times[1], x, state, row)


NONFINITE_TRIES = 10
"""Rejected steps in a row whose proposal is NaN/inf (each retried smaller) after which an
adaptive solve stops as non-finite: by then the step size has shrunk by ``factor_min**10``
(about 1e-7 for the default controllers), so the field itself returns NaN/inf there."""


def _stop_error(t: float, t_next: float, nonfinite: int) -> Exception:
    """Why an adaptive solve stops early: NaN/inf proposals (the field returns NaN/inf near
    ``t``) or a step size below its floor."""
    if nonfinite and not math.isfinite(t_next):
        return NonFiniteError(
            f"the vector field returned NaN/inf at t={t:.6g} (no step size could be chosen from "
            "there); pass on_failure='return' to get the last finite state")
    if nonfinite:
        return NonFiniteError(
            f"the solver's proposals from t={t:.6g} were NaN/inf for {nonfinite} step sizes in a "
            f"row (the last to t={t_next:.6g}): the vector field returns NaN/inf there; pass "
            "on_failure='return' to get the last finite state")
    return StepSizeUnderflowError(
        f"step size underflow at t={t:.6g} (the problem may be stiff or blow up; pass "
        "on_failure='return' to get the state)")


def _step_end(p: Problem, t: float, cstate: Any, recorder: Recorder) -> float:
    """Where the next adaptive step ends: the controller's proposal, clipped to the end time and
    to the next save time that dense output does not serve (a step that ends within rounding of
    either lands on it)."""
    t_next = p.controller.next_time(t, cstate)
    direction = 1.0 if p.t1 > p.t0 else -1.0
    targets = (recorder.next_stop(),) if p.controller.steps_past_end else (recorder.next_stop(), p.t1)
    for target in targets:
        if target is None:
            continue
        close = math.isfinite(target) and abs(target - t_next) <= 1e-14 * max(1.0, abs(target))
        if close or direction * (t_next - target) > 0:
            t_next = target
    return t_next


def _fail(opts: LoopOptions, error: Exception) -> Status:
    if opts.on_failure == "raise":
        raise error
    return error.status  # type: ignore[attr-defined]


def _check_finite(sums: Tensor, times: list[float], opts: LoopOptions, status: Status) -> Status:
    """``sums[i]`` is finite iff the state after step ``i`` was; report the first that was not."""
    flags = torch.isfinite(sums)
    if bool(flags.all()):
        return status
    return _fail(opts, nonfinite_step_error(int((~flags).nonzero()[0]), times))


def nonfinite_step_error(i: int, times: list[float]) -> NonFiniteError:
    """The error of a fixed-grid solve whose state became NaN/inf at step ``i``."""
    return NonFiniteError(f"state became NaN/inf at step {i} (from t={times[i]:.6g} to t={times[i + 1]:.6g}); "
                          "pass check_finite=False to return it anyway")


def _solution(run: _Progress, recorder: Recorder, step_ts: list[float]) -> Solution:
    stats = Stats(nfe=run.nfe, steps=run.accepted + run.rejected, accepted=run.accepted,
                  rejected=run.rejected)
    ts_all = torch.tensor(step_ts, dtype=torch.float64)
    ys, ts = recorder.result()
    out_ts = torch.tensor(ts, dtype=torch.float64) if ys is not None else ts_all
    return Solution(x=run.x, ts=out_ts, ys=ys, stats=stats, status=run.status,
                    extras={"t": run.t, "step_ts": ts_all}, interpolation=recorder.dense)


def _progress_bar(enabled: bool, p: Problem, fixed: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    if isinstance(p.controller, FixedGrid):
        return tqdm(total=p.controller.steps, desc="integrate", unit="step", leave=False)
    span = abs(p.t1 - p.t0)
    return tqdm(total=span if math.isfinite(span) else None, desc="integrate", leave=False)


def _advance_bar(bar, amount: float) -> None:
    if math.isfinite(amount):
        bar.update(amount)


__all__ = ["run_shared"]

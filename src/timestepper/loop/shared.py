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
from .options import LoopOptions, Problem, StepRecord, start_controller
from .saving import Recorder


@dataclass
class _Progress:
    """Where a shared-step solve is: the accepted state and the counters."""

    t: float
    x: Tensor
    state: Any
    cstate: Any
    nfe: int = 0
    accepted: int = 0
    rejected: int = 0
    status: Status = Status.SUCCESS


def run_shared(problem: Problem, opts: LoopOptions) -> Solution:
    """Integrate ``problem`` with one shared step size (see the module docstring)."""
    p = problem
    fixed = p.controller.fixed
    state, table = p.solver.init(p.term, p.grid if fixed else None, p.x0)
    cstate, state, nfe = start_controller(p, state, fixed)
    recorder = Recorder(opts.saveat, p.solver, p.term, p.t0, p.t1, p.x0,
                        p.controller.times if isinstance(p.controller, FixedGrid) else None)
    run = _Progress(p.t0, p.x0, state, cstate, nfe)
    step_ts = [p.t0]
    finite: list[Tensor] = []
    bar = _progress_bar(opts.progress, p, fixed)
    direction = 1.0 if p.t1 > p.t0 else -1.0
    while direction * (p.t1 - run.t) > 0:
        if run.accepted + run.rejected >= opts.max_steps:
            run.status = _fail(opts, MaxStepsError(
                f"max_steps={opts.max_steps} reached at t={run.t:.6g} before t1={p.t1:.6g}; pass "
                "on_failure='return' to get the state"))
            break
        t_next = _step_end(p, run, recorder, fixed)
        row = table[run.accepted] if table is not None else None
        x_new, state_new, err, n = opts.step(p.term, run.t, t_next, run.x, run.state, row)
        run.nfe += n
        accept, run.cstate, underflow = p.controller.adapt(run.t, t_next, run.x, x_new, err, run.cstate)
        if accept:
            _accept(p, opts, run, recorder, t_next, x_new, state_new, err)
            step_ts.append(t_next)
            if fixed and opts.check_finite:
                finite.append(_finiteness_probe(x_new))
            if bar is not None:
                _advance_bar(bar, 1.0 if fixed else abs(t_next - step_ts[-2]))
        else:
            run.rejected += 1
        if underflow:
            run.status = _fail(opts, StepSizeUnderflowError(
                f"step size underflow at t={run.t:.6g} (the problem may be stiff or blow up; pass "
                "on_failure='return' to get the state)"))
            break
    if bar is not None:
        bar.close()
    if finite:
        run.status = _check_finite(torch.stack(finite), step_ts, opts, run.status)
    return _solution(run, recorder, step_ts)


def _step_end(p: Problem, run: _Progress, recorder: Recorder, fixed: bool) -> float:
    """Where the next step ends: the controller's proposal, clipped to the end time and to the
    next save time that dense output does not serve (a step that ends within rounding of either
    lands on it)."""
    t_next = p.controller.next_time(run.t, run.cstate)
    if fixed:
        return t_next
    direction = 1.0 if p.t1 > p.t0 else -1.0
    for target in (recorder.next_stop(), p.t1):
        if target is None:
            continue
        close = math.isfinite(target) and abs(target - t_next) <= 1e-14 * max(1.0, abs(target))
        if close or direction * (t_next - target) > 0:
            t_next = target
    return t_next


def _accept(p: Problem, opts: LoopOptions, run: _Progress, recorder: Recorder, t_next: float,  # noqa: PLR0913
            x_new: Tensor, state_new: Any, err: Tensor | None) -> None:
    if opts.on_accept is not None:
        opts.on_accept(StepRecord(run.t, t_next, run.x, x_new, err, state_new))
    t_prev = run.t
    run.t, run.x, run.state = t_next, x_new, state_new
    run.accepted += 1
    run.state, n = recorder.accepted(t_prev, t_next, x_new, run.state)
    run.nfe += n
    if opts.callback is not None:
        opts.callback(run.accepted - 1, t_next, x_new)


def _fail(opts: LoopOptions, error: Exception) -> Status:
    if opts.on_failure == "raise":
        raise error
    return error.status  # type: ignore[attr-defined]


def _finiteness_probe(x: Tensor) -> Tensor:
    """A device scalar that is finite iff every entry of ``x`` is (one reduction, no sync).

    The sum propagates NaN, and inf unless cancelled by -inf, which gives NaN; it is accumulated
    in at least float32 so that half-precision states cannot overflow it."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.sum(dtype=torch.float32)
    return x.sum()


def _check_finite(sums: Tensor, times: list[float], opts: LoopOptions, status: Status) -> Status:
    """``sums[i]`` is finite iff the state after step ``i`` was; report the first that was not."""
    flags = torch.isfinite(sums)
    if bool(flags.all()):
        return status
    i = int((~flags).nonzero()[0])
    return _fail(opts, NonFiniteError(
        f"state became NaN/inf at step {i} (from t={times[i]:.6g} to t={times[i + 1]:.6g}); "
        "pass check_finite=False to return it anyway"))


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

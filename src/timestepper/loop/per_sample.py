"""The loop with one step size per sample (torchode's layout: ``[batch, features]``).

Every sample of the batch has its own time, step size, controller history, accept/reject
decision and counters; the vector field is still called once per stage on the whole batch
(finished samples take zero-length steps). The solver merges its state per sample
(``Solver.merge``). Statistics and the status are ``(B,)`` tensors. Eager, one host
synchronisation per step decides whether every sample has finished; compiled (without save
times), the whole solve is one graph -- the controller's start, the first attempt and the others
in one ``while_loop`` (:mod:`.device_loop`) -- and the host waits for the end of the solve only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.solution import Solution, Stats
from ..core.status import MaxStepsError, NonFiniteError, Status, StepSizeUnderflowError
from .compiled import SYNC_EVERY, CompiledCall
from .device_loop import CompiledLoops, code_key, loop_in_graph
from .options import LoopOptions, Problem, start_controller
from .shared import NONFINITE_TRIES


@dataclass
class _Batch:
    """Per-sample progress: times, states, counters (``(B,)`` tensors) and the stop flags."""

    t: Tensor
    t_end: Tensor
    x: Tensor
    state: Any
    cstate: Any
    tries: Tensor
    accepted: Tensor
    status: Tensor
    active: Tensor
    stopped: Tensor
    nonfinite: Tensor  # rejected NaN/inf proposals in a row, per sample
    masked: bool = False  # a stopped sample may exist: mask its steps (always when compiled)


def run_per_sample(problem: Problem, opts: LoopOptions) -> Solution:
    """Integrate a batch ``x0`` of shape ``(B, ...)`` with per-sample step sizes.

    ``problem.t0``/``t1`` are floats or ``(B,)`` tensors (per-sample intervals, one direction for
    all); ``opts.saveat.ts`` are save times shared by all samples (served by dense output).
    """
    p, x0 = problem, problem.x0
    b, dev = x0.shape[0], x0.device
    tdt = opts.time_dtype or torch.float64
    t = torch.as_tensor(p.t0, dtype=tdt, device=dev).expand(b).clone()
    t_end = torch.as_tensor(p.t1, dtype=tdt, device=dev).expand(b).clone()
    direction = torch.sign(t_end - t)
    if bool((direction == 0).any()) or not bool((direction == direction[0]).all()):
        raise ValueError("per-sample intervals must be non-empty and share one direction")
    state, _ = p.solver.init(p.term, None, x0)
    forward = bool(direction[0] > 0)
    saver = _Saver(opts.saveat.ts, x0, t, tdt) if opts.saveat.ts is not None else None
    solved = _solve_on_device(p, opts, t, t_end, state, forward) if saver is None and opts.compile else None
    if solved is not None:
        run, calls, nfe0 = solved
    else:
        cstate, state, nfe0 = start_controller(Problem(p.term, p.solver, p.controller, x0, t, t_end), state, False)
        run = _start(t, t_end, x0, state, cstate)
        calls = _loop(p, opts, run, saver, forward)
    nfe = torch.zeros_like(run.tries) + nfe0 + calls.total(run.tries)
    rejected = run.tries - run.accepted
    stats = Stats(nfe=nfe, steps=run.tries, accepted=run.accepted, rejected=rejected)
    extras = {"t": run.t, "nfe_calls": nfe0 + calls.batched_calls(), "loop_attempts": calls.loop_attempts}
    return Solution(x=run.x, ts=saver.ts if saver is not None else run.t,
                    ys=saver.ys if saver is not None else None, stats=stats, status=run.status,
                    extras=extras)


def _start(t: Tensor, t_end: Tensor, x0: Tensor, state: Any, cstate: Any, masked: bool = False) -> _Batch:
    """The progress of a batch before its first attempt: every sample running, no counts."""
    zeros = torch.zeros(t.shape, dtype=torch.int64, device=t.device)
    return _Batch(t, t_end, x0, state, cstate, zeros.clone(), zeros.clone(), zeros.clone(),
                  torch.ones(t.shape, dtype=torch.bool, device=t.device),
                  torch.zeros(t.shape, dtype=torch.bool, device=t.device), zeros.clone(), masked)


def _snap(t_end: Tensor) -> Tensor:
    """How close to ``t_end`` a step end lands on it (a few float eps of the time dtype)."""
    return 4 * torch.finfo(t_end.dtype).eps * t_end.abs().clamp(min=1.0)


class _Evaluations:
    """Evaluations per attempted step. Each sample pays the first step's count for every step it
    attempts (multiplied out at the end); a step whose count differs adds the difference for
    the samples active in it (one tensor op, only then)."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.extra: Tensor | None = None
        self.other_calls = 0  # batched calls outside `counts`: dense-output stages, device-loop attempts
        self.loop_attempts = 0  # attempts made inside the compiled device loop

    def add(self, n: int, active: Tensor) -> None:
        if self.counts and n != self.counts[0]:
            diff = (n - self.counts[0]) * active.to(torch.int64)
            self.extra = diff if self.extra is None else self.extra + diff
        self.counts.append(n)

    def add_extra(self, n: int, mask: Tensor) -> None:
        """Evaluations made for the samples in ``mask`` outside a step (dense output stages)."""
        diff = n * mask.to(torch.int64)
        self.extra = diff if self.extra is None else self.extra + diff
        self.other_calls += n

    def add_loop(self, spent: Tensor, tries: Tensor, n_calls: int, iters: int) -> None:
        """Attempts made in the device loop (after at least one counted by :meth:`add`): ``spent``
        evaluations and ``tries`` attempts per sample, ``n_calls`` batched calls in ``iters``
        iterations."""
        diff = spent - self.counts[0] * tries
        self.extra = diff if self.extra is None else self.extra + diff
        self.other_calls += n_calls
        self.loop_attempts += iters

    def total(self, tries: Tensor) -> Tensor:
        base = tries * (self.counts[0] if self.counts else 0)
        return base if self.extra is None else base + self.extra

    def batched_calls(self) -> int:
        return sum(self.counts) + self.other_calls


def _loop(p: Problem, opts: LoopOptions, run: _Batch, saver: _Saver | None, forward: bool) -> _Evaluations:
    """Attempt steps until every sample has finished or stopped. Eager: the "anyone running?"
    flag is read every step; compiled, when the whole solve could not be one graph
    (:func:`_solve_on_device`) or with save times: :func:`_attempt` is one compiled graph and the
    flag is read every :data:`~.compiled.SYNC_EVERY` attempts."""
    calls = _Evaluations()
    snap = _snap(run.t_end)
    attempt, every = _attempt_function(p, opts, saver)
    run.masked = every > 1  # between two syncs a sample may stop unseen
    for i in range(opts.max_steps):
        active = run.active
        if saver is None:
            calls.add(attempt(p, run, forward, snap), active)
        else:
            calls.add(_attempt_saving(p, opts, run, saver, forward, snap, calls), active)
        if (i + 1) % every == 0 and not _still_active(opts, run):
            return calls
    _end_of_budget(opts, run)
    return calls


def _end_of_budget(opts: LoopOptions, run: _Batch) -> None:
    """After the last attempt ``max_steps`` allows: samples still running raise
    :class:`MaxStepsError`, or (``on_failure="return"``) stop with ``Status.MAX_STEPS``."""
    if not _still_active(opts, run):
        return
    if opts.on_failure == "raise":
        raise MaxStepsError(f"max_steps={opts.max_steps} reached in per-sample mode; pass "
                            "on_failure='return' to get the states")
    run.status = torch.where(run.active, int(Status.MAX_STEPS), run.status)


def _attempt_function(p: Problem, opts: LoopOptions, saver: _Saver | None) -> tuple[Any, int]:
    """The function that attempts one step of every sample, and how many attempts the loop
    makes between two host syncs: compiled (one graph: step, controller, merge), it syncs every
    :data:`~.compiled.SYNC_EVERY` attempts."""
    if opts.compile is None or saver is not None:
        return _attempt, 1
    what = f"the per-sample step of {p.solver.display_name!r} (with its controller)"
    return CompiledCall(_attempt, opts.compile, what), SYNC_EVERY


def _solve_on_device(p: Problem, opts: LoopOptions, t: Tensor, t_end: Tensor, state: Any,  # noqa: PLR0913
                     forward: bool) -> tuple[_Batch, _Evaluations, int] | None:
    """The whole compiled solve as one graph (:mod:`.device_loop`): the controller's start, the
    first attempt and the others in one ``while_loop``. Returns the final progress, the
    evaluations and those of the start; ``None`` when it could not be captured (nothing ran)."""
    assert opts.compile is not None
    key = (p.solver.display_name, type(p.solver), code_key(p.term), type(p.controller))
    p.solver.prepare(p.x0, t.dtype)
    out = LOOPS.run(opts.compile, p.x0.device, key, p, t, t_end, state, forward, opts.max_steps,
                    opts.on_failure == "raise")
    if out is None:
        return None
    run, spent, iters, n_calls, nfe0, n_first = out
    iters_n, n_calls_n = (int(v) for v in torch.stack([iters, n_calls]).tolist())
    calls = _Evaluations()
    calls.add(n_first, run.active)
    calls.add_loop(spent, run.tries - 1, n_calls_n, iters_n)  # every sample made the first attempt
    _end_of_budget(opts, run)  # the loop stops at the budget, or at a stopped sample when raising
    return run, calls, nfe0


def _device_solve(p: Problem, t: Tensor, t_end: Tensor, state: Any, forward: bool,  # noqa: PLR0913
                  limit: int, stop_on_failure: bool) -> tuple[Any, ...]:
    """:func:`_solve_on_device` as traced by dynamo: the start and the first attempt in the graph,
    the other attempts in one ``while_loop``."""
    cstate, state, nfe0 = start_controller(Problem(p.term, p.solver, p.controller, p.x0, t, t_end), state, False)
    run = _start(t, t_end, p.x0, state, cstate, masked=True)
    snap = _snap(t_end)
    n_first = _attempt(p, run, forward, snap)

    def going(r: _Batch) -> Tensor:
        # counts rather than any(): the compiler vectorizes integer sums, and a boolean reduction
        # would leave the whole fused loop of the controller (its powers) scalar
        go = r.active.sum() > 0
        return go & (r.stopped.sum() == 0) if stop_on_failure else go

    def body(carry: tuple[_Batch, Tensor, Tensor]) -> tuple[tuple[_Batch, Tensor, Tensor], int]:
        r, tally = dataclasses.replace(carry[0], t_end=t_end), carry[1]
        active = r.active
        n = _attempt(p, r, forward, snap)
        return (dataclasses.replace(r, t_end=None), tally + n * active, going(r)), n  # type: ignore[arg-type]

    # the end times are constant: read from outside the loop rather than carried (and copied);
    # "anyone running?" is computed with the attempt and carried, so the condition reads one flag
    carry = (dataclasses.replace(run, t_end=None), torch.zeros_like(run.tries), going(run))  # type: ignore[arg-type]
    (run, spent, _), iters, n_calls = loop_in_graph(body, lambda c: c[2], carry, limit - 1)
    return dataclasses.replace(run, t_end=t_end), spent, iters, n_calls, nfe0, n_first


LOOPS = CompiledLoops(_device_solve)
"""The compiled per-sample solves (and those that could not be captured)."""


def _attempt(p: Problem, run: _Batch, forward: bool, snap: Tensor) -> int:
    """One attempted step of every sample, all on the device (no host synchronisation): the step,
    the controller's accept/reject and next step size, the merge of accepted samples and the
    stop flags. Returns the step's evaluations."""
    t_next, x_new, state_new, accept, under, n = _propose(p, p.solver.step, run, forward, snap)
    _take(p, run, (t_next, x_new, state_new), accept, under)
    return n


def _attempt_saving(p: Problem, opts: LoopOptions, run: _Batch, saver: _Saver,  # noqa: PLR0913
                    forward: bool, snap: Tensor, calls: _Evaluations) -> int:
    """:func:`_attempt` with save times served from the step's dense output (eager loop; the
    step itself may be compiled)."""
    t_next, x_new, state_new, accept, under, n = _propose(p, opts.step, run, forward, snap)
    state_new, n_dense = saver.record(p.solver, p.term, accept, run.t, t_next, state_new)
    if n_dense:
        calls.add_extra(n_dense, run.active)
    _take(p, run, (t_next, x_new, state_new), accept, under)
    return n


def _propose(p: Problem, step: Any, run: _Batch, forward: bool, snap: Tensor) -> tuple[Any, ...]:
    """The step from every sample's time and the controller's verdict on it (nothing merged)."""
    t_next = _step_ends(p, run, forward, snap)
    x_new, state_new, err, n = step(p.term, run.t, t_next, run.x, run.state, None)
    accept, run.cstate, under = p.controller.adapt(run.t, t_next, run.x, x_new, err, run.cstate)
    accept = _count_attempt(run, accept, x_new)
    return t_next, x_new, state_new, accept, under, n


def _take(p: Problem, run: _Batch, new: tuple[Tensor, Tensor, Any], accept: Tensor, under: Tensor) -> None:
    """Merge the proposals ``new = (t, x, state)`` of the accepted samples; update the stop flags."""
    t_next, x_new, state_new = new
    accept_b = accept.reshape((-1,) + (1,) * (run.x.ndim - 1))
    run.x = torch.where(accept_b, x_new, run.x)
    run.t = torch.where(accept, t_next, run.t)
    run.state = p.solver.merge(accept_b, state_new, run.state)
    _stop_flags(run, under)


def _step_ends(p: Problem, run: _Batch, forward: bool, snap: Tensor) -> Tensor:
    """Each sample's next step end: the controller's proposal clipped to its end time (a stopped
    or finished sample takes a zero-length step; an end within ``snap`` of ``t_end`` lands on it)."""
    t_next = p.controller.next_time(run.t, run.cstate)
    t_next = torch.minimum(t_next, run.t_end) if forward else torch.maximum(t_next, run.t_end)
    if run.masked:
        t_next = torch.where(run.active, t_next, run.t)
    return torch.where((run.t_end - t_next).abs() <= snap, run.t_end, t_next)


def _count_attempt(run: _Batch, accept: Tensor, x_new: Tensor) -> Tensor:
    """The samples that take the step (accepted and active); counts the attempt, and per sample
    the rejected proposals in a row that were NaN/inf (device ops, no sync)."""
    accept = accept & run.active
    finite = torch.isfinite(x_new.reshape(x_new.shape[0], -1)).all(dim=1)
    bad = run.active & ~accept & ~finite
    run.nonfinite = torch.where(bad, run.nonfinite + 1, torch.where(accept, 0, run.nonfinite))
    run.tries = run.tries + run.active
    run.accepted = run.accepted + accept
    return accept


def _stop_flags(run: _Batch, under: Tensor) -> None:
    """Which samples go on, on the device: samples whose step size underflowed stop with
    ``Status.DT_UNDERFLOW``, samples whose proposals stayed NaN/inf for ``NONFINITE_TRIES`` step
    sizes in a row with ``Status.NONFINITE``; finished samples stop."""
    active = run.t != run.t_end
    if run.masked:
        active = active & ~run.stopped
    bad = active & (run.nonfinite >= NONFINITE_TRIES)
    under = active & under & ~bad
    run.status = torch.where(bad, int(Status.NONFINITE), torch.where(under, int(Status.DT_UNDERFLOW), run.status))
    stop = under | bad
    run.stopped = run.stopped | stop
    run.active = active & ~stop


def _still_active(opts: LoopOptions, run: _Batch) -> bool:
    """Whether any sample goes on (one host synchronisation); with ``on_failure="raise"`` a
    sample stopped by an underflow or NaN/inf proposals raises."""
    any_active, any_stopped = torch.stack([run.active, run.stopped]).any(dim=1).tolist()
    if any_stopped and opts.on_failure == "raise":
        raise _stop_error(run)
    run.masked = run.masked or bool(any_stopped)
    return bool(any_active)


def _stop_error(run: _Batch) -> Exception:
    bad = run.status == int(Status.NONFINITE)
    nonfinite = bool(bad.any())
    i = int((bad if nonfinite else run.stopped).nonzero()[0])
    if nonfinite:
        return NonFiniteError(f"sample {i}: the proposals from t={float(run.t[i]):.6g} were NaN/inf for "
                              f"{NONFINITE_TRIES} step sizes in a row (the vector field returns NaN/inf "
                              "there); pass on_failure='return' to stop that sample and finish the others")
    return StepSizeUnderflowError(f"step size underflow for sample {i} at t={float(run.t[i]):.6g}")


class _Saver:
    """Save times shared by all samples, filled from dense output as each sample crosses them."""

    def __init__(self, ts: Any, x0: Tensor, t: Tensor, tdt: torch.dtype) -> None:
        self.ts = torch.as_tensor(ts, dtype=tdt, device=x0.device).reshape(-1)
        self.ys = x0.new_zeros((self.ts.numel(),) + tuple(x0.shape))
        at0 = self.ts[:, None] == t[None, :]
        self.ys = torch.where(at0.reshape(at0.shape + (1,) * (x0.ndim - 1)), x0, self.ys)
        self.bshape = (-1,) + (1,) * (x0.ndim - 1)

    def record(self, solver, term: Any, accept: Tensor, t: Tensor, t_next: Tensor,  # noqa: PLR0913
               state: Any) -> tuple[Any, int]:
        """Fill the save times the accepted samples crossed in this step from its dense output;
        returns the state (completed by ``prepare_dense`` when needed) and its evaluations."""
        direction = torch.sign(t_next - t)
        cross = (accept[None, :] & (direction * (self.ts[:, None] - t[None, :]) > 0)
                 & (direction * (self.ts[:, None] - t_next[None, :]) <= 0))
        crossed = cross.any(dim=1).nonzero().flatten().tolist()
        nfe = 0
        if crossed:
            state, nfe = solver.prepare_dense(term, state)
        for j in crossed:
            span = (t_next - t).abs().clamp(min=torch.finfo(t.dtype).tiny)
            theta = torch.where(cross[j], (self.ts[j] - t) * direction / span, 0.0)
            self.ys[j] = torch.where(cross[j].reshape(self.bshape), solver.interpolate(state, theta),
                                     self.ys[j])
        return state, nfe


__all__ = ["run_per_sample"]

"""The adaptive branch of the integrate loop: one step size shared by the whole state.

A step is attempted, its scaled error measured, and the controller accepts or rejects it and
proposes the next step (one host synchronisation per step: the decision is data dependent by
nature). Save times are served by the solver's dense output when it has one, otherwise the step
is shortened to land on them. A step whose state or error is NaN/inf is rejected and retried
smaller. ``on_failure="return"`` returns the last accepted state with a status instead of
raising when ``max_steps`` is hit or the step size underflows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .solution import Solution, Stats

STATUSES = ("success", "max_steps_reached", "dt_underflow")
ON_FAILURE = ("raise", "return")


class AdaptiveError(RuntimeError):
    """An adaptive solve could not reach ``t1`` (max_steps or step-size underflow)."""


def check_saveat(saveat, t0: float, t1: float) -> list[float]:
    """Validate save times: 1-D, monotone in the direction of integration, inside [t0, t1]."""
    ts = torch.as_tensor(saveat, dtype=torch.float64).detach().cpu().reshape(-1)
    vals = ts.tolist()
    if not vals:
        raise ValueError("saveat must hold at least one time")
    direction = 1.0 if t1 > t0 else -1.0
    lo, hi = min(t0, t1), max(t0, t1)
    for a, b in zip(vals, vals[1:]):
        if direction * (b - a) < 0:
            raise ValueError("saveat must be monotone in the direction of integration")
    if any(not (lo - 1e-12 * max(1.0, abs(lo)) <= v <= hi + 1e-12 * max(1.0, abs(hi)))
           for v in vals):
        raise ValueError(f"saveat times must lie in [{lo:.6g}, {hi:.6g}]")
    return vals


def start(term, solver, controller, t0, t1, x0: Tensor, batched: bool = False):
    """The start of an adaptive solve: the solver state, ``f(t0, x0)`` shared between the first
    stage and the initial step selection, and the initial step. Returns
    ``(state, dt, error_order)``."""
    state = solver.init(term, None, x0)
    if not is_pid(controller):  # a controller with the original initial_step/adapt protocol
        return state, controller.initial_step(term, solver, t0, t1, x0), solver.order + 1
    f0 = None
    if hasattr(solver, "first_derivative"):
        f0, state = solver.first_derivative(term, t0, x0, state)
    dt = controller.initial_step(term, solver, t0, t1, x0, f0=f0, batched=batched)
    return state, dt, getattr(solver, "error_order", solver.order + 1)


def is_pid(controller) -> bool:
    """Whether ``controller`` speaks the PID protocol (``error_norm``/``propose_float``); other
    :class:`StepSizeController` subclasses only implement ``initial_step`` and
    ``adapt(x0, x1, err, dt, order) -> (accept, dt_next)``, which the loop also accepts."""
    return hasattr(controller, "propose_float") and hasattr(controller, "error_norm")


def integrate_adaptive(term, solver, controller, x0: Tensor, t_span, *, save: str = "final",
                       saveat=None, progress: bool = False, callback=None,
                       max_steps: int = 100_000, on_failure: str = "raise",
                       collect=None) -> Solution:
    """Adaptive solve over ``t_span`` with a shared step size (see module docstring).

    ``collect(solver, state, err, dt, x0, x1)`` is called after each accepted step from ``x0``
    to ``x1`` when given (used by the regularisation statistics of
    :mod:`timestepper.ode.regularise`).
    """
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    t0, t1 = (float(t) for t in t_span)
    if t0 == t1:
        raise ValueError("t_span must have t0 != t1")
    if save == "all" and saveat is not None:
        raise ValueError("give either save='all' or saveat, not both")
    direction = 1.0 if t1 > t0 else -1.0
    nfe0 = term.nfe
    state, dt, error_order = start(term, solver, controller, t0, t1, x0)
    dt = abs(dt)
    pid = is_pid(controller)
    cstate = controller.init_state() if pid else None
    dt_min = getattr(controller, "dt_min", None)

    st = check_saveat(saveat, t0, t1) if saveat is not None else []
    dense = bool(st) and getattr(solver, "has_dense_output", False)
    outs: list[Tensor] = []
    k = 0
    while k < len(st) and st[k] == t0:
        outs.append(x0)
        k += 1
    ts, saved = [t0], ([x0] if save == "all" else None)
    t, x = t0, x0
    accepted = rejected = 0
    status = "success"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=abs(t1 - t0), desc="solve", leave=False)
    while direction * (t1 - t) > 0:
        if accepted + rejected >= max_steps:
            status = "max_steps_reached"
            if on_failure == "raise":
                raise AdaptiveError(f"max_steps={max_steps} reached at t={t:.6g} before "
                                    f"t1={t1:.6g}; pass on_failure='return' to get the state")
            break
        target = st[k] if (k < len(st) and not dense) else t1
        h = min(dt, abs(target - t))
        t_next = target if abs(target - (t + direction * h)) <= 1e-14 * max(1.0, abs(target)) \
            else t + direction * h
        x_new, state_new, err = solver.step(term, t, t_next, x, state)
        if err is None:
            raise TypeError(f"solver {type(solver).__name__} gives no error estimate; "
                            "it cannot be adaptive")
        if pid:
            norm = float(controller.error_norm(x, x_new, err))
            accept, dt_next, cstate = controller.propose_float(norm, abs(t_next - t), cstate,
                                                               error_order)
        else:
            norm = math.nan
            accept, dt_next = controller.adapt(x, x_new, err, t_next - t, solver.order)
            dt_next = abs(dt_next)
        if accept:
            if collect is not None:
                collect(solver, state_new, err, t_next - t, x, x_new)
            t_prev, x_prev = t, x
            t, x, state = t_next, x_new, state_new
            accepted += 1
            ts.append(t)
            if saved is not None:
                saved.append(x)
            while k < len(st) and direction * (st[k] - t) <= 0:
                theta = (st[k] - t_prev) / (t - t_prev)
                outs.append(x if (theta == 1.0 or not dense)
                            else solver.interpolate(state, theta))
                k += 1
            del x_prev
            if callback is not None:
                callback(accepted - 1, t, x)
            if bar is not None:
                bar.update(abs(t - t_prev))
        else:
            rejected += 1
        dt = dt_next
        if dt < (dt_min if dt_min is not None else 1e-14 * max(1.0, abs(t))):
            status = "dt_underflow"
            if on_failure == "raise":
                raise AdaptiveError(f"step size underflow at t={t:.6g} (dt={dt:.3g}, last error "
                                    f"norm {norm:.3g}); the problem may be stiff or blow up")
            break
        if not math.isfinite(dt):
            raise AdaptiveError(f"step size became {dt} at t={t:.6g}")
    if bar is not None:
        bar.close()
    stats = Stats(nfe=term.nfe - nfe0, steps=accepted + rejected, accepted=accepted,
                  rejected=rejected)
    step_ts = torch.tensor(ts, dtype=torch.float64)
    extras = {"status": status, "t": t, "step_ts": step_ts}
    if st:
        ys = torch.stack(outs) if outs else None
        return Solution(x=x, ts=torch.tensor(st[: len(outs)], dtype=torch.float64), ys=ys,
                        stats=stats, extras=extras)
    ys = torch.stack(saved) if saved is not None else None
    return Solution(x=x, ts=step_ts, ys=ys, stats=stats, extras=extras)

"""The adaptive loop with one step size per sample (torchode's layout: ``[batch, features]``).

Every sample of the batch has its own time, step size, controller history, accept/reject
decision and counters; the vector field is still called once per stage on the whole batch
(finished samples take zero-length steps). Statistics are ``(B,)`` tensors. One host
synchronisation per step decides whether every sample has finished.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..solvers.rk import RKState
from .adaptive import ON_FAILURE, STATUSES, AdaptiveError, is_pid, start
from .solution import Solution, Stats


def _merge_state(accept: Tensor, new, old, x: Tensor):
    """Per-sample choice between the solver state of the new and the old step (``accept``
    shaped to broadcast against ``x``)."""
    if isinstance(new, RKState):
        f = None
        if new.f is not None and old is not None and old.f is not None:
            f = torch.where(accept, new.f, old.f)
        return RKState(x=x, f=f)
    return new


def integrate_adaptive_batched(term, solver, controller, x0: Tensor, t0, t1, *, saveat=None,
                               max_steps: int = 100_000, on_failure: str = "raise",
                               time_dtype: torch.dtype = torch.float64) -> Solution:
    """Adaptive solve of a batch ``x0`` of shape ``(B, ...)`` with per-sample step sizes.

    Args:
        t0, t1: floats or ``(B,)`` tensors (per-sample intervals, one direction for all).
        saveat: save times shared by all samples (inside every sample's interval).
        time_dtype: dtype of the per-sample times and step sizes on the device (``float32``
            for devices without float64, e.g. MPS).

    Returns a :class:`Solution` whose ``stats`` fields are ``(B,)`` int64 tensors and whose
    ``extras`` hold ``status`` (``(B,)`` codes indexing ``STATUSES``), ``t`` (the time each sample
    reached) and ``nfe_calls`` (batched calls of the vector field).
    """
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    if x0.ndim < 1:
        raise ValueError("per-sample mode needs a leading batch dimension in y0")
    B, dev = x0.shape[0], x0.device
    t = torch.as_tensor(t0, dtype=time_dtype, device=dev).expand(B).clone()
    t_end = torch.as_tensor(t1, dtype=time_dtype, device=dev).expand(B).clone()
    direction = torch.sign(t_end - t)
    if bool((direction == 0).any()) or not bool((direction == direction[0]).all()):
        raise ValueError("per-sample intervals must be non-empty and share one direction")
    if not is_pid(controller):
        raise TypeError("per-sample steps need a PIDController (error_norm/propose protocol), "
                        f"got {type(controller).__name__}")
    calls0 = term.nfe
    state, dt, error_order = start(term, solver, controller, t, t_end, x0, batched=True)
    dt = torch.as_tensor(dt, dtype=time_dtype, device=dev).expand(B).clone()
    cstate = controller.init_state()
    zeros = torch.zeros(B, dtype=torch.int64, device=dev)
    nfe = zeros + (term.nfe - calls0)
    acc, status = zeros.clone(), zeros.clone()
    st = None if saveat is None else torch.as_tensor(saveat, dtype=time_dtype, device=dev)
    ys = None
    if st is not None:
        ys = x0.new_zeros((st.numel(),) + tuple(x0.shape))
        at0 = (st[:, None] == t[None, :])
        ys = torch.where(at0.reshape(at0.shape + (1,) * (x0.ndim - 1)), x0, ys)
    dense = st is not None and getattr(solver, "has_dense_output", False)
    if st is not None and not dense:
        raise ValueError("per-sample saveat needs a solver with dense output")
    x = x0
    done = t == t_end
    active = ~done
    bshape = (-1,) + (1,) * (x0.ndim - 1)
    eps = 4 * torch.finfo(time_dtype).eps
    snap = eps * t_end.abs().clamp(min=1.0)  # a step ending this close to t_end lands on it
    backward = bool(direction[0] < 0)
    nps = solver.nfe_per_step
    stopped, any_stopped = torch.zeros_like(done), False
    tries = zeros.clone()  # attempted steps per sample; rejected = tries - accepted
    it = 0
    all_done = bool(done.all())
    while not all_done:
        # Every unfinished sample attempts a step in every iteration, so the iteration count is
        # the largest number of attempts of any sample (no device sync needed).
        if it >= max_steps:
            if on_failure == "raise":
                raise AdaptiveError(f"max_steps={max_steps} reached in per-sample mode; pass "
                                    "on_failure='return' to get the states")
            status = torch.where(active, 1, status)
            break
        # A finished sample has t == t_end, so its step is min(dt, 0) = 0 (stopped ones need
        # the explicit zero). t never passes t_end (a step ending within snap lands on it), so
        # t_end - t has the sign of the direction.
        if backward:
            h = torch.minimum(dt, t - t_end).neg()
        else:
            h = torch.minimum(dt, t_end - t)
        if any_stopped:
            h = torch.where(active, h, 0.0)
        t_next = t + h
        t_next = torch.where((t_end - t_next).abs() <= snap, t_end, t_next)
        it += 1
        x_new, state_new, err = solver.step(term, t, t_next, x, state)
        norm = controller.error_norm(x, x_new, err, batched=True)
        taken = t_next - t if not backward else t - t_next  # |step|, also for -0.0
        if norm.dtype != time_dtype:
            norm = norm.to(time_dtype)
        accept, dt_next, cstate = controller.propose(norm, taken, cstate, error_order)
        # (the controller advances its history only where accepted)
        accept = accept & active
        tries += active
        acc += accept
        if st is not None:
            cross = (accept[None, :] & (direction * (st[:, None] - t[None, :]) > 0)
                     & (direction * (st[:, None] - t_next[None, :]) <= 0))
            for j in cross.any(dim=1).nonzero().flatten().tolist():
                theta = torch.where(cross[j], (st[j] - t) / (t_next - t).abs().clamp(
                    min=torch.finfo(time_dtype).tiny) * direction, 0.0)
                ys[j] = torch.where(cross[j].reshape(bshape),
                                    solver.interpolate(state_new, theta), ys[j])
        accept_b = accept.reshape(bshape)
        x = torch.where(accept_b, x_new, x)
        t = torch.where(accept, t_next, t)
        state = _merge_state(accept_b, state_new, state, x)
        dt = dt_next  # (a finished sample's dt is never used: its steps have length 0)
        active = t != t_end
        if any_stopped:
            active = active & ~stopped
        under = active & (dt < eps * t.abs().clamp(min=1.0))
        any_active, any_under = torch.stack([active, under]).any(dim=1).tolist()  # one sync
        all_done = not any_active
        if any_under:
            if on_failure == "raise":
                i = int(under.nonzero()[0])
                raise AdaptiveError(f"step size underflow for sample {i} at t={float(t[i]):.6g}")
            status = torch.where(under, 2, status)
            stopped, any_stopped = stopped | under, True
            active = active & ~under
            all_done = not bool(active.any())
    rej = tries - acc
    nfe = nfe + tries * nps
    stats = Stats(nfe=nfe, steps=acc + rej, accepted=acc, rejected=rej)
    extras = {"status": status, "statuses": STATUSES, "t": t, "nfe_calls": term.nfe - calls0}
    return Solution(x=x, ts=st if st is not None else t, ys=ys, stats=stats, extras=extras)

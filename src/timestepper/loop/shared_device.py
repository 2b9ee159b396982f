"""A compiled adaptive solve with one step size, decided on the device.

The eager shared-step loop reads each step's error norm on the host and decides there. Compiled,
that round trip would cost a compiled call per step plus a sync; instead the whole state is seen
as the one sample of a per-sample solve (:mod:`.per_sample`): the attempted steps -- the step, the
error norm over the whole state, the controller's accept/reject and next step size -- run in one
compiled ``while_loop`` (:mod:`.device_loop`; failing that, one compiled graph per attempt, with
"finished?" read every :data:`~.compiled.SYNC_EVERY` attempts). The error norm over the one
sample is the shared norm, so the steps are those of the eager loop up to rounding (the
per-sample controller works on tensors).

It serves the plain case: an explicit solver with per-sample support, a vector-field term,
nothing saved along the way, no callbacks or progress bar; everything else runs the host loop.
``Solution.ts`` then holds ``t0`` and the end time (the accepted step times stay on the device
and are not collected).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..core.solution import SaveAt, Solution, Stats
from ..core.status import Status
from ..core.terms import VectorFieldTerm
from .options import LoopOptions, Problem
from .per_sample import run_per_sample


class _WholeState(VectorFieldTerm):
    """``term`` on the state flattened to one sample ``(1, n)``; times arrive as ``(1,)``."""

    def __init__(self, term: VectorFieldTerm, shape: torch.Size) -> None:
        self.term, self.shape = term, shape

    def vf(self, t: float | Tensor, x: Tensor) -> Tensor:
        if isinstance(t, Tensor):
            t = t.reshape(())
        return self.term.vf(t, x.reshape(self.shape)).reshape(1, -1)


def applies(p: Problem, opts: LoopOptions) -> bool:
    """Whether a shared-step solve runs on the device (see the module docstring)."""
    save = opts.saveat
    watched = opts.callback is not None or opts.on_accept is not None or opts.progress
    saving = save.steps or save.dense or save.ts is not None
    return (opts.compile is not None and not p.controller.fixed and p.solver.per_sample
            and not p.controller.steps_past_end and isinstance(p.term, VectorFieldTerm)
            and p.x0.dtype in (torch.float32, torch.float64) and not watched and not saving)


def run_shared_on_device(p: Problem, opts: LoopOptions) -> Solution:
    """The shared-step solve of ``p`` as a per-sample solve of one sample (the whole state)."""
    shape = p.x0.shape
    one = Problem(_WholeState(p.term, shape), p.solver, p.controller, p.x0.reshape(1, -1), p.t0, p.t1)
    sol = run_per_sample(one, replace(opts, saveat=SaveAt(), time_dtype=torch.float64))
    stats = sol.stats
    ints = [int(v) for v in torch.stack([stats.nfe, stats.steps, stats.accepted, stats.rejected]).reshape(4, -1)[:, 0]]
    t_end = float(sol.extras["t"][0])
    status = Status(int(torch.as_tensor(sol.status).reshape(-1)[0]))
    return Solution(x=sol.x.reshape(shape), ts=torch.tensor([float(p.t0), t_end], dtype=torch.float64),
                    ys=None, stats=Stats(nfe=ints[0], steps=ints[1], accepted=ints[2], rejected=ints[3]),
                    status=status, extras={"t": t_end, "on_device": True,
                                                   "loop_attempts": sol.extras["loop_attempts"]})


__all__ = ["applies", "run_shared_on_device"]

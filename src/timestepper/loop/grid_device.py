"""A compiled fixed-grid solve as one ``torch.while_loop`` graph.

On a fixed grid every step is accepted without looking at the data, so the eager loop is plain
Python around the steps; compiled, each step is still one graph call (guards, argument unpacking,
the generated wrapper), which on a CPU costs about what a small step does. Here the steps are the
body of one compiled ``while_loop``: the step index, the state, the solver state and the index of
the first step whose result was NaN/inf are carried, and the step's times are read from the grid
tensor by index. Two kinds of table qualify:

* every step after the first uses the same row (an exponential integrator on a uniform grid, or a
  solver without rows, like the Runge-Kutta methods): the first step runs eagerly (it settles the
  structure of the solver state) and the others in the loop;
* a solver declaring ``stacks_rows`` (the multistep diffusion solvers) gives its rows as tensors
  per step (:meth:`~timestepper.core.solver.Solver.stacked_rows`): every step runs in the loop on
  its row's entry.

The result, the evaluations and the NaN/inf report (naming the step and its times) are those of
the eager loop.

It serves the plain case: nothing saved along the way, no callbacks, progress bar or CUDA-graph
mode, and a grid of at most ``max_steps`` steps; everything else -- and a loop that cannot be
captured (a solver whose state grows during a warm-up, random increments drawn in the step) --
runs the host loop of :mod:`.shared`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core.controllers import FixedGrid
from ..core.status import Status
from ..core.validation import finiteness_probe
from .compiled import clone_tensors, replays_cuda_graphs
from .device_loop import CompiledLoops, code_key, loop_in_graph, row_at
from .options import LoopOptions, Problem, start_controller
from .saving import Recorder
from .shared import _fail, _Progress, _solution, nonfinite_step_error


def applies(p: Problem, opts: LoopOptions) -> bool:
    """Whether a fixed-grid solve may run as one loop graph (see the module docstring)."""
    save = opts.saveat
    watched = opts.callback is not None or opts.on_accept is not None or opts.progress
    return (opts.compile is not None and isinstance(p.controller, FixedGrid) and not watched
            and not replays_cuda_graphs(opts.compile)
            and not (save.steps or save.dense or save.ts is not None)
            and 2 <= p.controller.steps <= opts.max_steps)


def run_grid_on_device(p: Problem, opts: LoopOptions) -> Any:
    """The solve of ``p`` with its steps in one compiled loop; ``None`` when its table is neither
    uniform nor stackable, or the loop could not be captured (nothing of it ran)."""
    assert opts.compile is not None and isinstance(p.controller, FixedGrid)
    if p.solver.grid_type is not None and not p.solver.stacks_rows:
        return None  # a sampling grid's rows differ per step, and this solver does not stack them
    state, table = p.solver.init(p.term, p.grid, p.x0)
    times = p.controller.times
    uniform = table is None or all(row is table[1] for row in table[2:])
    stacked = None if uniform else p.solver.stacked_rows(table, p.x0)
    if not uniform and stacked is None:
        return None
    key = (p.solver.display_name, type(p.solver), code_key(p.term))
    if LOOPS.known_uncapturable(opts.compile, key):
        return None
    _, state, nfe = start_controller(p, state, True)
    grid = torch.tensor(times, dtype=torch.float64, device=p.x0.device)
    p.solver.prepare(p.x0, grid.dtype)
    x, first, first_bad = p.x0, 0, torch.full((), -1, dtype=torch.int64, device=p.x0.device)
    if stacked is not None:  # every step is the same code on its row's entry: all in the loop
        rows, state = stacked
    else:  # the first step settles the solver state's structure
        t0, t1 = grid[:2].unbind(0)
        x, state, _, n = p.solver.step(p.term, t0, t1, x, state, table[0] if table is not None else None)
        first_bad = torch.where(torch.isfinite(finiteness_probe(x)), first_bad, 0)
        rows, first, nfe = (table[1] if table is not None else None), 1, nfe + n
    out = LOOPS.run(opts.compile, p.x0.device, key, p, grid, rows, stacked is not None, x, state, first_bad,
                    first, len(times) - 1 - first)
    if out is None:
        return None
    (x, _, first_bad), _, spent = out
    bad, spent_n = (int(v) for v in torch.stack([first_bad, spent]).tolist())
    status = Status.SUCCESS
    if bad >= 0 and opts.check_finite:
        status = _fail(opts, nonfinite_step_error(bad, times))
    recorder = Recorder(opts.saveat, p.solver, p.term, p.t0, p.t1, p.x0, times)
    sol = _solution(_Progress(times[-1], x, nfe + spent_n, len(times) - 1, 0, status), recorder, times)
    sol.extras["loop_steps"] = len(times) - 1 - first
    return sol


def _grid_steps(p: Problem, grid: Tensor, rows: Any, stacked: bool, x: Tensor, state: Any,  # noqa: PLR0913
                first_bad: Tensor, first: int, count: int) -> tuple[Any, Tensor, Tensor]:
    """Steps ``first .. first + count - 1`` of the grid as one ``while_loop`` (traced by dynamo):
    the carry is the step index, the state, the solver state and the first step whose result was
    NaN/inf; the row is ``rows`` itself, or its entry of the step when ``stacked``."""
    index = torch.full((), first, dtype=torch.int64, device=grid.device)

    def body(carry: tuple[Tensor, Tensor, Any, Tensor]) -> tuple[tuple[Tensor, Tensor, Any, Tensor], int]:
        i, x, state, bad = carry
        t0, t1 = grid.index_select(0, torch.stack([i, i + 1])).unbind(0)  # indexing by a tensor, no host read
        x1, state1, _, n = p.solver.step(p.term, t0, t1, x, state, row_at(rows, i) if stacked else rows)
        if stacked:  # a history of model outputs: a model may return a tensor it holds (no aliasing out)
            state1 = clone_tensors(state1)
        bad = torch.where((bad < 0) & ~torch.isfinite(finiteness_probe(x1)), i, bad)
        return (i + 1, x1, state1, bad), n

    (_, x, state, first_bad), iters, spent = loop_in_graph(
        body, lambda carry: torch.ones((), dtype=torch.bool, device=grid.device), (index, x, state, first_bad), count)
    return (x, state, first_bad), iters, spent


LOOPS = CompiledLoops(_grid_steps)
"""The compiled fixed-grid loops (and those that could not be captured)."""


__all__ = ["applies", "run_grid_on_device"]

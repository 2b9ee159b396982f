"""The one integrate loop.

Every front (``sample`` for diffusion and flow models, ``solve`` for neural ODEs, ``pde``
``simulate``) ends here. On a fixed grid the loop is plain Python over precomputed floats: the
solver's ``step`` does tensor arithmetic only, with no host synchronisation, so the loop can be
captured by ``torch.compile``. Finiteness is tracked on the device and checked once at the end,
where a NaN/inf raises with the first step and time at which it appeared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .adaptive import integrate_adaptive
from .controllers import StepSizeController
from .solution import Solution, Stats
from .solver import Solver, get
from .terms import Term, check_state


class NonFiniteError(FloatingPointError):
    """Raised when the state becomes NaN or infinite; names the step and time."""


def as_time_grid(grid: Any) -> Tensor:
    """Validate a 1-D grid of times (tensor, list, or an object with a ``t`` attribute)."""
    times = grid if isinstance(grid, (Tensor, list, tuple)) else getattr(grid, "t", grid)
    times = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    if times.ndim != 1 or times.numel() < 2:
        raise ValueError(f"grid must be a 1-D sequence of at least 2 times, got shape {tuple(times.shape)}")
    if torch.isnan(times).any():
        raise ValueError("grid contains NaN")
    d = times[1:] - times[:-1]
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("grid must be strictly monotone (all increasing or all decreasing)")
    return times


def integrate(
    term: Term,
    solver: Solver | str,
    grid: Any,
    x0: Tensor,
    *,
    t_span: tuple[float, float] | None = None,
    save: str = "final",
    check_finite: bool = True,
    progress: bool = False,
    callback: Callable[[int, float, Tensor], None] | None = None,
    max_steps: int = 100_000,
    saveat: Any = None,
    on_failure: str = "raise",
) -> Solution:
    """Advance ``x0`` with ``solver`` over ``grid``.

    Args:
        term: what is integrated (:class:`ODETerm`, :class:`SemilinearTerm`, a diffusion term).
        solver: a :class:`Solver` or a registry name.
        grid: a 1-D tensor of times (fixed steps; the direction may be decreasing), an object with
            a ``t`` attribute holding one (e.g. a diffusion ``SamplingGrid``), or a
            :class:`StepSizeController` for adaptive stepping over ``t_span``.
        x0: the initial state.
        t_span: ``(t0, t1)``, required with a controller.
        save: ``"final"`` or ``"all"`` (stack the state at every grid time into ``Solution.ys``).
        check_finite: raise :class:`NonFiniteError` naming the first non-finite step.
        progress: show a tqdm bar.
        callback: called as ``callback(i, t, x)`` after every accepted step.
        max_steps: bound on attempted steps of an adaptive solve.
        saveat: times at which an adaptive solve saves the state (dense output when the solver
            has it, else steps land on them); ``Solution.ts``/``ys`` then hold these.
        on_failure: ``"raise"`` or ``"return"`` (adaptive: return the last state with
            ``extras["status"]`` set instead of raising on max_steps / step-size underflow).
    """
    solver = get(solver)
    check_state("x0", x0)
    if save not in ("final", "all"):
        raise ValueError(f"save must be 'final' or 'all', got {save!r}")
    if isinstance(grid, StepSizeController):
        if t_span is None:
            raise ValueError("t_span=(t0, t1) is required when grid is a step-size controller")
        return _integrate_adaptive(term, solver, grid, x0, t_span, save, progress, callback,
                                   max_steps, saveat, on_failure)
    if saveat is not None:
        raise ValueError("saveat needs an adaptive solve (grid a StepSizeController); on a fixed "
                         "grid put the save times in the grid and use save='all'")
    times = as_time_grid(grid)
    return _integrate_fixed(term, solver, grid, times, x0, save, check_finite, progress, callback)


def _progress(n: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n, desc="integrate", unit="step", leave=False)


def _integrate_fixed(term, solver, grid, times, x0, save, check_finite, progress, callback):
    tl = times.tolist()
    n = len(tl) - 1
    nfe0 = term.nfe
    state = solver.init(term, grid, x0)
    x = x0
    finite = []
    saved = [x0] if save == "all" else None
    bar = _progress(n, progress)
    for i in range(n):
        x, state, _ = solver.step(term, tl[i], tl[i + 1], x, state)
        if check_finite:
            finite.append(finiteness_probe(x))
        if saved is not None:
            saved.append(x)
        if callback is not None:
            callback(i, tl[i + 1], x)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if check_finite:
        raise_if_nonfinite(torch.isfinite(torch.stack(finite)), tl)
    stats = Stats(nfe=term.nfe - nfe0, steps=n, accepted=n, rejected=0)
    ys = torch.stack(saved) if saved is not None else None
    return Solution(x=x, ts=times, ys=ys, stats=stats)


def finiteness_probe(x: Tensor) -> Tensor:
    """A device scalar that is finite iff every entry of ``x`` is (one reduction, no sync).

    The sum propagates NaN, and inf unless cancelled by -inf, which gives NaN; it is accumulated
    in at least float32 so that half-precision states cannot overflow it.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.sum(dtype=torch.float32)
    return x.sum()


def raise_if_nonfinite(flags: Tensor, times: list[float]) -> None:
    """``flags[i]`` says whether the state after step ``i`` was finite; raise at the first False."""
    if bool(flags.all()):
        return
    i = int((~flags).nonzero()[0])
    raise NonFiniteError(
        f"state became NaN/inf at step {i} (from t={times[i]:.6g} to t={times[i + 1]:.6g}); "
        "pass check_finite=False to return it anyway"
    )


def _integrate_adaptive(term, solver, controller, x0, t_span, save, progress, callback, max_steps,
                        saveat=None, on_failure="raise"):
    return integrate_adaptive(term, solver, controller, x0, t_span, save=save, saveat=saveat,
                              progress=progress, callback=callback, max_steps=max_steps,
                              on_failure=on_failure)

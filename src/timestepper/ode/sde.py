"""``sdeint``: ``dX = mu(t, X) dt + sigma(t, X) dW`` on the one integrate loop.

The Brownian motion is any callable ``bm(ta, tb) -> W(tb) - W(ta)`` (a
:class:`~timestepper.ode.brownian.VirtualBrownianTree`, or torchsde's ``BrownianInterval``), so
the same path can be queried again (adjoints, convergence studies, parity with torchsde). The term
is :class:`~timestepper.core.terms.SDETerm`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..core.solution import SaveAt, Solution, Stats
from ..core.solver import Solver
from ..core.terms import SDETerm
from ..core.validation import check_choice, check_state
from ..loop import integrate
from ..solvers.registry import available, get
from .brownian import VirtualBrownianTree

SDE_ADJOINTS = ("direct", "reversible")


def refined_grid(ts: Tensor, dt: float | None) -> tuple[list[float], list[int]]:
    """The grid through the times ``ts`` with steps of at most ``dt``, and the indices of ``ts``
    in it."""
    grid: list[float] = []
    keep: list[int] = []
    tl = ts.tolist()
    for a, b in zip(tl[:-1], tl[1:]):
        n = 1 if dt is None else max(1, int(-(-abs(b - a) // dt)))
        keep.append(len(grid))
        grid += [a + (b - a) * i / n for i in range(n)]
    keep.append(len(grid))
    grid.append(tl[-1])
    return grid, keep


def sdeint(drift: Callable, diffusion: Callable, y0: Tensor, ts: Sequence[float] | Tensor, *,  # noqa: PLR0913
           solver: str | Solver = "sde-euler", dt: float | None = None, bm: Callable | None = None,
           noise: str = "diagonal", sde_type: str | None = None, seed: int = 0,
           adjoint: str = "direct", adjoint_params: Sequence[Tensor] = ()) -> Solution:
    """Solve an SDE on the fixed grid ``ts`` (refined to steps of at most ``dt``).

    Returns a :class:`Solution` whose ``ys`` holds the state at the times of ``ts``
    (``stats.nfe`` counts drift and diffusion evaluations). ``bm`` defaults to a
    :class:`VirtualBrownianTree` with ``seed`` over ``[ts[0], ts[-1]]`` and the shape of ``y0``
    (diagonal noise; give ``bm`` for general noise). ``adjoint="reversible"`` (with
    ``solver="reversible-heun"``) backpropagates by reconstructing the path backwards (O(1)
    memory; gradients for ``y0`` and ``adjoint_params``).
    """
    check_choice(adjoint, SDE_ADJOINTS, "adjoint")
    check_state("y0", y0)
    slv = get(solver)
    if slv.family != "sde":
        raise TypeError(f"solver {slv.display_name!r} ({slv.family}) does not solve SDEs; choose "
                        f"from {', '.join(available('sde'))}")
    ts = torch.as_tensor(ts, dtype=torch.float64).reshape(-1)
    if ts.numel() < 2:
        raise ValueError("ts must hold at least two times")
    sde_type = sde_type or slv.sde_type  # type: ignore[attr-defined]
    if slv.sde_type != sde_type:  # type: ignore[attr-defined]
        raise ValueError(f"solver {slv.display_name!r} solves {slv.sde_type} SDEs, "  # type: ignore[attr-defined]
                         f"got sde_type={sde_type!r}")
    if bm is None:
        if noise != "diagonal":
            raise ValueError("give bm= for general noise (its shape is the noise dimension)")
        bm = VirtualBrownianTree(float(ts.min()), float(ts.max()), y0.shape, seed=seed,
                                 dtype=y0.dtype, device=y0.device)
    grid, keep = refined_grid(ts, dt)
    _check_brownian(bm, grid, y0, noise)
    term = SDETerm(drift, diffusion, bm, noise=noise, sde_type=sde_type)
    if adjoint == "reversible":
        from .sde_adjoint import reversible_sdeint

        ys, nfe = reversible_sdeint(term, slv, grid, keep, y0, tuple(adjoint_params))
        n = len(grid) - 1
        return Solution(x=ys[-1], ts=ts, ys=ys, stats=Stats(nfe=nfe, steps=n, accepted=n))
    sol = integrate(term, slv, torch.tensor(grid, dtype=torch.float64), y0,
                    saveat=SaveAt(ts=[grid[k] for k in keep]))
    sol.ts = ts
    return sol


def _check_brownian(bm: Callable, grid: list[float], y0: Tensor, noise: str) -> None:
    """One query of ``bm`` over the first step: its increment must be a tensor shaped like ``y0``
    (diagonal noise) or like ``y0`` with the last dim replaced by the noise dimension (general)."""
    if not callable(bm):
        raise TypeError(f"bm must be callable as bm(ta, tb), got {type(bm).__name__}")
    lo, hi = sorted(grid[:2])
    dw = bm(lo, hi)
    if not isinstance(dw, Tensor):
        raise TypeError(f"bm(ta, tb) must return a tensor (the Brownian increment), got {type(dw).__name__}")
    if noise == "diagonal" and dw.shape != y0.shape:
        raise ValueError(f"bm's increments have shape {tuple(dw.shape)} but diagonal noise needs the shape of "
                         f"y0, {tuple(y0.shape)}")
    if noise == "general" and dw.shape[:-1] != y0.shape[:-1]:
        raise ValueError(f"bm's increments have shape {tuple(dw.shape)}; general noise needs (*batch, m) with "
                         f"the batch dims of y0, {tuple(y0.shape[:-1])}")
    if dw.dtype != y0.dtype:
        raise TypeError(f"bm's increments are {dw.dtype} but y0 is {y0.dtype}: build the Brownian path with "
                        f"dtype={y0.dtype}")


__all__ = ["SDETerm", "refined_grid", "sdeint"]

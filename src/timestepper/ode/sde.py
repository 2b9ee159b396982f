"""SDE terms and ``sdeint``: ``dX = mu(t, X) dt + sigma(t, X) dW`` on the one integrate loop.

The Brownian motion is any callable ``bm(ta, tb) -> W(tb) - W(ta)`` (a
:class:`~timestepper.ode.brownian.VirtualBrownianTree`, or torchsde's ``BrownianInterval``), so
the same path can be queried again (adjoints, convergence studies, parity with torchsde).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..core.integrate import integrate
from ..core.solution import Solution
from ..core.solver import Solver, get
from ..core.terms import Term, check_state
from .brownian import VirtualBrownianTree

NOISE_TYPES = ("diagonal", "general")
SDE_TYPES = ("ito", "stratonovich")


class SDETerm(Term):
    """``dX = drift(t, X) dt + diffusion(t, X) dW``.

    Args:
        drift: ``mu(t, x)`` shaped like ``x``.
        diffusion: ``sigma(t, x)``: shaped like ``x`` for ``noise="diagonal"``, ``(..., d, m)``
            for ``noise="general"`` (then ``dW`` has shape ``(..., m)``).
        bm: ``bm(ta, tb)`` returning the Brownian increment.
        noise: ``"diagonal"`` or ``"general"``.
        sde_type: ``"ito"`` or ``"stratonovich"`` (the calculus the solver must match).
    """

    def __init__(self, drift: Callable, diffusion: Callable, bm: Callable, *,
                 noise: str = "diagonal", sde_type: str = "ito") -> None:
        super().__init__()
        if noise not in NOISE_TYPES:
            raise ValueError(f"noise must be one of {NOISE_TYPES}, got {noise!r}")
        if sde_type not in SDE_TYPES:
            raise ValueError(f"sde_type must be one of {SDE_TYPES}, got {sde_type!r}")
        self.drift_fn, self.diffusion_fn, self.bm = drift, diffusion, bm
        self.noise, self.sde_type = noise, sde_type
        self.nfe_diffusion = 0

    def drift(self, t, x: Tensor) -> Tensor:
        self.nfe += 1
        return self.drift_fn(t, x)

    def diffusion(self, t, x: Tensor) -> Tensor:
        self.nfe_diffusion += 1
        return self.diffusion_fn(t, x)

    def increment(self, t0: float, t1: float) -> Tensor:
        """``W(t1) - W(t0)`` (also for ``t1 < t0``)."""
        if t1 >= t0:
            return self.bm(t0, t1)
        return -self.bm(t1, t0)

    def noise_term(self, g: Tensor, dw: Tensor) -> Tensor:
        """``sigma dW``: elementwise (diagonal) or a matrix-vector product (general)."""
        if self.noise == "diagonal":
            return g * dw
        return (g @ dw.unsqueeze(-1)).squeeze(-1)

    def vf(self, t, x):
        return self.drift(t, x)


def sdeint(drift: Callable, diffusion: Callable, y0: Tensor, ts: Sequence[float] | Tensor, *,
           solver: str | Solver = "sde-euler", dt: float | None = None, bm: Callable | None = None,
           noise: str = "diagonal", sde_type: str | None = None, seed: int = 0,
           adjoint: str = "direct", adjoint_params: Sequence[Tensor] = ()) -> Solution:
    """Solve an SDE on the fixed grid ``ts`` (refined to steps of at most ``dt``).

    Returns a :class:`Solution` whose ``ys`` holds the state at the times of ``ts``. ``bm``
    defaults to a :class:`VirtualBrownianTree` with ``seed`` over ``[ts[0], ts[-1]]`` and the
    shape of ``y0`` (diagonal noise; give ``bm`` for general noise). ``adjoint="reversible"``
    (with ``solver="reversible-heun"``) backpropagates by reconstructing the path backwards
    (O(1) memory; gradients for ``y0`` and ``adjoint_params``).
    """
    if adjoint not in ("direct", "reversible"):
        raise ValueError(f"adjoint must be 'direct' or 'reversible', got {adjoint!r}")
    check_state("y0", y0)
    slv = get(solver)
    ts = torch.as_tensor(ts, dtype=torch.float64).reshape(-1)
    if ts.numel() < 2:
        raise ValueError("ts must hold at least two times")
    sde_type = sde_type or getattr(slv, "sde_type", "ito")
    if getattr(slv, "sde_type", sde_type) != sde_type:
        raise ValueError(f"solver {getattr(slv, 'name', slv)!r} solves {slv.sde_type} SDEs, "
                         f"got sde_type={sde_type!r}")
    lo, hi = float(ts.min()), float(ts.max())
    if bm is None:
        if noise != "diagonal":
            raise ValueError("give bm= for general noise (its shape is the noise dimension)")
        bm = VirtualBrownianTree(lo, hi, y0.shape, seed=seed, dtype=y0.dtype, device=y0.device)
    grid, keep = [], []
    tl = ts.tolist()
    for a, b in zip(tl[:-1], tl[1:]):
        n = 1 if dt is None else max(1, int(-(-abs(b - a) // dt)))
        keep.append(len(grid))
        grid += [a + (b - a) * i / n for i in range(n)]
    keep.append(len(grid))
    grid.append(tl[-1])
    term = SDETerm(drift, diffusion, bm, noise=noise, sde_type=sde_type)
    if adjoint == "reversible":
        from ..core.solution import Stats
        from .sde_adjoint import reversible_sdeint

        ys = reversible_sdeint(term, slv, grid, keep, y0, tuple(adjoint_params))
        n = len(grid) - 1
        return Solution(x=ys[-1], ts=ts, ys=ys, stats=Stats(nfe=term.nfe, steps=n, accepted=n),
                        extras={"nfe_diffusion": term.nfe_diffusion})
    sol = integrate(term, slv, torch.tensor(grid, dtype=torch.float64), y0, save="all")
    sol.ys = sol.ys[keep]
    sol.ts = ts
    sol.extras["nfe_diffusion"] = term.nfe_diffusion
    return sol

"""Explicit Runge–Kutta methods as data: a Butcher tableau and one generic stepper.

A new method is a :class:`ButcherTableau`, not a new stepping routine. Tableaux are stored as
Python floats (float64) and applied with scalar-tensor arithmetic, so a step issues no host
synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.solver import Solver, register


@dataclass(frozen=True)
class ButcherTableau:
    """``c`` (nodes), ``a`` (lower-triangular rows), ``b`` (weights), optional ``b_err``
    (weights of the embedded method; the error estimate is ``h * sum((b - b_err) k)``)."""

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        s = len(self.b)
        if len(self.c) != s or len(self.a) != s - 1:
            raise ValueError(f"tableau {self.name}: c has {len(self.c)}, b {s}, a {len(self.a)} rows")
        for i, row in enumerate(self.a):
            if len(row) != i + 1:
                raise ValueError(f"tableau {self.name}: row {i + 1} of a must have {i + 1} entries")

    @property
    def stages(self) -> int:
        return len(self.b)


class ExplicitRK(Solver):
    """Generic explicit Runge–Kutta step for ``ODETerm``-like terms (anything with ``vf``)."""

    def __init__(self, tableau: ButcherTableau) -> None:
        self.tableau = tableau
        self.order = tableau.order
        self.nfe_per_step = tableau.stages
        bt = tableau
        self._err_w = None if bt.b_err is None else tuple(b - e for b, e in zip(bt.b, bt.b_err))

    def init(self, term, grid, x0):
        return None

    def step(self, term, t0: float, t1: float, x: Tensor, state):
        bt, h = self.tableau, t1 - t0
        ks: list[Tensor] = []
        for i in range(bt.stages):
            xi = x
            if i > 0:
                for aij, kj in zip(bt.a[i - 1], ks):
                    if aij != 0.0:
                        xi = xi + (h * aij) * kj
            ks.append(term.vf(t0 + bt.c[i] * h, xi))
        x1 = x
        for bi, ki in zip(bt.b, ks):
            if bi != 0.0:
                x1 = x1 + (h * bi) * ki
        err = None
        if self._err_w is not None:
            err = x.new_zeros(())
            for wi, ki in zip(self._err_w, ks):
                if wi != 0.0:
                    err = err + (h * wi) * ki
        return x1, state, err


RK4 = ButcherTableau(
    name="rk4",
    order=4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)

# Dormand & Prince (1980), the 5(4) pair of Hairer, Nørsett & Wanner, Table II.5.2.
DOPRI5 = ButcherTableau(
    name="dopri5",
    order=5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    b_err=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
)


register("rk4", lambda: ExplicitRK(RK4))
register("dopri5", lambda: ExplicitRK(DOPRI5))

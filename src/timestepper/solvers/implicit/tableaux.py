"""Implicit Runge–Kutta methods as data: the full coefficient matrix ``A``, weights ``b`` and,
for the adaptive ones, embedded weights.

Sources:

* Kværnø (2004), "Singly diagonally implicit Runge–Kutta methods with an explicit first stage",
  BIT 44(3), 489–502: the L-stable, stiffly accurate ESDIRK pairs 3(2), 4(3) and 5(4). The
  embedded solution is the penultimate stage (so the error weights are ``b - a[s-2]``).
* Hairer & Wanner, *Solving ODEs II* (HW), IV.5: Radau IIA of orders 3 and 5 (Table 5.5, 5.6),
  Gauss–Legendre of orders 4 and 6 (Table 5.1, 5.2); IV.6: SDIRK methods (the two-stage
  L-stable method with ``gamma = 1 - 1/sqrt(2)``).
* Hosea & Shampine (1996), "Analysis and implementation of TR-BDF2", Appl. Numer. Math. 20:
  TR-BDF2 written as a three-stage ESDIRK.

Coefficients are Python floats (float64), computed once at import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImplicitTableau:
    """An implicit Runge–Kutta method ``(A, b, c = A 1)``.

    Attributes:
        name: registry name.
        order: order of the propagated solution.
        a: the full ``s x s`` matrix, row by row.
        b: weights.
        b_err: weights whose difference with ``b`` is the error estimate
            ``h sum((b - b_err) k)``, or ``None``.
        error_order: the controller's exponent denominator (``None``: fixed steps only).
        radau_error: ``(gamma0, e_1..e_s)`` of Radau IIA's embedded estimate (HW IV.8,
            eq. 8.19–8.20): ``err = (I - h gamma0 J)^-1 (gamma0 h f0 + sum e_i Z_i)`` with
            ``Z_i = Y_i - x0``; ``None`` for the other methods.
    """

    name: str
    order: int
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None = None
    error_order: int | None = None
    radau_error: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        s = len(self.b)
        if len(self.a) != s or any(len(r) != s for r in self.a):
            raise ValueError(f"tableau {self.name}: a must be {s} x {s}")
        if self.b_err is not None and len(self.b_err) != s:
            raise ValueError(f"tableau {self.name}: b_err must have {s} entries")

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def c(self) -> tuple[float, ...]:
        return tuple(float(sum(r)) for r in self.a)

    @property
    def diagonally_implicit(self) -> bool:
        """Lower triangular ``A``: the stages are solved one after the other."""
        return all(self.a[i][j] == 0.0 for i in range(self.stages) for j in range(i + 1, self.stages))

    @property
    def explicit_first_stage(self) -> bool:
        return all(v == 0.0 for v in self.a[0])

    @property
    def stiffly_accurate(self) -> bool:
        """``b`` is the last row of ``A`` (and ``c_s = 1``): ``x1`` is the last stage value and
        the last stage derivative is ``f(t1, x1)``, reused as the next step's first stage."""
        return tuple(self.b) == tuple(self.a[-1])


def _lower(rows: list[list[float]], diag: list[float]) -> tuple[tuple[float, ...], ...]:
    """The full matrix from strictly-lower rows (row ``i`` has ``i`` entries) and the diagonal."""
    s = len(diag)
    out = np.zeros((s, s))
    for i in range(s):
        out[i, :i] = rows[i]
        out[i, i] = diag[i]
    return tuple(tuple(float(v) for v in r) for r in out)


def _esdirk(name: str, order: int, rows: list[list[float]], gamma: float) -> ImplicitTableau:
    """A stiffly accurate ESDIRK pair whose embedded solution is the penultimate stage."""
    a = _lower(rows, [0.0] + [gamma] * (len(rows) - 1))
    b = a[-1]
    return ImplicitTableau(name, order, a, b, b_err=a[-2], error_order=order)


# -- Kværnø (2004) ---------------------------------------------------------------------------

def _kvaerno3() -> ImplicitTableau:
    g = 0.4358665215  # the root of the L-stability cubic 6 g^3 - 18 g^2 + 9 g - 1 = 0
    rows = [[], [g],
            [(-4 * g * g + 6 * g - 1) / (4 * g), (1 - 2 * g) / (4 * g)],
            [(6 * g - 1) / (12 * g), -1 / ((24 * g - 12) * g), (-6 * g * g + 6 * g - 1) / (6 * g - 3)]]
    return _esdirk("kvaerno3", 3, rows, g)


def _kvaerno4() -> ImplicitTableau:
    g = 0.5728160625

    def p(*cs: float) -> float:
        return float(np.polyval(cs, g))

    q = p(12, -6, 1)
    rows = [[], [g],
            [p(144, -180, 81, -15, 1) * g / q**2, p(-36, 39, -15, 2) * g / q**2],
            [p(-144, 396, -330, 117, -18, 1) / (12 * g * g * p(12, -9, 2)),
             p(72, -126, 69, -15, 1) / (12 * g * g * p(3, -1)),
             p(-6, 6, -1) * q**2 / (12 * g * g * p(12, -9, 2) * p(3, -1))],
            [p(288, -312, 120, -18, 1) / (48 * g * g * p(12, -9, 2)),
             p(24, -12, 1) / (48 * g * g * p(3, -1)),
             -(q**3) / (48 * g * g * p(3, -1) * p(12, -9, 2) * p(6, -6, 1)),
             p(-24, 36, -12, 1) / p(24, -24, 4)]]
    return _esdirk("kvaerno4", 4, rows, g)


def _kvaerno5() -> ImplicitTableau:
    g = 0.26
    rows = [[], [g],
            [0.13, 0.84033320996790809],
            [0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
            [0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
            [0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676],
            [0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
             0.06962479448202728]]
    return _esdirk("kvaerno5", 5, rows, g)


KVAERNO3, KVAERNO4, KVAERNO5 = _kvaerno3(), _kvaerno4(), _kvaerno5()

# -- Radau IIA (HW IV.5) ---------------------------------------------------------------------

_S6 = math.sqrt(6.0)
RADAU_IIA5 = ImplicitTableau(
    "radau-iia5", 5,
    a=(((88 - 7 * _S6) / 360, (296 - 169 * _S6) / 1800, (-2 + 3 * _S6) / 225),
       ((296 + 169 * _S6) / 1800, (88 + 7 * _S6) / 360, (-2 - 3 * _S6) / 225),
       ((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9)),
    b=((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9),
    error_order=4,  # the embedded estimate of HW (8.19)-(8.20) is O(h^4)
    # gamma0 = 1 / (the real eigenvalue of A^-1) = 1 / (3 + 3^(2/3) - 3^(1/3)); e = gamma0 (-13 - 7 sqrt 6,
    # -13 + 7 sqrt 6, -1) / 3.
    radau_error=(_G0 := 1 / (3 + 3 ** (2 / 3) - 3 ** (1 / 3)), _G0 * (-13 - 7 * _S6) / 3,
                 _G0 * (-13 + 7 * _S6) / 3, -_G0 / 3),
)
RADAU_IIA3 = ImplicitTableau("radau-iia3", 3, a=((5 / 12, -1 / 12), (3 / 4, 1 / 4)), b=(3 / 4, 1 / 4))

# -- Gauss–Legendre (HW IV.5) ----------------------------------------------------------------

_S3, _S15 = math.sqrt(3.0), math.sqrt(15.0)
GL4 = ImplicitTableau("gl4", 4, a=((1 / 4, 1 / 4 - _S3 / 6), (1 / 4 + _S3 / 6, 1 / 4)), b=(0.5, 0.5))
GL6 = ImplicitTableau(
    "gl6", 6,
    a=((5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30),
       (5 / 36 + _S15 / 24, 2 / 9, 5 / 36 - _S15 / 24),
       (5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, 5 / 36)),
    b=(5 / 18, 4 / 9, 5 / 18),
)

# -- low-order (fixed-step) methods ------------------------------------------------------------

IMPLICIT_EULER = ImplicitTableau("implicit-euler", 1, a=((1.0,),), b=(1.0,))
IMPLICIT_MIDPOINT = ImplicitTableau("implicit-midpoint", 2, a=((0.5,),), b=(1.0,))
TRAPEZOID = ImplicitTableau("trapezoid", 2, a=((0.0, 0.0), (0.5, 0.5)), b=(0.5, 0.5))
_G2 = 1 - 1 / math.sqrt(2.0)
SDIRK2 = ImplicitTableau("sdirk2", 2, a=((_G2, 0.0), (1 - _G2, _G2)), b=(1 - _G2, _G2))
_D, _W = 1 - math.sqrt(2.0) / 2, math.sqrt(2.0) / 4
TRBDF2 = ImplicitTableau("trbdf2", 2, a=((0.0, 0.0, 0.0), (_D, _D, 0.0), (_W, _W, _D)), b=(_W, _W, _D))

__all__ = ["GL4", "GL6", "IMPLICIT_EULER", "IMPLICIT_MIDPOINT", "KVAERNO3", "KVAERNO4", "KVAERNO5",
           "RADAU_IIA3", "RADAU_IIA5", "SDIRK2", "TRAPEZOID", "TRBDF2", "ImplicitTableau"]

"""The DETEST non-stiff problem set (Hull, Enright, Fellen & Sedgwick 1972, "Comparing numerical
methods for ordinary differential equations", SIAM J. Numer. Anal. 9(4)), classes A–E, on
``[0, 20]``.

Each :class:`Problem` has a float64 vector field ``f(t, y)``, ``y0`` and a reference value at
``t1``: closed form where one exists (A1–A4, B2, C1–C4 and D1–D5 through the matrix exponential or
Kepler's equation, E1 through the Bessel function ``J_1/2``), else a tight-tolerance solve
(``rtol = atol = 1e-13`` with ``dopri8``, stored; the tests check it against SciPy's DOP853).

Taken from the paper (a widely copied PyTorch transcription has two typos): C5's initial
position of the fourth body is ``y = 1.65699966404`` and E4's constant is ``0.032``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.controllers import max_scaled_difference

T1 = 20.0
_F64 = torch.float64


@dataclass(frozen=True)
class Problem:
    name: str
    f: Callable[[float, Tensor], Tensor]
    y0: tuple[float, ...]
    exact: Callable[[float], Tensor] | None = None
    t1: float = T1

    def initial(self) -> Tensor:
        return torch.tensor(self.y0, dtype=_F64)


def _linear(matrix: Tensor):
    return lambda t, y: matrix @ y


def _expm_exact(matrix: Tensor, y0):
    return lambda t: torch.linalg.matrix_exp(matrix * t) @ torch.tensor(y0, dtype=_F64)


def _bidiag(diag, sub) -> Tensor:
    n = len(diag)
    d = torch.diag(torch.tensor(diag, dtype=_F64))
    return d + torch.diag(torch.tensor(sub, dtype=_F64), -1)[:n, :n]


def _stack(*xs) -> Tensor:
    return torch.stack(list(xs))


# ---- class A: single equations ----
def _a5(t, y):
    return (y - t) / (y + t)


_A = [
    Problem("A1", lambda t, y: -y, (1.0,), lambda t: torch.tensor([math.exp(-t)], dtype=_F64)),
    Problem("A2", lambda t, y: -0.5 * y**3, (1.0,),
            lambda t: torch.tensor([1 / math.sqrt(t + 1)], dtype=_F64)),
    Problem("A3", lambda t, y: y * math.cos(t) if not isinstance(t, Tensor) else y * torch.cos(t),
            (1.0,), lambda t: torch.tensor([math.exp(math.sin(t))], dtype=_F64)),
    Problem("A4", lambda t, y: 0.25 * y * (1 - y / 20), (1.0,),
            lambda t: torch.tensor([20 / (1 + 19 * math.exp(-t / 4))], dtype=_F64)),
    Problem("A5", _a5, (4.0,)),
]

# ---- class B: small systems ----
_B2 = torch.tensor([[-1.0, 1.0, 0.0], [1.0, -2.0, 1.0], [0.0, 1.0, -1.0]], dtype=_F64)


def _b4(t, y):
    r = torch.sqrt(y[0] ** 2 + y[1] ** 2)
    return _stack(-y[1] - y[0] * y[2] / r, y[0] - y[1] * y[2] / r, y[0] / r)


_B = [
    Problem("B1", lambda t, y: _stack(2 * (y[0] - y[0] * y[1]), -(y[1] - y[0] * y[1])), (1.0, 3.0)),
    Problem("B2", _linear(_B2), (2.0, 0.0, 1.0), _expm_exact(_B2, (2.0, 0.0, 1.0))),
    Problem("B3", lambda t, y: _stack(-y[0], y[0] - y[1] ** 2, y[1] ** 2), (1.0, 0.0, 0.0)),
    Problem("B4", _b4, (3.0, 0.0, 0.0)),
    Problem("B5", lambda t, y: _stack(y[1] * y[2], -y[0] * y[2], -0.51 * y[0] * y[1]),
            (0.0, 1.0, 1.0)),
]

# ---- class C: moderate systems ----
_C1 = _bidiag([-1.0] * 9 + [0.0], [1.0] * 9)
_C2 = _bidiag([-float(i) for i in range(1, 10)] + [0.0], [float(i) for i in range(1, 10)])


def _tridiag(n: int) -> Tensor:
    return (torch.diag(torch.full((n,), -2.0, dtype=_F64))
            + torch.diag(torch.ones(n - 1, dtype=_F64), 1)
            + torch.diag(torch.ones(n - 1, dtype=_F64), -1))


_C3, _C4 = _tridiag(10), _tridiag(51)
_E10 = (1.0,) + (0.0,) * 9
_E51 = (1.0,) + (0.0,) * 50

# C5: the five outer planets (Jupiter, Saturn, Uranus, Neptune, Pluto) around the sun.
_K2 = 2.95912208286e-4
_M0 = 1.00000597682
_MASSES = torch.tensor([0.000954786104043, 0.000285583733151, 0.0000437273164546,
                        0.0000517759138449, 0.00000277777777778], dtype=_F64)
_C5_POS = (3.42947415189, 3.35386959711, 1.35494901715, 6.64145542550, 5.97156957878,
           2.18231499728, 11.2630437207, 14.6952576794, 6.27960525067, -30.1552268759,
           1.65699966404, 1.43785752721, -21.1238353380, 28.4465098142, 15.3882659679)
_C5_VEL = (-0.557160570446, 0.505696783289, 0.230578543901, -0.415570776342, 0.365682722812,
           0.169143213293, -0.325325669158, 0.189706021964, 0.0877265322780, -0.0240476254170,
           -0.287659532608, -0.117219543175, -0.176860753121, -0.216393453025, -0.0148647893090)


def _c5(t, y):
    q = y[:15].reshape(5, 3)  # body j, coordinate i
    v = y[15:]
    r3 = (q * q).sum(1) ** 1.5  # (5,)
    diff = q[None, :, :] - q[:, None, :]  # [j, k] = q_k - q_j
    d3 = (diff * diff).sum(-1) ** 1.5
    d3 = d3 + torch.eye(5, dtype=y.dtype)  # the k = j terms are masked below
    mask = 1.0 - torch.eye(5, dtype=y.dtype)
    pair = (_MASSES[None, :, None] * mask[:, :, None]
            * (diff / d3[:, :, None] - q[None, :, :] / r3[None, :, None])).sum(1)
    acc = _K2 * (-(_M0 + _MASSES)[:, None] * q / r3[:, None] + pair)
    return torch.cat([v, acc.reshape(-1)])


_C = [
    Problem("C1", _linear(_C1), _E10, _expm_exact(_C1, _E10)),
    Problem("C2", _linear(_C2), _E10, _expm_exact(_C2, _E10)),
    Problem("C3", _linear(_C3), _E10, _expm_exact(_C3, _E10)),
    Problem("C4", _linear(_C4), _E51, _expm_exact(_C4, _E51)),
    Problem("C5", _c5, _C5_POS + _C5_VEL),
]


# ---- class D: orbit equations with eccentricity e ----
def _orbit(t, y):
    r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
    return _stack(y[2], y[3], -y[0] / r3, -y[1] / r3)


def _kepler(e: float):
    """Closed form: the eccentric anomaly u solves Kepler's equation u - e sin u = t."""

    def exact(t: float) -> Tensor:
        u = t
        for _ in range(100):
            u = u - (u - e * math.sin(u) - t) / (1 - e * math.cos(u))
        s = math.sqrt(1 - e * e)
        du = 1 / (1 - e * math.cos(u))
        return torch.tensor([math.cos(u) - e, s * math.sin(u), -math.sin(u) * du,
                             s * math.cos(u) * du], dtype=_F64)

    return exact


_D = [
    Problem(f"D{i + 1}", _orbit, (1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e))), _kepler(e))
    for i, e in enumerate((0.1, 0.3, 0.5, 0.7, 0.9))
]


# ---- class E: second-order equations as systems ----
def _tt(t):
    return t if isinstance(t, Tensor) else torch.tensor(t, dtype=_F64)


def _e1_exact(t: float) -> Tensor:
    x = t + 1  # y = J_1/2(x) = sqrt(2 / (pi x)) sin x
    c = math.sqrt(2 / math.pi)
    return torch.tensor([c * math.sin(x) / math.sqrt(x),
                         c * (math.cos(x) / math.sqrt(x) - 0.5 * math.sin(x) / x**1.5)], dtype=_F64)


_E = [
    Problem("E1", lambda t, y: _stack(y[1], -(y[1] / (t + 1) + (1 - 0.25 / (t + 1) ** 2) * y[0])),
            (0.6713967071418030, 0.09540051444747446), _e1_exact),
    Problem("E2", lambda t, y: _stack(y[1], (1 - y[0] ** 2) * y[1] - y[0]), (2.0, 0.0)),
    Problem("E3", lambda t, y: _stack(y[1], y[0] ** 3 / 6 - y[0] + 2 * torch.sin(2.78535 * _tt(t))),
            (0.0, 0.0)),
    Problem("E4", lambda t, y: _stack(y[1], 0.032 - 0.4 * y[1] ** 2), (30.0, 0.0)),
    Problem("E5", lambda t, y: _stack(y[1], torch.sqrt(1 + y[1] ** 2) / (25 - _tt(t))), (0.0, 0.0)),
]

PROBLEMS: dict[str, Problem] = {p.name: p for p in _A + _B + _C + _D + _E}

# Generated by reference(name, recompute=True); agrees with SciPy DOP853 (rtol=atol=1e-13) to 1e-11.
_NUMERIC_REFERENCE = {
    'A5': (-0.7887826688956852,),
    'B1': (0.6761876008586154, 0.18608160996402118),
    'B3': (2.061154909835488e-09, 0.05257228022048456, 0.9474277177183611),
    'B4': (0.9826950927970478, 2.198447081688684, 0.9129452507284253),
    'B5': (-0.939657079872871, -0.342117775400161, 0.7414126596200143),
        'C5': (
        -7.714056085315556, 13.466694030988759, 5.96605093168707, -1.6702265578712532,
        13.284741936623329, 5.564991474739045, 4.756458772856322, 18.48925303257069,
        8.034082111752996, -30.636115568814468, -4.0961916585157105, -0.9065352373192851,
        -24.661027094862643, 24.1186109323097, 15.090953461451779, -0.5571726100708119,
        0.5056167032066707, 0.2305444805081728, -0.4155878311752611, 0.3656391985774391,
        0.1691259572738827, -0.32533182744373507, 0.18969343619252124, 0.08772110527589548,
        -0.024041276908884617, -0.2876593710398131, -0.11721963825489126, -0.1768583050513338,
        -0.21639636367846007, -0.014866464918560602,
    ),
    'E2': (2.008149762174938, -0.04250887527322895),
    'E3': (-0.10041788586416993, 0.24114001320959674),
    'E4': (33.95091444646551, 0.27678226596730615),
    'E5': (14.117973905425957, 2.4000000000000385),
}



def reference(name: str, recompute: bool = False) -> Tensor:
    """The float64 reference solution of problem ``name`` at ``t1``: closed form, or a ``dopri8``
    solve at ``rtol = atol = 1e-13`` (stored above; ``recompute=True`` solves again)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown DETEST problem {name!r}; available: {', '.join(PROBLEMS)}")
    p = PROBLEMS[name]
    if p.exact is not None:
        return p.exact(p.t1)
    if not recompute:
        return torch.tensor(_NUMERIC_REFERENCE[name], dtype=_F64)
    from ..ode import solve

    return solve(p.f, p.initial(), 0.0, p.t1, solver="dopri8", rtol=1e-13, atol=1e-13).x


def scaled_error(y: Tensor, ref: Tensor, rtol: float, atol: float) -> float:
    """``max_i |y_i - ref_i| / (atol + rtol |ref_i|)``: <= 1 means within the tolerance."""
    return max_scaled_difference(y, ref, rtol, atol)

"""The explicit Runge–Kutta tableaux, registered by name.

Each method is data: nodes, coefficients, weights, embedded weights and interpolant. Sources:
Hairer, Nørsett & Wanner, *Solving ODEs I* (HNW); Bogacki & Shampine (1989); Dormand & Prince
(1980); Tsitouras (2011); Hairer's DOP853 (Prince & Dormand 1981, HNW II.10).
"""

from __future__ import annotations

import numpy as np

from ..core.solver import register
from .rk import ButcherTableau, ExplicitRK


def hermite_interp(b, d=None) -> tuple[tuple[float, ...], ...]:
    """Interpolant weights of an FSAL method from Hermite data plus an optional correction.

    ``x(theta) = x0 + theta * (D + (1 - theta) * (h k1 - D + theta * (2 D - h k1 - h k_s
    + (1 - theta) * h sum_i d_i k_i)))`` with ``D = x1 - x0 = h sum_i b_i k_i`` (HNW II.6, the
    form of DOPRI5's continuous extension by Shampine 1986). ``d=None`` gives the cubic Hermite
    interpolant of Bogacki & Shampine. Returns per-stage coefficients of ``theta^1..theta^4``.
    """
    s = len(b)
    b = np.asarray(b, dtype=np.float64)
    e1 = np.zeros(s)
    e1[0] = 1.0
    es = np.zeros(s)
    es[-1] = 1.0
    d = np.zeros(s) if d is None else np.asarray(d, dtype=np.float64)
    P = np.polynomial.polynomial
    th, om = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    rows = []
    for i in range(s):
        inner = P.polyadd(2 * b[i] - e1[i] - es[i], P.polymul(om, [d[i]]))
        inner = P.polyadd(e1[i] - b[i], P.polymul(th, inner))
        inner = P.polyadd(b[i], P.polymul(om, inner))
        full = P.polymul(th, inner)
        coeffs = np.zeros(5)
        coeffs[: len(full)] = full
        rows.append(tuple(float(v) for v in coeffs[1:]))
    return tuple(rows)


EULER = ButcherTableau(name="rk-euler", order=1, c=(0.0,), a=(), b=(1.0,))

MIDPOINT = ButcherTableau(name="midpoint", order=2, c=(0.0, 0.5), a=((0.5,),), b=(0.0, 1.0))

# Heun's method (explicit trapezoidal rule) with Euler embedded: the Heun–Euler 2(1) pair.
RK_HEUN = ButcherTableau(
    name="rk-heun", order=2, c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), b_err=(1.0, 0.0),
    error_order=2,
)

# The classical fourth-order method (Kutta 1901; HNW Table II.1.2, left).
RK4 = ButcherTableau(
    name="rk4",
    order=4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)

# Bogacki & Shampine (1989), the 3(2) pair with FSAL and its cubic Hermite interpolant.
_BOSH3_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
BOSH3 = ButcherTableau(
    name="bosh3",
    order=3,
    c=(0.0, 0.5, 0.75, 1.0),
    a=((0.5,), (0.0, 0.75), _BOSH3_B[:3]),
    b=_BOSH3_B,
    b_err=(7 / 24, 1 / 4, 1 / 3, 1 / 8),
    error_order=3,
    interp=hermite_interp(_BOSH3_B),
)

# Dormand & Prince (1980), the 5(4) pair (HNW Table II.5.2) with Shampine's dense output
# (HNW II.6, eq. 6.12 and the coefficients of DOPRI5's CONTD5).
_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI5_D = (
    -12715105075 / 11282082432, 0.0, 87487479700 / 32700410799, -10690763975 / 1880347072,
    701980252875 / 199316789632, -1453857185 / 822651844, 69997945 / 29380423,
)
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
        _DOPRI5_B[:6],
    ),
    b=_DOPRI5_B,
    b_err=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
    error_order=5,
    interp=hermite_interp(_DOPRI5_B, _DOPRI5_D),
)

# Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first column
# simplifying assumption", Table 1, with its free interpolant b_i(theta) (eq. 8) expanded in
# powers of theta.
_TSIT5_B = (
    0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
    2.324710524099774, 0.0,
)
_TSIT5_BTILDE = (
    -0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
    0.5823571654525552, -0.45808210592918697, 1 / 66,
)
TSIT5 = ButcherTableau(
    name="tsit5",
    order=5,
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
         -0.028269050394068383),
        _TSIT5_B[:6],
    ),
    b=_TSIT5_B,
    b_err=tuple(b + e for b, e in zip(_TSIT5_B, _TSIT5_BTILDE)),
    error_order=5,
    interp=(
        (1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216),
        (0.0, 0.1317, -0.2234, 0.1017),
        (0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253),
        (0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902),
        (0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928),
        (0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661),
        (0.0, 1.5, -4.0, 2.5),
    ),
)

# Hairer's DOP853: Dormand–Prince 8(5,3) (HNW II.10, Table of DOP853). 12 stages plus the FSAL
# stage; the error combines the 5th- and 3rd-order estimates. Its 7th-order dense output needs
# three extra stages and is not implemented: adaptive saving steps onto the save times.
_DOPRI8_A = (
    (0.05260015195876773,),
    (0.0197250569845379, 0.0591751709536137),
    (0.02958758547680685, 0.0, 0.08876275643042054),
    (0.2413651341592667, 0.0, -0.8845494793282861, 0.924834003261792),
    (0.037037037037037035, 0.0, 0.0, 0.17082860872947386, 0.12546768756682242),
    (0.037109375, 0.0, 0.0, 0.17025221101954405, 0.06021653898045596, -0.017578125),
    (0.03709200011850479, 0.0, 0.0, 0.17038392571223998, 0.10726203044637328,
     -0.015319437748624402, 0.008273789163814023),
    (0.6241109587160757, 0.0, 0.0, -3.3608926294469414, -0.868219346841726, 27.59209969944671,
     20.154067550477894, -43.48988418106996),
    (0.47766253643826434, 0.0, 0.0, -2.4881146199716677, -0.590290826836843, 21.230051448181193,
     15.279233632882423, -33.28821096898486, -0.020331201708508627),
    (-0.9371424300859873, 0.0, 0.0, 5.186372428844064, 1.0914373489967295, -8.149787010746927,
     -18.52006565999696, 22.739487099350505, 2.4936055526796523, -3.0467644718982196),
    (2.273310147516538, 0.0, 0.0, -10.53449546673725, -2.0008720582248625, -17.9589318631188,
     27.94888452941996, -2.8589982771350235, -8.87285693353063, 12.360567175794303,
     0.6433927460157636),
    (0.054293734116568765, 0.0, 0.0, 0.0, 0.0, 4.450312892752409, 1.8915178993145003,
     -5.801203960010585, 0.3111643669578199, -0.1521609496625161, 0.20136540080403034,
     0.04471061572777259),
)
_DOPRI8_B = _DOPRI8_A[-1] + (0.0,)
_DOPRI8_E5 = (
    0.01312004499419488, 0.0, 0.0, 0.0, 0.0, -1.2251564463762044, -0.4957589496572502,
    1.6643771824549864, -0.35032884874997366, 0.3341791187130175, 0.08192320648511571,
    -0.022355307863886294, 0.0,
)
_DOPRI8_E3 = (
    -0.18980075407240762, 0.0, 0.0, 0.0, 0.0, 4.450312892752409, 1.8915178993145003,
    -5.801203960010585, -0.4226823213237919, -0.1521609496625161, 0.20136540080403034,
    0.02265179219836082, 0.0,
)
DOPRI8 = ButcherTableau(
    name="dopri8",
    order=8,
    c=(0.0, 0.05260015195876773, 0.0789002279381516, 0.1183503419072274, 0.2816496580927726,
       1 / 3, 0.25, 4 / 13, 127 / 195, 0.6, 6 / 7, 1.0, 1.0),
    a=_DOPRI8_A,
    b=_DOPRI8_B,
    b_err=tuple(b - e for b, e in zip(_DOPRI8_B, _DOPRI8_E5)),
    b_err2=tuple(b - e for b, e in zip(_DOPRI8_B, _DOPRI8_E3)),
    error_order=8,
)

TABLEAUX = {t.name: t for t in (EULER, MIDPOINT, RK_HEUN, RK4, BOSH3, DOPRI5, TSIT5, DOPRI8)}

# "euler" and "heun" are the diffusion (EDM) solvers; the RK ones are "rk-euler" and "rk-heun".
for _name, _tab in TABLEAUX.items():
    register(_name, lambda _tab=_tab: ExplicitRK(_tab))

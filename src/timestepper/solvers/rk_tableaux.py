"""The explicit Runge–Kutta tableaux, registered by name.

Each method is data: nodes, coefficients, weights, embedded weights and interpolant. Sources:
Hairer, Nørsett & Wanner, *Solving ODEs I* (HNW); Bogacki & Shampine (1989); Dormand & Prince
(1980); Tsitouras (2011); Hairer's DOP853 (Prince & Dormand 1981, HNW II.10).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .registry import register
from .rk import ButcherTableau, ExplicitRK


def alternating_interp(rows) -> tuple[tuple[float, ...], ...]:
    """Interpolant weights from the nested form used by DOPRI5 and DOP853 (HNW II.6):

        x(theta) = x0 + theta (F0 + (1 - theta) (F1 + theta (F2 + (1 - theta) (F3 + ...))))

    where each ``F_r = h sum_i rows[r][i] k_i``. Returns, per stage, the coefficients of
    ``theta^1 .. theta^len(rows)``.
    """
    P = np.polynomial.polynomial
    rows = np.asarray(rows, dtype=np.float64)
    n_f, s = rows.shape
    out = []
    for i in range(s):
        acc: np.ndarray = np.zeros(1)
        for r in reversed(range(n_f)):
            factor = [0.0, 1.0] if r % 2 == 0 else [1.0, -1.0]  # theta or (1 - theta)
            acc = P.polymul(P.polyadd(acc, [rows[r, i]]), factor)
        coeffs = np.zeros(n_f + 1)
        coeffs[: len(acc)] = acc
        out.append(tuple(float(v) for v in coeffs[1:]))
    return tuple(out)


def hermite_rows(b, n_stages: int | None = None, last: int | None = None):
    """``F0 = D``, ``F1 = h k1 - D``, ``F2 = 2 D - h k1 - h k_last`` (``D = x1 - x0``): the cubic
    Hermite part shared by the FSAL interpolants."""
    s = n_stages or len(b)
    last = len(b) - 1 if last is None else last
    bb = np.zeros(s)
    bb[: len(b)] = b
    e1, el = np.zeros(s), np.zeros(s)
    e1[0], el[last] = 1.0, 1.0
    return [bb, e1 - bb, 2 * bb - e1 - el]


def quadratic_extension(b) -> tuple[tuple[float, ...], ...]:
    """The second-order continuous extension ``P_1 = theta + (b_1 - 1) theta^2``,
    ``P_i = b_i theta^2`` of a method with ``sum b = 1`` and ``sum b c = 1/2``: it meets both
    order conditions at every ``theta`` and equals the method at ``theta = 1`` (HNW I, II.6)."""
    return tuple((1.0, b[0] - 1.0) if i == 0 else (0.0, float(w)) for i, w in enumerate(b))


EULER = ButcherTableau(name="rk-euler", order=1, c=(0.0,), a=(), b=(1.0,))

MIDPOINT = ButcherTableau(name="midpoint", order=2, c=(0.0, 0.5), a=((0.5,),), b=(0.0, 1.0))

# Heun's method (explicit trapezoidal rule) with Euler embedded: the Heun–Euler 2(1) pair.
RK_HEUN = ButcherTableau(
    name="rk-heun", order=2, c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), b_err=(1.0, 0.0),
    error_order=2,
)

# Heun's method whose stage at t1 (the Euler predictor) is the next step's first stage:
# torchdiffeq's "adaptive_heun" (one evaluation per step after the first). The error estimate is
# the Heun–Euler difference h (k1 - k2) / 2.
_HEUN_B = (0.5, 0.5)
ADAPTIVE_HEUN = ButcherTableau(
    name="adaptive-heun", order=2, c=(0.0, 1.0), a=((1.0,),), b=_HEUN_B, b_err=(0.0, 1.0),
    error_order=2, interp=quadratic_extension(_HEUN_B), reuse_last_stage=True,
)

# Fehlberg's RKF1(2) (Fehlberg 1969, NASA TR R-315), propagating the second-order solution with
# local extrapolation; the third stage is f at the first-order solution and becomes the next
# step's first stage, as in torchdiffeq's "fehlberg2".
_FEHLBERG2_B = (1 / 512, 255 / 256, 1 / 512)
FEHLBERG2 = ButcherTableau(
    name="fehlberg2", order=2, c=(0.0, 0.5, 1.0), a=((0.5,), (1 / 256, 255 / 256)),
    b=_FEHLBERG2_B, b_err=(1 / 256, 255 / 256, 0.0), error_order=2,
    interp=quadratic_extension(_FEHLBERG2_B), reuse_last_stage=True,
)

# Heun's third-order method (Heun 1900; HNW Table II.1.1): nodes 0, 1/3, 2/3.
HEUN3 = ButcherTableau(
    name="heun3", order=3, c=(0.0, 1 / 3, 2 / 3), a=((1 / 3,), (0.0, 2 / 3)), b=(0.25, 0.0, 0.75),
)

# Kutta's 3/8 rule (Kutta 1901; HNW Table II.1.2, right), torchdiffeq's fixed-step "rk4".
RK4_38 = ButcherTableau(
    name="rk4-38", order=4, c=(0.0, 1 / 3, 2 / 3, 1.0),
    a=((1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)), b=(0.125, 0.375, 0.375, 0.125),
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
    interp=alternating_interp(hermite_rows(_BOSH3_B)),
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
    interp=alternating_interp(hermite_rows(_DOPRI5_B) + [np.array(_DOPRI5_D)]),
)

# The same Dormand–Prince 5 with the other embedded 4th-order solution Shampine (1986, "Some
# practical Runge-Kutta formulas", Math. Comp. 46) gives, which torchdiffeq's "dopri5" uses: its
# error estimate is about 2/3 of DOPRI5's, so it takes larger steps at the same tolerance (and
# makes a larger error). The ``odeint`` shim uses it to reproduce torchdiffeq's steps.
DOPRI5_SHAMPINE = replace(
    DOPRI5, name="dopri5-shampine",
    b_err=(1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60),
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
# stage; the error combines the 5th- and 3rd-order estimates. Its 7th-order dense output (CONTD8)
# needs three extra stages, evaluated only in steps that contain a save time.
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
_DOPRI8_EXTRA_C = (0.1, 0.2, 7 / 9)
_DOPRI8_EXTRA_A = (
    (0.056167502283047954, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25350021021662483, -0.2462390374708025,
     -0.12419142326381637, 0.15329179827876568, 0.00820105229563469, 0.007567897660545699,
     -0.008298),
    (0.03183464816350214, 0.0, 0.0, 0.0, 0.0, 0.028300909672366776, 0.053541988307438566,
     -0.05492374857139099, 0.0, 0.0, -0.00010834732869724932, 0.0003825710908356584,
     -0.00034046500868740456, 0.1413124436746325),
    (-0.42889630158379194, 0.0, 0.0, 0.0, 0.0, -4.697621415361164, 7.683421196062599,
     4.06898981839711, 0.3567271874552811, 0.0, 0.0, 0.0, -0.0013990241651590145,
     2.9475147891527724, -9.15095847217987),
)
_DOPRI8_D = (
    (-8.428938276109013, 0.0, 0.0, 0.0, 0.0, 0.5667149535193777, -3.0689499459498917,
     2.38466765651207, 2.117034582445028, -0.871391583777973, 2.2404374302607883,
     0.6315787787694688, -0.08899033645133331, 18.148505520854727, -9.194632392478356,
     -4.436036387594894),
    (10.427508642579134, 0.0, 0.0, 0.0, 0.0, 242.28349177525817, 165.20045171727028,
     -374.5467547226902, -22.113666853125306, 7.733432668472264, -30.674084731089398,
     -9.332130526430229, 15.697238121770845, -31.139403219565178, -9.35292435884448,
     35.81684148639408),
    (19.985053242002433, 0.0, 0.0, 0.0, 0.0, -387.0373087493518, -189.17813819516758,
     527.8081592054236, -11.57390253995963, 6.8812326946963, -1.0006050966910838,
     0.7777137798053443, -2.778205752353508, -60.19669523126412, 84.32040550667716,
     11.99229113618279),
    (-25.69393346270375, 0.0, 0.0, 0.0, 0.0, -154.18974869023643, -231.5293791760455,
     357.6391179106141, 93.40532418362432, -37.45832313645163, 104.0996495089623,
     29.8402934266605, -43.53345659001114, 96.32455395918828, -39.17726167561544,
     -149.72683625798564),
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
    interp=alternating_interp(hermite_rows(_DOPRI8_B, n_stages=16, last=12)
                              + [np.array(r) for r in _DOPRI8_D]),
    extra_c=_DOPRI8_EXTRA_C,
    extra_a=_DOPRI8_EXTRA_A,
)

TABLEAUX = {t.name: t for t in (EULER, MIDPOINT, RK_HEUN, ADAPTIVE_HEUN, FEHLBERG2, HEUN3, RK4,
                                 RK4_38, BOSH3, DOPRI5, DOPRI5_SHAMPINE, TSIT5, DOPRI8)}

# Each method is ExplicitRK with its tableau fixed. ("euler" and "heun" are the diffusion (EDM)
# samplers; the Runge–Kutta ones are "rk-euler" and "rk-heun".)
_SUMMARIES = {
    "rk-euler": "Forward Euler (order 1, fixed steps).",
    "midpoint": "Explicit midpoint rule (order 2, fixed steps).",
    "rk-heun": "Heun's method with Euler embedded: the Heun–Euler 2(1) pair.",
    "adaptive-heun": "Heun–Euler 2(1) reusing the predictor's evaluation (torchdiffeq's adaptive_heun).",
    "fehlberg2": "Fehlberg's RKF1(2) (1969) with local extrapolation (torchdiffeq's fehlberg2).",
    "heun3": "Heun's third-order method (1900; fixed steps).",
    "rk4-38": "Kutta's 3/8 rule (1901; fixed steps; torchdiffeq's rk4).",
    "rk4": "The classical fourth-order Runge–Kutta method (Kutta 1901; fixed steps).",
    "bosh3": "Bogacki–Shampine 3(2) (1989) with its cubic Hermite dense output.",
    "dopri5": "Dormand–Prince 5(4) (1980) with Shampine's dense output (HNW II.5-6).",
    "dopri5-shampine": "Dormand–Prince 5 with Shampine's (1986) embedded estimate (torchdiffeq's).",
    "tsit5": "Tsitouras 5(4) (2011) with its free interpolant.",
    "dopri8": "Hairer's DOP853: Dormand–Prince 8(5,3) with 7th-order dense output.",
}
for _name, _tab in TABLEAUX.items():
    register(_name, ExplicitRK, family="ode", summary=_SUMMARIES[_name], tableau=_tab)

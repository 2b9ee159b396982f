"""Implicit Runge–Kutta solvers for stiff ODEs, solved by simplified Newton with a reused dense
Jacobian or by Jacobian-free Newton–Krylov (:mod:`.newton`).

Adaptive: ``kvaerno3``, ``kvaerno4``, ``kvaerno5`` (Kværnø 2004, L-stable ESDIRK pairs) and
``radau-iia5`` (Radau IIA of order 5 with Hairer & Wanner's embedded estimate; fixed steps when
``dt`` is given). Fixed steps (torchdiffeq's implicit methods): ``implicit-euler``,
``implicit-midpoint``, ``trapezoid``, ``radau-iia3``, ``gl4``, ``gl6``, ``sdirk2``, ``trbdf2``.

``IMPLICIT_SOLVERS`` lists the registry names; every solver class here declares
``is_implicit = True``.
"""

from __future__ import annotations

from ..registry import register
from . import tableaux as tb
from .newton import JACOBIANS, NewtonError, NewtonOptions
from .stepper import ImplicitRK, ImplicitState

_SUMMARIES = {
    tb.KVAERNO3: "Kvaerno's L-stable ESDIRK 3(2), 4 stages (Kvaerno 2004, BIT 44)",
    tb.KVAERNO4: "Kvaerno's L-stable ESDIRK 4(3), 5 stages (Kvaerno 2004, BIT 44)",
    tb.KVAERNO5: "Kvaerno's L-stable ESDIRK 5(4), 7 stages (Kvaerno 2004, BIT 44)",
    tb.RADAU_IIA5: "Radau IIA order 5, 3 stages, with HW's embedded estimate (Hairer & Wanner II, IV.8)",
    tb.RADAU_IIA3: "Radau IIA order 3, 2 stages, fixed steps (Hairer & Wanner II, IV.5)",
    tb.GL4: "Gauss-Legendre order 4, 2 stages, fixed steps (Hairer & Wanner II, IV.5)",
    tb.GL6: "Gauss-Legendre order 6, 3 stages, fixed steps (Hairer & Wanner II, IV.5)",
    tb.IMPLICIT_EULER: "Implicit (backward) Euler, order 1, fixed steps",
    tb.IMPLICIT_MIDPOINT: "Implicit midpoint rule, order 2, fixed steps",
    tb.TRAPEZOID: "Trapezoidal rule (Crank-Nicolson) as an ESDIRK, order 2, fixed steps",
    tb.SDIRK2: "Two-stage L-stable SDIRK, order 2, gamma = 1 - 1/sqrt(2) (Hairer & Wanner II, IV.6)",
    tb.TRBDF2: "TR-BDF2 as a 3-stage ESDIRK, order 2, fixed steps (Hosea & Shampine 1996)",
}

for _tab, _summary in _SUMMARIES.items():
    register(_tab.name, ImplicitRK, family="ode", summary=_summary, tableau=_tab)

IMPLICIT_SOLVERS: tuple[str, ...] = tuple(t.name for t in _SUMMARIES)
"""The registry names of the implicit solvers (for error messages that suggest one)."""

__all__ = ["IMPLICIT_SOLVERS", "JACOBIANS", "ImplicitRK", "ImplicitState", "NewtonError", "NewtonOptions"]

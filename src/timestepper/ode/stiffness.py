"""Stiffness detection for explicit Runge–Kutta solves: stop early with a useful error.

An explicit solver on a stiff problem does not fail; it crawls. The step size is held at the
edge of the method's stability region, every step is accepted, and the solve ends only when
``max_steps`` is spent, minutes later, with an error that does not say why.

:class:`StiffnessDetector` is Hairer's test from DOPRI5 (Hairer & Wanner, Solving ODEs II,
Sec. IV.2; the ``NSTIFF`` option of the DOPRI5 code): for an FSAL pair whose last two stages
sit at the same time (``dopri5``, ``tsit5``), ``h rho`` with
``rho = ||k_s - k_{s-1}|| / ||x_s - x_{s-1}||`` estimates ``h`` times the dominant eigenvalue of
the Jacobian. The test runs every ``every`` accepted steps, and at every step while the problem
is suspect; ``h rho`` beyond 98 % of the method's stability boundary on the negative real axis
counts as a stiff step, six non-stiff steps in a row clear the suspicion, and ``hits`` stiff
steps stop the solve with :class:`~timestepper.core.status.StiffnessError` naming the time and
the implicit solvers of the registry.
"""

from __future__ import annotations

from functools import cache

from ..core.status import StiffnessError
from ..core.validation import check_int
from ..loop import StepRecord
from ..solvers.registry import available, get
from ..solvers.rk import ExplicitRK
from .regularise import stiffness_estimate

NONSTIFF_RESET = 6


@cache
def stability_boundary(a: tuple, b: tuple) -> float:
    """The largest ``r`` with ``|R(-x)| <= 1`` on ``[0, r]`` for the explicit tableau ``(a, b)``
    (``R`` its stability function), scanned in steps of 1e-3."""
    x, step = 0.0, 1e-3
    while x < 50.0:
        z = -(x + step)
        stages: list[float] = []
        for i in range(len(b)):
            row = a[i - 1] if i > 0 else ()
            stages.append(1.0 + z * sum(aij * yj for aij, yj in zip(row, stages)))
        if abs(1.0 + z * sum(bi * yi for bi, yi in zip(b, stages))) > 1.0:
            return x
        x += step
    return x


def implicit_solvers() -> list[str]:
    """Registry names of the adaptive ODE solvers that declare ``is_implicit`` (for error
    messages: the ones a stiff solve can switch to without choosing a step size)."""
    return [n for n in available("ode") if get(n).is_implicit and get(n).error_order is not None]


def detects_stiffness(solver) -> bool:
    """Whether :class:`StiffnessDetector` can watch ``solver`` (an FSAL explicit RK pair with
    ``c_s = c_{s-1}``)."""
    if not isinstance(solver, ExplicitRK):
        return False
    tab = solver.tableau
    return bool(tab.fsal and tab.stages >= 3 and tab.c[-1] == tab.c[-2])


class StiffnessDetector:
    """An ``on_accept`` hook running Hairer's stiffness test (module docstring).

    Args:
        solver: the explicit RK solver of the solve (see :func:`detects_stiffness`).
        every: test every ``every`` accepted steps (DOPRI5's ``NSTIFF``; default 1000).
        hits: stiff steps that stop the solve (15, as DOPRI5).
    """

    def __init__(self, solver: ExplicitRK, every: int = 1000, hits: int = 15) -> None:
        if not detects_stiffness(solver):
            raise ValueError(f"stiffness detection needs an FSAL explicit RK pair (dopri5, tsit5), "
                             f"got {solver.display_name!r}")
        self.solver = solver
        self.every = check_int(every, "every", 1)
        self.hits = check_int(hits, "hits", 1)
        tab = solver.tableau
        self.limit = 0.98 * stability_boundary(tuple(map(tuple, tab.a)), tuple(tab.b))
        self.accepted = self.stiff = self.nonstiff = 0

    def __call__(self, step: StepRecord) -> None:
        self.accepted += 1
        if self.accepted % self.every and not self.stiff:
            return
        rho = stiffness_estimate(self.solver, step.state)
        if rho is None:
            return
        h_rho = abs(step.t1 - step.t0) * float(rho)
        if h_rho <= self.limit:
            self.nonstiff += 1
            if self.nonstiff >= NONSTIFF_RESET:
                self.stiff = 0
            return
        self.stiff, self.nonstiff = self.stiff + 1, 0
        if self.stiff >= self.hits:
            names = ", ".join(implicit_solvers()) or "an implicit solver"
            raise StiffnessError(
                f"the problem looks stiff at t={step.t1:.6g}: {self.solver.display_name!r} is held at "
                f"its stability limit (h * |lambda| = {h_rho:.3g} for {self.hits} steps), so it would "
                f"crawl until max_steps; use an implicit solver ({names})")


__all__ = ["StiffnessDetector", "detects_stiffness", "implicit_solvers", "stability_boundary"]

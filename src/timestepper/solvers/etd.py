"""Exponential time differencing (ETD) for stiff semilinear problems ``x' = L x + N(t, x)``.

The diagonal linear part ``L`` (e.g. the Fourier symbol of a PDE's linear operator) is integrated
exactly through the phi functions of :mod:`timestepper.core.phi`; only ``N`` is approximated.

* ETD1 (exponential Euler), Cox & Matthews (2002):
  ``x1 = e^{hL} x + h phi_1(hL) N(x)``.
* ETDRK2, Cox & Matthews (2002):
  ``a = e^{hL} x + h phi_1 N(x)``; ``x1 = a + h phi_2 (N(a) - N(x))``.
* ETDRK4, Cox & Matthews (2002), eqs. (26)-(29), written with phi functions (the
  form Kassam & Trefethen 2005 evaluate):
  ``a = e^{hL/2} x + h/2 phi_1(hL/2) N(x)``, ``b = e^{hL/2} x + h/2 phi_1(hL/2) N(a)``,
  ``c = e^{hL/2} a + h/2 phi_1(hL/2) (2 N(b) - N(x))``,
  ``x1 = e^{hL} x + h [f_1 N(x) + 2 f_2 (N(a) + N(b)) + f_3 N(c)]`` with
  ``f_1 = phi_1 - 3 phi_2 + 4 phi_3``, ``f_2 = phi_2 - 2 phi_3``, ``f_3 = -phi_2 + 4 phi_3``
  (all at ``hL``).

Kassam & Trefethen evaluate the coefficients by contour integrals because the closed forms cancel
catastrophically for small ``|hL|``; here the same float64 phi functions the diffusion solvers
use (Taylor series for small argument) do that job. Coefficients are computed once per distinct
step size of the grid in :meth:`init` and handed to each step as its table row; :meth:`step`
only multiplies and adds tensors, with no host synchronisation, so it compiles once.

For comparison: :class:`IMEXEuler` (backward Euler on ``L``, forward Euler on ``N``) and the
generic ``"rk4"`` (which treats ``L x`` explicitly through ``term.vf``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.phi import phi
from ..core.solver import Solver
from ..core.terms import SemilinearTerm
from ..core.validation import time_grid
from .registry import register


def _step_key(h: float) -> float:
    # Grid steps that agree to 12 significant digits share one coefficient set.
    return float(f"{h:.12g}")


class ExponentialSolver(Solver):
    """Shared machinery: coefficient tables in float64 per step size, cast once.

    Subclasses define :meth:`coefficients` (``z = h L`` in float64/complex128 -> dict of tensors)
    and :meth:`step_with` (the update given the cast coefficients). Each grid step's table row
    is the coefficient dict of its step size.
    """

    family = "pde"
    term_type = SemilinearTerm
    real_view = False  # the step multiplies real coefficients into real views of complex states

    def coefficients(self, z: Tensor, h: float) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def step_with(
        self, term, t0: float, h: float, x: Tensor, c: dict[str, Tensor]
    ) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _build(self, term, h: float, x: Tensor) -> dict[str, Tensor]:
        lin = term.linear
        lin64 = lin.detach().to("cpu", torch.complex128 if lin.is_complex() else torch.float64)
        table = self.coefficients(h * lin64, h)
        if lin.is_complex() or not x.is_complex() or not self.real_view:
            return {k: v.to(device=x.device, dtype=x.dtype if lin.is_complex() else x.real.dtype)
                    for k, v in table.items()}
        # Real coefficients and a complex state: each coefficient is stored twice per entry,
        # (..., 2), to multiply the state's real view (re, im) -- half the flops of promoting it
        # to complex, no complex temporary, and fused multiply-adds (``real_view``).
        return {k: v.to(device=x.device, dtype=x.real.dtype)[..., None].expand(*v.shape, 2).contiguous()
                for k, v in table.items()}

    def init(self, term, grid, x0: Tensor):
        if term.linear.is_complex() and not x0.is_complex():
            raise TypeError("term.linear is complex, so the state x0 must be complex too")
        times = time_grid(grid).tolist()
        built: dict[float, dict[str, Tensor]] = {}
        table = []
        with torch.no_grad():
            for t0, t1 in zip(times[:-1], times[1:]):
                key = _step_key(t1 - t0)
                if key not in built:
                    built[key] = self._build(term, t1 - t0, x0)
                table.append(built[key])
        return None, table

    def step(self, term, t0: float, t1: float, x: Tensor, state, row):
        return self.step_with(term, t0, t1 - t0, x, row), state, None, self.nfe_per_step




@register("etd1")
class ETD1(ExponentialSolver):
    """Exponential Euler (ETD1), Cox & Matthews (2002). Order 1, one evaluation of N."""

    order = 1
    nfe_per_step = 1

    def coefficients(self, z, h):
        return {"e": torch.exp(z), "p1": h * phi(1, z)}

    def step_with(self, term, t0, h, x, c):
        return c["e"] * x + c["p1"] * term.nonlinear(t0, x)


@register("etdrk2")
class ETDRK2(ExponentialSolver):
    """ETDRK2, Cox & Matthews (2002). Order 2, two evaluations of N."""

    order = 2
    nfe_per_step = 2

    def coefficients(self, z, h):
        return {"e": torch.exp(z), "p1": h * phi(1, z), "p2": h * phi(2, z)}

    def step_with(self, term, t0, h, x, c):
        nx = term.nonlinear(t0, x)
        a = c["e"] * x + c["p1"] * nx
        return a + c["p2"] * (term.nonlinear(t0 + h, a) - nx)


@register("etdrk4")
class ETDRK4(ExponentialSolver):
    """ETDRK4, Cox & Matthews (2002), eqs. (26)-(29), with phi-function coefficients
    (Kassam & Trefethen 2005 evaluate the same ones by contour integrals).
    Order 4, four evaluations of N per step."""

    order = 4
    nfe_per_step = 4
    real_view = True

    def coefficients(self, z, h):
        p1, p2, p3 = phi(1, z), phi(2, z), phi(3, z)
        return {
            "e": torch.exp(z),
            "e2": torch.exp(z / 2),
            "q": (h / 2) * phi(1, z / 2),
            "f1": h * (p1 - 3 * p2 + 4 * p3),
            "f2": (2 * h) * (p2 - 2 * p3),
            "f3": h * (4 * p3 - p2),
        }

    def step_with(self, term, t0, h, x, c):
        if self.real_view and x.is_complex() and not c["e"].is_complex():  # paired (see _build)
            return self._step_real_view(term, t0, h, x, c)
        e2, q = c["e2"], c["q"]
        nx = term.nonlinear(t0, x)
        ex = e2 * x
        a = ex + q * nx
        na = term.nonlinear(t0 + h / 2, a)
        b = ex + q * na
        nb = term.nonlinear(t0 + h / 2, b)
        cc = e2 * a + q * (2 * nb - nx)
        nc = term.nonlinear(t0 + h, cc)
        return c["e"] * x + c["f1"] * nx + c["f2"] * (na + nb) + c["f3"] * nc

    @staticmethod
    def _step_real_view(term, t0, h, x, c):
        """The same step on the real views of complex states with real (paired) coefficients:
        fused multiply-adds, no complex temporaries; ``N`` through
        :meth:`~timestepper.core.terms.SemilinearTerm.nonlinear_real_view`."""
        nonlinear = term.nonlinear_real_view  # real views in and out: nothing complex between
        e2, q = c["e2"], c["q"]
        xr = torch.view_as_real(x)
        nx = nonlinear(t0, xr)
        ex = e2 * xr
        a = torch.addcmul(ex, q, nx)
        na = nonlinear(t0 + h / 2, a)
        nb = nonlinear(t0 + h / 2, torch.addcmul(ex, q, na))
        nc = nonlinear(t0 + h, torch.addcmul(e2 * a, q, (nb * 2).sub_(nx)))
        out = (c["e"] * xr).addcmul_(c["f1"], nx).addcmul_(c["f2"], na + nb).addcmul_(c["f3"], nc)
        return torch.view_as_complex(out)


@register("imex-euler")
class IMEXEuler(ExponentialSolver):
    """Semi-implicit (IMEX) Euler: ``(1 - hL) x1 = x + h N(x)`` (Ascher, Ruuth & Wetton 1995,
    the first-order member of their IMEX family). Order 1; the baseline ETD is compared with."""

    order = 1
    nfe_per_step = 1

    def coefficients(self, z, h):
        return {"inv": 1.0 / (1.0 - z), "hinv": h / (1.0 - z)}

    def step_with(self, term, t0, h, x, c):
        return c["inv"] * x + c["hinv"] * term.nonlinear(t0, x)


__all__ = ["ETD1", "ETDRK2", "ETDRK4", "ExponentialSolver", "IMEXEuler"]

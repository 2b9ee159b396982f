"""Step-size controllers: one protocol for fixed grids and adaptive stepping.

A controller decides where steps end and whether a step is kept (in the spirit of diffrax's
``AbstractStepSizeController``). The loop calls

* ``init(term, solver, t0, t1, x0, f0) -> (cstate, nfe)`` once: the controller's state (initial
  step size, error history) and the evaluations this made (``f0`` is ``f(t0, x0)`` when the loop
  already has it from a solver that provides its first derivative, else ``None``);
* ``next_time(t, cstate)``: where it proposes the next step to end (the loop then clips to the
  end time and, without dense output, to save times);
* ``adapt(t0, t1, x0, x1, err, cstate) -> (accept, cstate, underflow)`` after each step;
* ``next_order(cstate)``: with a variable-order solver (``Solver.variable_order``), the order of
  the next step, handed to the step as its ``row`` (``None``: the controller does not choose
  orders, and such a solver refuses it).

Times are Python floats for one shared step size, ``(B,)`` tensors in per-sample mode (then
``accept`` and ``underflow`` are ``(B,)`` bool tensors). A fixed grid is the controller
:class:`FixedGrid`: it accepts every step and proposes the next grid point, so a fixed-grid solve
runs the same loop with no error estimate and no host synchronisation.

Adaptive control measures the error of a step in a scaled norm (Hairer, Nørsett & Wanner 1993,
Solving ODEs I, eq. II.4.11): ``err_i / (atol + rtol * max(|x0_i|, |x1_i|))`` reduced by RMS
(default) or max. A step is accepted when that norm is <= 1 and the next step is proposed by a
PID rule (Söderlind 2003, "Digital filters in adaptive time-stepping", eq. 6; Söderlind & Wang
2006):

    dt_new = dt * safety * e_n^(-b1/k) * e_{n-1}^(-b2/k) * e_{n-2}^(-b3/k)

with ``b1 = p + i + d``, ``b2 = -(p + 2 d)``, ``b3 = d`` (``pcoeff``, ``icoeff``, ``dcoeff``) and
``k`` the solver's error order. ``icoeff=1`` (others 0) is the classical I controller.

With a variable-order solver the step returns its error estimates at its order ``k`` and at the
neighbouring orders (:class:`~timestepper.core.solver.OrderErrors`). The step is accepted on the
order-``k`` norm; the next order ``q`` maximises the step-size ratio
``eta_q = (bias_q * e_q)^(-1/(q+1))`` with CVODE's biases 6, 6, 10 for ``q = k-1, k, k+1``
(Byrne & Hindmarsh 1975; Hindmarsh et al. 2005, SUNDIALS, CVODE's order selection; after a
rejection only ``k - 1`` or ``k``); the PID rule then sets the step from ``e_q`` with ``k = q + 1``.
The PID memory (the previous inverse norms) always holds errors of the order the next step uses:
on an order change it restarts from this step's estimate at the new order.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from .solver import OrderErrors, Solver
from .terms import VectorFieldTerm
from .validation import check_choice, check_tolerances, time_grid

NORMS = ("rms", "max")


class StepSizeController:
    """Base class of the controllers (see the module docstring for the protocol).

    ``fixed`` declares a controller that never rejects a step and needs no error estimate.
    """

    fixed: ClassVar[bool] = False
    #: the loop does not shorten the last step to land on ``t1``: it steps past it and the save
    #: times (``t1`` among them) come from the solver's dense output, as torchdiffeq does; the
    #: solution's ``x`` is then the state at the last step's end (``extras["t"]``).
    steps_past_end: bool = False

    def init(self, term: Any, solver: Solver, t0: Any, t1: Any, x0: Tensor,
             f0: Tensor | None) -> tuple[Any, int]:  # pragma: no cover - interface
        raise NotImplementedError

    def next_time(self, t: Any, cstate: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def adapt(self, t0: Any, t1: Any, x0: Tensor, x1: Tensor, err: Any,
              cstate: Any) -> tuple[Any, Any, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def next_order(self, cstate: Any) -> int | None:
        """The order of the next step of a variable-order solver, or ``None`` (the default: this
        controller does not choose orders)."""
        return None


class FixedGrid(StepSizeController):
    """Steps from one grid point to the next: a fixed-grid solve as a controller.

    Args:
        grid: a 1-D tensor (or list) of strictly monotone times, or an object with a ``t``
            attribute holding one (a diffusion ``SamplingGrid``), kept as ``grid`` for the
            solver's ``init``.
    """

    fixed = True

    def __init__(self, grid: Any) -> None:
        self.grid = grid
        self.times = _grid_times(grid)

    @property
    def t_span(self) -> tuple[float, float]:
        return self.times[0], self.times[-1]

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    def init(self, term, solver, t0, t1, x0, f0):
        return 0, 0

    def next_time(self, t, cstate):
        return self.times[cstate + 1]

    def adapt(self, t0, t1, x0, x1, err, cstate):
        return True, cstate + 1, False


def _grid_times(grid: Any) -> list[float]:
    """The validated times of ``grid`` as floats. An object holding them in ``t`` (a diffusion
    ``SamplingGrid``) keeps them, keyed by that tensor, so a sampler called batch after batch on
    one grid validates it once."""
    store = None if isinstance(grid, (Tensor, list, tuple)) else getattr(grid, "__dict__", None)
    t = getattr(grid, "t", None)
    if store is not None and isinstance(t, Tensor):
        hit = store.get("_validated_times")
        if hit is not None and hit[0] is t:
            return list(hit[1])
        times = time_grid(grid).tolist()
        store["_validated_times"] = (t, tuple(times))
        return times
    return time_grid(grid).tolist()


def error_ratio(x0: Tensor, x1: Tensor, err: Tensor, rtol: float, atol: float) -> Tensor:
    """``err / (atol + rtol * max(|x0|, |x1|))`` elementwise (HNW I, eq. II.4.11)."""
    return err / torch.maximum(x0.abs(), x1.abs()).mul_(rtol).add_(atol)


def max_scaled_difference(y: Tensor, ref: Tensor, rtol: float, atol: float) -> float:
    """``max_i |y_i - ref_i| / (atol + rtol |ref_i|)`` (0 for empty tensors): <= 1 means ``y``
    is within the tolerance of ``ref``."""
    r = (y - ref).abs() / (atol + rtol * ref.abs())
    return float(r.max()) if r.numel() else 0.0


def scaled_error_norm(x0: Tensor, x1: Tensor, err: Tensor, rtol: float, atol: float,
                      norm: str = "rms", batched: bool = False) -> Tensor:
    """The scaled error as a tensor: 0-d float64, or ``(B,)`` over all but the first dim when
    ``batched``. A non-finite error gives ``inf``; it rejects the step."""
    if x0.requires_grad or x1.requires_grad or err.requires_grad:
        x0, x1, err = x0.detach(), x1.detach(), err.detach()
    r = error_ratio(x0, x1, err, rtol, atol)
    if r.is_complex():
        r = r.abs()
    if batched:
        r = r.reshape(r.shape[0], -1)
    dims = (1,) if batched else None
    if norm == "rms":
        out = torch.linalg.vector_norm(r, dim=dims) / (r.shape[1] if batched else r.numel()) ** 0.5
    else:
        out = torch.linalg.vector_norm(r, ord=math.inf, dim=dims)
    if not batched:
        out = out.to(torch.float64)
    return torch.nan_to_num(out, nan=math.inf, posinf=math.inf)


@dataclass
class PIDState:
    """The controller's state: the next step size (``dt``, a float or ``(B,)`` tensor), the inverse
    scaled errors of the two previous accepted steps (1 at the start), the error order of the
    next step and, with a variable-order solver, its method order (else ``None``)."""

    dt: Any
    prev: Any = 1.0
    prev2: Any = 1.0
    error_order: int = 1
    order: int | None = None


class PIDController(StepSizeController):
    """I, PI and PID step-size control (Söderlind 2003; Hairer & Wanner, Solving ODEs II, IV.2).

    Args:
        rtol, atol: relative and absolute tolerances.
        pcoeff, icoeff, dcoeff: the proportional, integral and derivative gains (``0, 1, 0`` is
            the I controller; ``0.4, 0.3, 0`` or Söderlind's H211PI ``1/6, 1/6, 0`` are PI).
        norm: ``"rms"`` or ``"max"`` over the components of the scaled error.
        dt0: initial step; ``None`` picks one with Hairer's algorithm (HNW I, II.4, p. 169).
        safety, factor_min, factor_max: safeguards on the step-size ratio.
        factor_min_accept: lower bound of the ratio after an accepted step (default
            ``factor_min`` as in Hairer's DOPRI5; torchdiffeq uses 1).
        dt_min: the step size below which the solve stops with ``Status.DT_UNDERFLOW`` (default:
            1e-14 relative to ``t``, or 4 float eps of the time dtype in per-sample mode).
        dt_max: upper bound on ``|dt|``.
    """

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-9, *, pcoeff: float = 0.0,  # noqa: PLR0913
                 icoeff: float = 1.0, dcoeff: float = 0.0, norm: str = "rms",
                 dt0: float | None = None, safety: float = 0.9, factor_min: float = 0.2,
                 factor_max: float = 10.0, factor_min_accept: float | None = None,
                 dt_min: float | None = None, dt_max: float | None = None) -> None:
        self.rtol, self.atol = check_tolerances(rtol, atol)
        self.norm = check_choice(norm, NORMS, "norm")
        if not 0 < factor_min < 1 < factor_max:
            raise ValueError(f"need 0 < factor_min < 1 < factor_max, got {factor_min}, {factor_max}")
        if not 0 < safety <= 1:
            raise ValueError(f"safety must be in (0, 1], got {safety}")
        self.dt0 = dt0
        self.pcoeff, self.icoeff, self.dcoeff = float(pcoeff), float(icoeff), float(dcoeff)
        self.safety, self.factor_min, self.factor_max = safety, factor_min, factor_max
        self.factor_min_accept = factor_min if factor_min_accept is None else factor_min_accept
        self.dt_min, self.dt_max = dt_min, dt_max

    def with_tolerances(self, rtol: float, atol: float) -> PIDController:
        """A copy with other tolerances (same gains and safeguards)."""
        out = copy.copy(self)
        out.rtol, out.atol = check_tolerances(rtol, atol)
        return out

    # -- the protocol ---------------------------------------------------------------------------

    def init(self, term, solver, t0, t1, x0, f0):
        if solver.error_order is None:
            raise ValueError(f"solver {solver.display_name!r} has no error estimate; give a fixed "
                             "grid (or dt=) instead of an adaptive controller")
        nfe = 0
        dt: Any
        if self.dt0 is not None:
            if isinstance(t0, Tensor):
                dt = torch.sign(t1 - t0) * abs(float(self.dt0))
            else:
                dt = math.copysign(abs(float(self.dt0)), t1 - t0)
        else:
            dt, nfe = self.initial_step(term, solver.error_order, t0, t1, x0, f0)
        order = solver.error_order - 1 if solver.variable_order else None
        return PIDState(dt=dt, error_order=solver.error_order, order=order), nfe

    def next_time(self, t, cstate):
        return t + cstate.dt

    def next_order(self, cstate):
        return cstate.order

    def adapt(self, t0, t1, x0, x1, err, cstate):
        if err is None:
            raise ValueError("an adaptive step needs the solver's error estimate")
        if cstate.order is not None:
            return self._adapt_order(t0, t1, x0, x1, err, cstate)
        if isinstance(t0, Tensor):
            return self._adapt_tensor(self.error_norm(x0, x1, err, batched=True), t1 - t0, cstate, t1)
        return self._adapt_float(float(self.error_norm(x0, x1, err)), t1 - t0, cstate, t1)

    # -- the rule -------------------------------------------------------------------------------

    def error_norm(self, x0: Tensor, x1: Tensor, err: Tensor, batched: bool = False) -> Tensor:
        """The scaled error norm of a step (0-d, or ``(B,)`` when ``batched``)."""
        return scaled_error_norm(x0, x1, err, self.rtol, self.atol, self.norm, batched)

    def _gains(self, error_order: int) -> tuple[float, float, float]:
        k = float(error_order)
        return ((self.pcoeff + self.icoeff + self.dcoeff) / k, -(self.pcoeff + 2 * self.dcoeff) / k,
                self.dcoeff / k)

    def _adapt_float(self, norm: float, taken: float, cs: PIDState, t: float,
                     accept: bool | None = None):
        """Shared step: Python floats (one host read of the norm, no tensor ops). ``accept``
        overrides ``norm <= 1`` when the step's acceptance is decided on another error."""
        b1, b2, b3 = self._gains(cs.error_order)
        accept = norm <= 1.0 if accept is None else accept
        inv = 1.0 / max(norm, 1e-10) if math.isfinite(norm) else 0.0
        factor = self.safety * inv**b1 * cs.prev**b2 * cs.prev2**b3
        lo = self.factor_min_accept if accept else self.factor_min
        factor = min(max(factor, lo), self.factor_max if accept else self.safety)
        dt = taken * factor
        if self.dt_max is not None:
            dt = math.copysign(min(abs(dt), self.dt_max), dt)
        new = replace(cs, dt=dt, prev=inv, prev2=cs.prev) if accept else replace(cs, dt=dt)
        floor = self.dt_min if self.dt_min is not None else 1e-14 * max(1.0, abs(t))
        return accept, new, not abs(dt) >= floor

    def _adapt_order(self, t0, t1, x0, x1, err: OrderErrors, cs: PIDState):
        """A variable-order step (see the module docstring): one host read of the norms of all
        the estimates, then the order and the step size of the next step."""
        if isinstance(t0, Tensor):
            raise ValueError("variable-order steps are shared-step only (per_sample=False)")
        if not isinstance(err, OrderErrors) or err.order not in err.errors:
            raise TypeError("a variable-order step must return OrderErrors including its own order")
        orders = [err.order] + [q for q in sorted(err.errors) if q != err.order]
        norms = dict(zip(orders, torch.stack(
            [self.error_norm(x0, x1, err.errors[q]) for q in orders]).tolist(), strict=True))
        accept, k = norms[err.order] <= 1.0, err.order
        new = select_order(norms, k, accept)
        same = replace(cs, error_order=k + 1)
        # on an order change, restart the memory with this step's error at the new order
        changed = replace(cs, prev=1.0, prev2=1.0, order=new, error_order=new + 1)
        return self._adapt_float(norms[new], t1 - t0, same if new == k else changed, t1, accept)

    def _adapt_tensor(self, norm: Tensor, taken: Tensor, cs: PIDState, t1: Tensor):
        """Per-sample steps: ``(B,)`` tensors (no host synchronisation). The error history
        advances only where a step is accepted; it is not tracked when its gains are zero."""
        b1, b2, b3 = self._gains(cs.error_order)
        if norm.dtype != taken.dtype:
            norm = norm.to(taken.dtype)
        accept = norm <= 1.0
        # norm = 0 gives the largest factor; a NaN/inf error (inv = 0) the smallest.
        inv = torch.clamp(norm, min=1e-10).reciprocal_().nan_to_num_(nan=0.0)
        factor = self.safety * inv**b1
        track = b2 != 0.0 or b3 != 0.0
        prev, prev2 = cs.prev, cs.prev2
        if track:
            prev = torch.as_tensor(prev, dtype=inv.dtype, device=inv.device)
            prev2 = torch.as_tensor(prev2, dtype=inv.dtype, device=inv.device)
            factor = factor * prev**b2 * prev2**b3
        if not track and b1 > 0 and self.safety <= self.factor_max \
                and max(self.factor_min, self.factor_min_accept) < 0.999 * self.safety:
            # safety * inv**b1 is >= safety (above both lower bounds) when accepted (inv >= 1)
            # and <= safety when rejected, so one clamp gives the same ratio.
            factor = factor.clamp(self.factor_min, self.factor_max)
        else:
            factor = torch.where(accept, factor.clamp(self.factor_min_accept, self.factor_max),
                                 factor.clamp(self.factor_min, self.safety))
        dt = taken * factor
        if self.dt_max is not None:
            dt = dt.clamp(-self.dt_max, self.dt_max)
        new = PIDState(dt, prev, prev2, cs.error_order)
        if track:
            new = PIDState(dt, torch.where(accept, inv, prev), torch.where(accept, prev, prev2),
                           cs.error_order)
        floor: float | Tensor = self.dt_min if self.dt_min is not None else \
            4 * torch.finfo(t1.dtype).eps * t1.abs().clamp(min=1.0)
        return accept, new, dt.abs() < floor

    def initial_step(self, term: Any, error_order: int, t0: Any, t1: Any, x0: Tensor,
                     f0: Tensor | None = None) -> tuple[Any, int]:
        """Hairer's starting step (HNW I, II.4, p. 169), signed towards ``t1``: two evaluations
        of ``f`` (one when ``f0`` is given). Returns ``(dt, evaluations)``; ``dt`` is a float, or
        a ``(B,)`` tensor (dtype of the times) in per-sample mode."""
        if not isinstance(term, VectorFieldTerm):
            raise TypeError(f"the initial step selection evaluates the term's vector field; "
                            f"{type(term).__name__} has none: give dt0=")
        with torch.no_grad():
            return _hairer_initial_step(term, error_order, t0, t1, x0.detach(), f0,
                                        (self.rtol, self.atol))


ORDER_BIAS = {-1: 6.0, 0: 6.0, 1: 10.0}
"""CVODE's biases of the step-size ratios of orders ``k - 1``, ``k``, ``k + 1`` in the choice of
the next order (it prefers not to raise)."""


def select_order(norms: dict[int, float], order: int, accepted: bool) -> int:
    """The order ``q`` (among those estimated, not above ``order`` after a rejection) with the
    largest step-size ratio ``(bias * e_q)^(-1/(q+1))``; ties keep ``order`` (``norms`` lists it
    first)."""
    def ratio(q: int) -> float:
        e = norms[q]
        if not math.isfinite(e):
            return 0.0
        return (ORDER_BIAS[max(-1, min(1, q - order))] * max(e, 1e-10)) ** (-1.0 / (q + 1))

    return max((q for q in norms if accepted or q <= order), key=ratio)


def _hairer_initial_step(term, error_order, t0, t1, x0, f0, tolerances):
    rtol, atol = tolerances
    batched = isinstance(t0, Tensor)
    scale = atol + rtol * x0.abs()
    span = (t1 - t0).abs() if batched else torch.tensor(abs(t1 - t0), dtype=torch.float64)
    tdt = span.dtype

    def nrm(v):
        r = (v / scale).abs()
        if batched:
            r = r.reshape(r.shape[0], -1)
            return torch.sqrt(torch.mean(r * r, dim=1)).to(tdt)
        return torch.sqrt(torch.mean(r * r)).to(tdt)

    nfe = 1
    if f0 is None:
        f0, nfe = term.vf(t0, x0), 2
    f0 = f0.detach()
    d0, d1 = nrm(x0), nrm(f0)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, span)
    direction = torch.sign(torch.as_tensor(t1 - t0, dtype=tdt))
    hs = h0 * direction
    hx = hs.reshape((-1,) + (1,) * (x0.ndim - 1)).to(x0.dtype) if batched else hs.to(x0.dtype)
    t_probe = t0 + hs if batched else t0 + float(hs)
    f1 = term.vf(t_probe, x0 + hx * f0)
    d2 = nrm(f1 - f0) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6),
                     (0.01 / torch.clamp(dmax, min=torch.finfo(tdt).tiny)) ** (1.0 / error_order))
    h = torch.minimum(torch.minimum(100 * h0, h1), span) * direction
    return (h if batched else float(h)), nfe


class IController(PIDController):
    """The elementary (integral) controller ``dt_new = dt * safety * norm^(-1/k)``."""

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-9, dt0: float | None = None,  # noqa: PLR0913
                 safety: float = 0.9, factor_min: float = 0.2, factor_max: float = 10.0,
                 norm: str = "rms") -> None:
        super().__init__(rtol, atol, dt0=dt0, safety=safety, factor_min=factor_min,
                         factor_max=factor_max, norm=norm)


CONTROLLER_PRESETS = {"i": {}, "pi": {"pcoeff": 0.4, "icoeff": 0.3},
                      "pid": {"pcoeff": 0.4, "icoeff": 0.3, "dcoeff": 0.1}}


def controller_from(spec: str | StepSizeController, rtol: float, atol: float,
                    **options: Any) -> StepSizeController:
    """Build a PID controller from ``"i"``, ``"pi"`` or ``"pid"`` (or pass one through)."""
    if isinstance(spec, StepSizeController):
        return spec
    if spec not in CONTROLLER_PRESETS:
        raise ValueError(f"controller must be one of {sorted(CONTROLLER_PRESETS)} or a "
                         f"StepSizeController, got {spec!r}")
    return PIDController(rtol, atol, **{**CONTROLLER_PRESETS[spec], **options})


__all__ = [
    "CONTROLLER_PRESETS",
    "FixedGrid",
    "IController",
    "NORMS",
    "PIDController",
    "PIDState",
    "StepSizeController",
    "controller_from",
    "error_ratio",
    "max_scaled_difference",
    "select_order",
    "scaled_error_norm",
]

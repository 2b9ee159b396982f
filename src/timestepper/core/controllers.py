"""Step-size controllers for adaptive solves.

The error of a step is measured in a scaled norm (Hairer, Nørsett & Wanner 1993, Solving ODEs I,
eq. II.4.11): ``err_i / (atol + rtol * max(|x0_i|, |x1_i|))`` reduced by RMS (default) or max.
A step is accepted when that norm is <= 1 and the next step is proposed by a PID rule
(Söderlind 2003, "Digital filters in adaptive time-stepping", eq. 6 / Söderlind & Wang 2006):

    dt_new = dt * safety * e_n^(-b1/k) * e_{n-1}^(-b2/k) * e_{n-2}^(-b3/k)

with ``b1 = p + i + d``, ``b2 = -(p + 2 d)``, ``b3 = d`` (``pcoeff``, ``icoeff``, ``dcoeff``) and
``k`` the solver's error order. ``icoeff=1`` (others 0) is the classical I controller; the
controller works on 0-d tensors (one shared step) or ``(B,)`` tensors (per-sample steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

NORMS = ("rms", "max")


class StepSizeController:
    """Base class: ``initial_step`` and ``adapt``."""

    def initial_step(self, term, solver, t0: float, t1: float, x0: Tensor) -> float:
        raise NotImplementedError

    def adapt(self, x0: Tensor, x1: Tensor, err: Tensor, dt: float, order: int) -> tuple[bool, float]:
        raise NotImplementedError


def rms_error_norm(x0: Tensor, x1: Tensor, err: Tensor, rtol: float, atol: float) -> float:
    """Hairer's scaled RMS error norm (a host sync: adaptive stepping needs the decision)."""
    scale = atol + rtol * torch.maximum(x0.abs(), x1.abs())
    return float(torch.sqrt(torch.mean((err / scale) ** 2)))


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
    """The scaled error as a tensor: 0-d, or ``(B,)`` over all but the first dim when
    ``batched``. A non-finite error gives ``inf`` or ``nan``; both reject the step."""
    if x0.requires_grad or x1.requires_grad or err.requires_grad:
        x0, x1, err = x0.detach(), x1.detach(), err.detach()
    if norm == "rms" and not err.is_complex():
        r = error_ratio(x0, x1, err, rtol, atol)
        if batched:
            r = r.reshape(r.shape[0], -1)
            out = torch.linalg.vector_norm(r, dim=1) / (r.shape[1] ** 0.5)
            return torch.nan_to_num(out, nan=math.inf, posinf=math.inf)
        return torch.linalg.vector_norm(r).to(torch.float64) / (r.numel() ** 0.5)
    r = error_ratio(x0, x1, err, rtol, atol).abs()
    if batched:
        r = r.reshape(r.shape[0], -1)
    dims = (1,) if batched else None
    if norm == "rms":
        out = torch.sqrt(torch.mean(r * r, dim=dims) if dims else torch.mean(r * r))
    else:
        out = torch.amax(r, dim=dims) if dims else torch.amax(r)
    if torch.is_complex(out):
        out = out.real
    if not batched:
        out = out.to(torch.float64)
    return torch.nan_to_num(out, nan=math.inf, posinf=math.inf)


@dataclass
class PIDState:
    """Inverse scaled errors of the two previous accepted steps (1 at the start)."""

    prev: Tensor | float = 1.0
    prev2: Tensor | float = 1.0


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
        dt_min: raise when a rejected step would go below this (default: 1e-14 relative to t).
        dt_max: upper bound on ``|dt|``.
    """

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-9, *, pcoeff: float = 0.0,
                 icoeff: float = 1.0, dcoeff: float = 0.0, norm: str = "rms",
                 dt0: float | None = None, safety: float = 0.9, factor_min: float = 0.2,
                 factor_max: float = 10.0, factor_min_accept: float | None = None,
                 dt_min: float | None = None, dt_max: float | None = None) -> None:
        if rtol < 0 or atol < 0 or (rtol == 0 and atol == 0):
            raise ValueError(f"rtol and atol must be >= 0 and not both 0, got {rtol}, {atol}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not 0 < factor_min < 1 < factor_max:
            raise ValueError("need 0 < factor_min < 1 < factor_max")
        self.rtol, self.atol, self.dt0 = float(rtol), float(atol), dt0
        self.pcoeff, self.icoeff, self.dcoeff = float(pcoeff), float(icoeff), float(dcoeff)
        self.norm = norm
        self.safety, self.factor_min, self.factor_max = safety, factor_min, factor_max
        self.factor_min_accept = factor_min if factor_min_accept is None else factor_min_accept
        self.dt_min, self.dt_max = dt_min, dt_max

    def init_state(self) -> PIDState:
        return PIDState()

    def error_norm(self, x0: Tensor, x1: Tensor, err: Tensor, batched: bool = False) -> Tensor:
        return scaled_error_norm(x0, x1, err, self.rtol, self.atol, self.norm, batched)

    def _gains(self, error_order: int) -> tuple[float, float, float]:
        k = float(error_order)
        return ((self.pcoeff + self.icoeff + self.dcoeff) / k, -(self.pcoeff + 2 * self.dcoeff) / k,
                self.dcoeff / k)

    def _one_clamp(self, track: bool, b1: float) -> bool:
        return (not track and b1 > 0 and self.safety <= self.factor_max
                and max(self.factor_min, self.factor_min_accept) < 0.999 * self.safety)

    def propose(self, norm: Tensor, dt: Tensor, state: PIDState, error_order: int):
        """Accept/reject and the next step from the scaled error ``norm`` as tensors (0-d or
        per-sample ``(B,)``). Returns ``(accept, dt_next, state)``; the error history advances
        only where a step is accepted (it is passed through unchanged when its gains are zero,
        e.g. for the I controller). Same rule as :meth:`propose_float`."""
        b1, b2, b3 = self._gains(error_order)
        accept = norm <= 1.0
        # norm = 0 gives the largest factor; a NaN/inf error (inv = 0) the smallest. ``1 / inf``
        # is 0 and a NaN norm gives a NaN reciprocal, mapped to 0.
        inv = torch.clamp(norm, min=1e-10).reciprocal_().nan_to_num_(nan=0.0)
        factor = self.safety * inv**b1
        track = b2 != 0.0 or b3 != 0.0
        if track:
            prev = torch.as_tensor(state.prev, dtype=inv.dtype)
            prev2 = torch.as_tensor(state.prev2, dtype=inv.dtype)
            factor = factor * prev**b2 * prev2**b3
        # Accepted: ratio in [factor_min_accept, factor_max]; rejected: in [factor_min, safety].
        if self._one_clamp(track, b1):
            # safety * inv**b1 is >= safety (above both lower bounds) when accepted (inv >= 1)
            # and <= safety when rejected, so one clamp gives the same ratio.
            factor = factor.clamp(self.factor_min, self.factor_max)
        else:
            factor = torch.where(accept, factor.clamp(self.factor_min_accept, self.factor_max),
                                 factor.clamp(self.factor_min, self.safety))
        dt_next = dt * (factor if factor.dtype == dt.dtype else factor.to(dt.dtype))
        if self.dt_max is not None:
            dt_next = torch.clamp(dt_next, -self.dt_max, self.dt_max)
        if not track:
            return accept, dt_next, state
        new = PIDState(torch.where(accept, inv, prev), torch.where(accept, prev, prev2))
        return accept, dt_next, new

    def propose_float(self, norm: float, dt: float, state: PIDState, error_order: int):
        """:meth:`propose` on Python floats (the shared-step loop: no tensor ops per step)."""
        b1, b2, b3 = self._gains(error_order)
        accept = norm <= 1.0
        inv = 1.0 / max(norm, 1e-10) if math.isfinite(norm) else 0.0
        factor = self.safety * inv**b1 * state.prev**b2 * state.prev2**b3
        lo = self.factor_min_accept if accept else self.factor_min
        factor = min(max(factor, lo), self.factor_max if accept else self.safety)
        dt_next = dt * factor
        if self.dt_max is not None:
            dt_next = math.copysign(min(abs(dt_next), self.dt_max), dt_next)
        new = PIDState(inv, state.prev) if accept else state
        return accept, dt_next, new

    def initial_step(self, term, solver, t0, t1, x0, f0: Tensor | None = None,
                     batched: bool = False):
        """Hairer's starting step (HNW I, II.4, p. 169): two evaluations of ``f`` (one when
        ``f0`` is given). Returns a float, or a ``(B,)`` tensor (dtype of the times) when
        ``batched``."""
        if self.dt0 is not None:
            return float(self.dt0)

        scale = self.atol + self.rtol * x0.detach().abs()

        def nrm(v):
            r = (v / scale).abs()
            if batched:
                r = r.reshape(r.shape[0], -1)
                return torch.sqrt(torch.mean(r * r, dim=1)).to(span.dtype)
            return torch.sqrt(torch.mean(r * r)).to(torch.float64)

        span = abs(t1 - t0) if not batched else (t1 - t0).abs()
        with torch.no_grad():
            return self._hairer(term, solver, t0, t1, x0.detach(), f0, batched, span, nrm)

    def _hairer(self, term, solver, t0, t1, x0, f0, batched, span, nrm):
        tdt = span.dtype if isinstance(span, Tensor) else torch.float64
        if f0 is None:
            f0 = term.vf(t0, x0)
        f0 = f0.detach()
        d0, d1 = nrm(x0), nrm(f0)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        h0 = torch.minimum(h0, torch.as_tensor(span, dtype=tdt))
        direction = torch.sign(torch.as_tensor(t1 - t0, dtype=tdt))
        hs = h0 * direction
        hx = hs.reshape((-1,) + (1,) * (x0.ndim - 1)).to(x0.dtype) if batched else hs.to(x0.dtype)
        t_probe = t0 + hs if batched else t0 + float(hs)
        f1 = term.vf(t_probe, x0 + hx * f0)
        d2 = nrm(f1 - f0) / h0
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6),
                         (0.01 / torch.clamp(dmax, min=torch.finfo(tdt).tiny))
                         ** (1.0 / getattr(solver, "error_order", solver.order + 1)))
        h = torch.minimum(torch.minimum(100 * h0, h1), torch.as_tensor(span, dtype=tdt))
        return h if batched else float(h)

    def adapt(self, x0, x1, err, dt, order):
        """Backward-compatible single-step decision (floats in, floats out)."""
        norm = float(self.error_norm(x0, x1, err))
        accept, dt_next, _ = self.propose_float(norm, dt, self.init_state(), order + 1)
        return accept, dt_next


class IController(PIDController):
    """The elementary (integral) controller ``dt_new = dt * safety * norm^(-1/k)``."""

    def __init__(self, rtol: float = 1e-6, atol: float = 1e-9, dt0: float | None = None,
                 safety: float = 0.9, factor_min: float = 0.2, factor_max: float = 10.0,
                 norm: str = "rms") -> None:
        super().__init__(rtol, atol, dt0=dt0, safety=safety, factor_min=factor_min,
                         factor_max=factor_max, norm=norm)


def controller_from(spec: str | StepSizeController, rtol: float, atol: float,
                    **options) -> StepSizeController:
    """Build a controller from ``"i"``, ``"pi"``, ``"pid"`` or pass one through."""
    if isinstance(spec, StepSizeController):
        return spec
    presets = {"i": {}, "pi": {"pcoeff": 0.4, "icoeff": 0.3},
               "pid": {"pcoeff": 0.4, "icoeff": 0.3, "dcoeff": 0.1}}
    if spec not in presets:
        raise ValueError(f"controller must be one of {sorted(presets)} or a StepSizeController, "
                         f"got {spec!r}")
    return PIDController(rtol, atol, **{**presets[spec], **options})

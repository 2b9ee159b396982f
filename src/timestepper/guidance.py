"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper over a :class:`Denoiser`.

``cfg(denoiser, scale, cond={...}, uncond={...})`` returns a new :class:`Denoiser` whose output
is ``m_u + scale (m_c - m_u)`` (Ho & Salimans 2022, eq. 6 written with ``w + 1 = scale``, the
convention of diffusers' ``guidance_scale``): ``scale = 0`` is the unconditional model, ``1`` the
conditional one. Every prediction type here is affine in the network output at fixed ``(x, t)``,
so guiding the raw output equals guiding the eps, x0, v or velocity prediction; the wrapper is an
ordinary denoiser and every solver accepts it.

``interval=(s_lo, s_hi)`` applies guidance only while the noise level ``s = sigma / alpha`` lies in
``(s_lo, s_hi]`` and uses the conditional output elsewhere (Kynkäänniemi et al. 2024, "Applying
guidance in a limited interval", eq. 2). The interval is converted once to the schedule's own
time, and the choice inside a call is a ``torch.where`` on the time tensor (no host sync), so
both branches are evaluated at every step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .diffusion.denoiser import Denoiser


class _Guided:
    def __init__(
        self,
        base: Denoiser,
        scale: float,
        cond: dict[str, Any],
        uncond: dict[str, Any],
        t_interval: tuple[float, float] | None,
    ) -> None:
        self.base, self.scale, self.cond, self.uncond = base, scale, cond, uncond
        self.t_interval = t_interval

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        fn = self.base.model_fn
        m_c = fn(x, t, **{**self.base.model_kwargs, **kwargs, **self.cond})
        if self.scale == 1.0:
            return m_c
        m_u = fn(x, t, **{**self.base.model_kwargs, **kwargs, **self.uncond})
        guided = torch.lerp(m_u, m_c, self.scale) if self.scale != 0.0 else m_u
        if self.t_interval is None:
            return guided
        lo, hi = self.t_interval
        inside = ((t > lo) & (t <= hi)).view(-1, *([1] * (x.ndim - 1)))
        return torch.where(inside, guided, m_c)


def cfg(
    denoiser: Denoiser,
    scale: float,
    cond: dict[str, Any] | None = None,
    uncond: dict[str, Any] | None = None,
    *,
    interval: tuple[float, float] | None = None,
    labels: Tensor | None = None,
    null_label: int | None = None,
) -> Denoiser:
    """Classifier-free guidance over ``denoiser``.

    Args:
        denoiser: the conditional model (its ``model_kwargs`` are shared by both branches).
        scale: guidance scale ``>= 0`` (0: unconditional, 1: conditional, > 1: guided).
        cond: keyword arguments of the conditional call (e.g. ``{"labels": y}``).
        uncond: keyword arguments of the unconditional call (e.g. ``{"labels": null}``).
        interval: ``(s_lo, s_hi)`` noise levels ``sigma / alpha`` between which guidance is applied.
        labels, null_label: shorthand for class-conditional models:
            ``cond={"labels": labels}``, ``uncond={"labels": full_like(labels, null_label)}``.

    Returns:
        A :class:`Denoiser` with the same schedule and prediction type. It calls the network
        twice per evaluation (once when ``scale == 1``); the solver's NFE counts evaluations of
        the guided denoiser.
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale}")
    cond, uncond = _branches(cond, uncond, labels, null_label)
    t_interval = None if interval is None else _time_interval(denoiser, interval)
    guided = _Guided(denoiser, scale, dict(cond), dict(uncond), t_interval)
    return Denoiser(guided, denoiser.schedule, denoiser.prediction)


def _branches(cond: dict[str, Any] | None, uncond: dict[str, Any] | None, labels: Tensor | None,
              null_label: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keyword arguments of the conditional and unconditional calls."""
    if labels is not None:
        if cond is not None or uncond is not None:
            raise ValueError("pass either labels=/null_label= or cond=/uncond=, not both")
        if null_label is None:
            raise ValueError("labels= needs null_label= (the network's 'no label' index)")
        labels = torch.as_tensor(labels)
        cond, uncond = {"labels": labels}, {"labels": torch.full_like(labels, int(null_label))}
    if cond is None or uncond is None:
        raise ValueError(
            "cfg needs the conditional and unconditional inputs: cond= and uncond= "
            "(or labels= and null_label=)"
        )
    return cond, uncond


def _time_interval(denoiser: Denoiser, interval: tuple[float, float]) -> tuple[float, float]:
    """The schedule's times of the noise levels ``(s_lo, s_hi)`` (``s = sigma / alpha``)."""
    lo, hi = (float(v) for v in interval)
    if not 0 <= lo < hi:
        raise ValueError(f"interval must be (s_lo, s_hi) with 0 <= s_lo < s_hi, got {interval}")
    sch = denoiser.schedule

    def to_t(s: float) -> float:
        if s == 0:
            return -math.inf
        if math.isinf(s):
            return math.inf
        return float(sch.t_from_log_snr(torch.tensor(-math.log(s), dtype=torch.float64)))

    return to_t(lo), to_t(hi)

"""Prediction types and their exact conversions.

With ``x = alpha x0 + sigma eps`` every parameterization of the network output ``m`` is linear in
``(x, m)`` given the schedule at ``t``, so a conversion is a pair of coefficients
``x0 = a * x + b * m`` (and likewise for ``eps``):

========== ====================================== ==========================================
kind       network predicts                       data prediction ``x0``
========== ====================================== ==========================================
epsilon    ``eps``                                ``(x - sigma m) / alpha``
sample     ``x0``                                 ``m``
v          ``alpha eps - sigma x0`` (Salimans &   ``(alpha x - sigma m) / (alpha^2+sigma^2)``
           Ho 2022, eq. 5, general form)
velocity   ``dx/dt = alpha' x0 + sigma' eps``     ``(sigma' x - sigma m) / (sigma' alpha - sigma alpha')``
           (flow matching)
score      ``grad log p_t(x) = -eps / sigma``     ``(x + sigma^2 m) / alpha``
========== ====================================== ==========================================
"""

from __future__ import annotations

import torch
from torch import Tensor

from .schedules import NoiseSchedule

PREDICTIONS = ("epsilon", "sample", "v_prediction", "velocity", "score")
_ALIASES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction", "flow": "velocity"}


def canonical_prediction(kind: str) -> str:
    """Normalise a prediction name (``eps``/``x0``/``v``/``flow`` aliases accepted)."""
    if not isinstance(kind, str):
        raise TypeError(f"prediction must be a string, got {type(kind).__name__}")
    kind = _ALIASES.get(kind, kind)
    if kind not in PREDICTIONS:
        raise ValueError(
            f"unknown prediction {kind!r}; choose from {', '.join(PREDICTIONS)} "
            f"(aliases: {', '.join(_ALIASES)})"
        )
    return kind


def data_coefficients(kind: str, schedule: NoiseSchedule, t: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 ``(a, b)`` with ``x0 = a x + b m`` for network output ``m`` of type ``kind`` at ``t``."""
    kind = canonical_prediction(kind)
    t = torch.as_tensor(t, dtype=torch.float64)
    return _data_coefficients(kind, schedule, t, schedule.alpha_sigma(t))


def noise_coefficients(kind: str, schedule: NoiseSchedule, t: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 ``(c, d)`` with ``eps = c x + d m``: from ``eps = (x - alpha x0) / sigma``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    kind = canonical_prediction(kind)
    if kind == "epsilon":
        return torch.zeros_like(t), torch.ones_like(t)
    return _noise_coefficients(kind, schedule, t, schedule.alpha_sigma(t))


def conversion_coefficients(kind: str, schedule: NoiseSchedule,
                            t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(a, b, c, d)`` of :func:`data_coefficients` and :func:`noise_coefficients` at once, the
    schedule evaluated once (the same values: the per-grid tables of the diffusion term)."""
    kind = canonical_prediction(kind)
    t = torch.as_tensor(t, dtype=torch.float64)
    al_si = schedule.alpha_sigma(t)
    a, b = _data_coefficients(kind, schedule, t, al_si)
    if kind == "epsilon":
        return a, b, torch.zeros_like(t), torch.ones_like(t)
    return (a, b, *_noise_coefficients(kind, schedule, t, al_si))


def _data_coefficients(kind: str, schedule: NoiseSchedule, t: Tensor,
                       al_si: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    al, si = al_si
    if kind == "epsilon":
        return 1.0 / al, -si / al
    if kind == "sample":
        return torch.zeros_like(t), torch.ones_like(t)
    if kind == "v_prediction":
        n = al * al + si * si
        return al / n, -si / n
    if kind == "score":
        return 1.0 / al, si * si / al
    da, ds = schedule.dalpha(t), schedule.dsigma(t)
    det = ds * al - si * da
    return ds / det, -si / det


def _noise_coefficients(kind: str, schedule: NoiseSchedule, t: Tensor,
                        al_si: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    al, si = al_si
    if kind == "score":
        return torch.zeros_like(t), -si
    a, b = _data_coefficients(kind, schedule, t, al_si)
    return (1.0 - al * a) / si, -al * b / si


def convert(m: Tensor, x: Tensor, t, schedule: NoiseSchedule, source: str, target: str) -> Tensor:
    """Convert a network output ``m`` of type ``source`` at ``(x, t)`` to type ``target``.

    Exact given the schedule; used by tests and by wrappers (not on the sampling hot path, where
    coefficients are precomputed per grid).
    """
    source, target = canonical_prediction(source), canonical_prediction(target)
    t = torch.as_tensor(t, dtype=torch.float64)
    a, b = data_coefficients(source, schedule, t)
    x0 = a * x.to(torch.float64) + b * m.to(torch.float64)
    if target == "sample":
        return x0.to(m.dtype)
    al, si = schedule.alpha_sigma(t)
    eps = (x.to(torch.float64) - al * x0) / si
    if target == "epsilon":
        out = eps
    elif target == "v_prediction":
        out = al * eps - si * x0
    elif target == "score":
        out = -eps / si
    else:
        out = schedule.dalpha(t) * x0 + schedule.dsigma(t) * eps
    return out.to(m.dtype)

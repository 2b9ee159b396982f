"""Control paths ``X(t)`` for neural CDEs: evaluation, derivative and knots.

:class:`LinearPath` and :class:`CubicPath` hold the coefficients of
:mod:`timestepper.cde.interpolation` (batch dims first, ``(..., pieces, C)``) and evaluate them
at a time ``t``: a Python float (shared steps; the piece is found by bisection on the host list
of knots, no device synchronisation) or a tensor (0-d, or ``(B,)`` for per-sample steps: one
time per series). At a knot the piece on the left is used, as torchcde does.

:func:`control_path` builds a path from an irregular, partially observed series the way Kidger
et al. (2020) recommend: time itself as the first channel (held after a series' last
observation, so padded series stop driving the CDE) and, optionally, the observational
intensity: the cumulative count of observations of every channel, so the model can see where
values were missing.
"""

from __future__ import annotations

import bisect
from typing import Any

import torch
from torch import Tensor

from .interpolation import (
    check_series,
    hermite_cubic_coeffs,
    linear_knots,
    natural_cubic_coeffs,
    rectilinear_knots,
)

KINDS = ("linear", "rectilinear", "natural-cubic", "hermite-cubic")


class ControlPath:
    """Base class: a piecewise polynomial path on the increasing ``knots``."""

    knots: Tensor

    def __init__(self, knots: Tensor) -> None:
        self.knots = knots.to(torch.float64)
        self._knot_list = self.knots.tolist()

    @property
    def interval(self) -> tuple[float, float]:
        """``(first knot, last knot)``."""
        return self._knot_list[0], self._knot_list[-1]

    @property
    def channels(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def evaluate(self, t: Any) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def derivative(self, t: Any) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _piece(self, t: Any) -> tuple[Any, Any]:
        """The piece index and the offset of ``t`` from its left knot."""
        last = len(self._knot_list) - 2
        if not isinstance(t, Tensor):
            i = min(max(bisect.bisect_left(self._knot_list, float(t)) - 1, 0), last)
            return i, float(t) - self._knot_list[i]
        knots = self.knots.to(t.device)
        index = (torch.bucketize(t.detach().to(torch.float64).contiguous(), knots) - 1).clamp(0, last)
        return index, t - knots[index].to(t.dtype)

    @staticmethod
    def _take(coeff: Tensor, i: Any) -> Tensor:
        """``coeff[..., i, :]``; a ``(B,)`` index picks one piece per series."""
        if isinstance(i, Tensor) and i.ndim == 1:
            return coeff[torch.arange(i.numel(), device=coeff.device), i]
        return coeff[..., i, :]

    @staticmethod
    def _offset(s: Any, like: Tensor) -> Any:
        """The offset as a multiplier of ``(..., C)`` coefficients."""
        if isinstance(s, Tensor):
            s = s.to(like.dtype)
            return s.unsqueeze(-1) if s.ndim == 1 else s
        return s


class LinearPath(ControlPath):
    """The piecewise linear path through ``values`` (``(..., L, C)``) at ``knots`` (``(L,)``)."""

    def __init__(self, knots: Tensor, values: Tensor) -> None:
        super().__init__(knots)
        if values.shape[-2] != self.knots.numel():
            raise ValueError(f"values has {values.shape[-2]} knots (dim -2) but knots has "
                             f"{self.knots.numel()}")
        self.values = values
        h = (self.knots[1:] - self.knots[:-1]).to(values.dtype).unsqueeze(-1)
        self.slopes = (values[..., 1:, :] - values[..., :-1, :]) / h

    @property
    def channels(self) -> int:
        return int(self.values.shape[-1])

    def evaluate(self, t: Any) -> Tensor:
        i, s = self._piece(t)
        return self._take(self.values, i) + self._offset(s, self.values) * self._take(self.slopes, i)

    def derivative(self, t: Any) -> Tensor:
        i, _ = self._piece(t)
        return self._take(self.slopes, i)

    def select(self, index: Any) -> LinearPath:
        """The path of the series ``values[index]`` (first batch dim)."""
        return LinearPath(self.knots, self.values[index])


class CubicPath(ControlPath):
    """A piecewise cubic ``a + b s + two_c s^2 / 2 + three_d s^3 / 3`` (``s = t - knots[j]``)
    with coefficients ``(..., L - 1, C)`` (natural cubic or Hermite cubic splines)."""

    def __init__(self, knots: Tensor, a: Tensor, b: Tensor, two_c: Tensor, three_d: Tensor) -> None:
        super().__init__(knots)
        for name, v in (("a", a), ("b", b), ("two_c", two_c), ("three_d", three_d)):
            if v.shape != a.shape or v.shape[-2] != self.knots.numel() - 1:
                raise ValueError(f"{name} must have shape (..., {self.knots.numel() - 1}, C) like a, "
                                 f"got {tuple(v.shape)}")
        self.a, self.b, self.two_c, self.three_d = a, b, two_c, three_d

    @property
    def channels(self) -> int:
        return int(self.a.shape[-1])

    @property
    def coefficients(self) -> Tensor:
        """``(..., L - 1, 4 C)``: ``a, b, two_c, three_d`` side by side (torchcde's layout)."""
        return torch.cat([self.a, self.b, self.two_c, self.three_d], dim=-1)

    def select(self, index: Any) -> CubicPath:
        """The path of the series ``[index]`` (first batch dim)."""
        return CubicPath(self.knots, self.a[index], self.b[index], self.two_c[index], self.three_d[index])

    def evaluate(self, t: Any) -> Tensor:
        i, s = self._piece(t)
        s = self._offset(s, self.a)
        inner = 0.5 * self._take(self.two_c, i) + self._take(self.three_d, i) * s / 3
        return self._take(self.a, i) + (self._take(self.b, i) + inner * s) * s

    def derivative(self, t: Any) -> Tensor:
        i, s = self._piece(t)
        s = self._offset(s, self.a)
        return self._take(self.b, i) + (self._take(self.two_c, i) + self._take(self.three_d, i) * s) * s


def with_channels(times: Tensor, values: Tensor, mask: Tensor, *, time_channel: bool = True,
                  intensity: bool = True) -> tuple[Tensor, Tensor]:
    """The values (and mask) with time as channel 0 and the observational intensity appended.

    The time channel is observed up to each series' last observation and missing after it, so
    every interpolation holds it (and the path) constant there. The intensity channels are
    ``cumsum(mask) / L`` along time (Kidger et al. 2020, sec. 3.5, scaled by the number of time
    points ``L`` so they stay in [0, 1]), always observed."""
    parts, masks = [values], [mask]
    if time_channel:
        seen = mask.any(-1, keepdim=True)
        n = mask.shape[-2]
        last = torch.where(seen, torch.arange(n, device=mask.device).view(-1, 1), -1).amax(-2, keepdim=True)
        t = times.to(values.dtype).view(-1, 1).expand(seen.shape)
        alive = torch.arange(n, device=mask.device).view(-1, 1) <= last.clamp(min=0)
        parts.insert(0, t)
        masks.insert(0, alive)
    if intensity:
        parts.append(mask.to(values.dtype).cumsum(-2) / mask.shape[-2])
        masks.append(torch.ones_like(mask))
    return torch.cat(parts, -1), torch.cat(masks, -1)


def control_path(times: Tensor, values: Tensor, mask: Tensor | None = None, *,  # noqa: PLR0913
                 kind: str = "hermite-cubic", time_channel: bool = True,
                 intensity: bool = False) -> ControlPath:
    """A control path through an irregular, partially observed series.

    Args:
        times: ``(L,)`` strictly increasing observation times.
        values: ``(..., L, C)`` observations (any value where ``mask`` is False).
        mask: ``(..., L, C)`` bool, True where observed; required when ``values`` holds NaN.
        kind: ``"linear"``, ``"rectilinear"`` (knots ``0 .. 2L - 2``, needs ``time_channel``),
            ``"natural-cubic"`` or ``"hermite-cubic"`` (backward differences; the default, as
            Morrill et al. 2021 recommend for online use).
        time_channel: put time as channel 0 (Kidger et al. 2020: needed for the CDE to see the
            speed of the data).
        intensity: append the observational-intensity channels ``cumsum(mask) / L``.

    Returns:
        A :class:`LinearPath` or :class:`CubicPath` with ``C + time_channel + C * intensity``
        channels.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    mask = check_series(times, values, mask)
    values, mask = with_channels(times, values, mask, time_channel=time_channel, intensity=intensity)
    if kind == "linear":
        return LinearPath(times, linear_knots(times, values, mask))
    if kind == "rectilinear":
        if not time_channel:
            raise ValueError("kind='rectilinear' needs time_channel=True")
        mask = mask.clone()
        mask[..., 0] = True  # time keeps moving after the last observation: the values are held
        knots = rectilinear_knots(times, values, mask, time_index=0)
        return LinearPath(torch.arange(knots.shape[-2], dtype=torch.float64), knots)
    coeffs = natural_cubic_coeffs if kind == "natural-cubic" else hermite_cubic_coeffs
    return CubicPath(times, *coeffs(times, values, mask))


__all__ = ["KINDS", "ControlPath", "CubicPath", "LinearPath", "control_path", "with_channels"]

"""Coefficients of control paths through irregular, partially observed series.

Every function takes ``times`` (``(L,)``, strictly increasing), ``values`` (``(..., L, C)``) and
an optional boolean ``mask`` (``(..., L, C)``, True where a value was observed; without it every
value must be finite). Missing values are handled channel by channel, as in Kidger et al. (2020,
"Neural Controlled Differential Equations for Irregular Time Series", NeurIPS) and Morrill et al.
(2021, "Neural Controlled Differential Equations for Online Prediction Tasks", arXiv:2106.11028):

* :func:`linear_knots`: the knots of the piecewise linear interpolation, a missing value taken on
  the line between the neighbouring observations of its channel (the first/last observation
  before/after them);
* :func:`rectilinear_knots`: Morrill et al.'s rectilinear interpolation (time moves first with
  the values held, then the values jump with time held): ``2L - 1`` knots;
* :func:`hermite_cubic_coeffs`: cubic Hermite pieces whose knot slopes are backward differences
  (Morrill et al. 2021, sec. 3): C1, and causal except on the first piece;
* :func:`natural_cubic_coeffs`: the natural cubic spline through each channel's observations
  (the first and last observation extended to the ends as knots), written on the full grid.

Cubic coefficients come as ``(a, b, two_c, three_d)``, each ``(..., L - 1, C)``: on piece ``j``
the path is ``a + b s + two_c s^2 / 2 + three_d s^3 / 3`` with ``s = t - times[j]`` (torchcde's
layout, so coefficients can be compared with it directly).
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_series(times: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """Validate a series and return its mask (all True when ``mask`` is None).

    Raises ``ValueError``/``TypeError`` naming ``times``, ``values`` or ``mask``.
    """
    if not isinstance(times, Tensor) or times.ndim != 1 or times.numel() < 2:
        raise ValueError(f"times must be a 1-D tensor of at least 2 times, got "
                         f"{tuple(times.shape) if isinstance(times, Tensor) else type(times).__name__}")
    if not bool(torch.isfinite(times).all()):
        raise ValueError("times must be finite")
    steps = times[1:] - times[:-1]
    if not bool((steps > 0).all()):
        i = int((steps <= 0).nonzero()[0]) + 1
        raise ValueError(f"times must be strictly increasing: times[{i}] = {float(times[i]):.6g} <= "
                         f"times[{i - 1}] = {float(times[i - 1]):.6g}")
    if not isinstance(values, Tensor) or not values.is_floating_point() or values.ndim < 2:
        raise TypeError("values must be a floating tensor of shape (..., length, channels)")
    if values.shape[-2] != times.numel():
        raise ValueError(f"values has {values.shape[-2]} time points (dim -2) but times has "
                         f"{times.numel()}")
    if mask is None:
        if not bool(torch.isfinite(values).all()):
            raise ValueError("values contain NaN/inf but no mask was given: pass mask= (True where "
                             "a value was observed) to mark missing values")
        return torch.ones(values.shape, dtype=torch.bool, device=values.device)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != values.shape:
        raise ValueError(f"mask must be a bool tensor shaped like values {tuple(values.shape)}, got "
                         f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}"
                         f"{'' if not isinstance(mask, Tensor) else ' ' + str(mask.dtype)}")
    if not bool(torch.isfinite(values[mask]).all()):
        raise ValueError("values are NaN/inf where mask is True (observed values must be finite)")
    return mask


def _neighbours(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per entry along dim -2: the index of the last observation at or before it (-1 if none)
    and of the first at or after it (L if none)."""
    n = mask.shape[-2]
    idx = torch.arange(n, device=mask.device).view(-1, 1).expand(mask.shape)
    prev = torch.where(mask, idx, -1).cummax(dim=-2).values
    nxt = torch.where(mask, idx, n).flip(-2).cummin(dim=-2).values.flip(-2)
    return prev, nxt


def linear_knots(times: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
    """``(..., L, C)``: the values with each missing entry on the line between its channel's
    neighbouring observations (constant before the first and after the last; 0 for a channel
    never observed)."""
    mask = check_series(times, values, mask)
    n = mask.shape[-2]
    prev, nxt = _neighbours(mask)
    lo = torch.where(prev < 0, nxt, prev).clamp(max=n - 1)
    hi = torch.where(nxt >= n, prev, nxt).clamp(min=0)
    x = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    x_lo, x_hi = x.gather(-2, lo), x.gather(-2, hi)
    t = times.to(values.dtype).view(-1, 1)
    t_lo, t_hi = t[lo.flatten()].view(lo.shape), t[hi.flatten()].view(hi.shape)
    span = torch.where(hi > lo, t_hi - t_lo, torch.ones_like(t_hi))
    ratio = torch.where(hi > lo, (t.expand_as(t_lo) - t_lo) / span, torch.zeros_like(t_lo))
    filled = x_lo + ratio * (x_hi - x_lo)
    never = ~mask.any(-2, keepdim=True)
    return torch.where(mask, x, torch.where(never, torch.zeros_like(filled), filled))


def rectilinear_knots(times: Tensor, values: Tensor, mask: Tensor | None = None, *,
                      time_index: int = 0) -> Tensor:
    """``(..., 2L - 1, C)``: the knots whose linear interpolation (on knot times
    ``0, 1, ..., 2L - 2``) is Morrill et al.'s rectilinear path: from knot ``2i`` to ``2i + 1``
    only the time channel ``time_index`` moves, from ``2i + 1`` to ``2i + 2`` only the values.
    Missing values hold the last observation (the first one before any); the time channel must
    be observed everywhere."""
    mask = check_series(times, values, mask)
    c = values.shape[-1]
    if not isinstance(time_index, int) or not 0 <= time_index < c:
        raise ValueError(f"time_index must be an int in [0, {c - 1}], got {time_index!r}")
    if not bool(mask[..., time_index].all()):
        raise ValueError(f"the time channel (time_index={time_index}) must be observed at every time")
    prev, nxt = _neighbours(mask)
    held = torch.where(prev < 0, nxt, prev).clamp(max=mask.shape[-2] - 1)
    x = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    filled = torch.where(mask.any(-2, keepdim=True), x.gather(-2, held), torch.zeros_like(x))
    doubled = filled.repeat_interleave(2, dim=-2)
    doubled[..., :-1, time_index] = doubled[..., 1:, time_index].clone()
    return doubled[..., :-1, :]


def hermite_cubic_coeffs(times: Tensor, values: Tensor,
                         mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cubic Hermite coefficients with backward differences (Morrill et al. 2021): on piece
    ``j`` the path interpolates the linear knots ``x_j, x_{j+1}`` with slope ``d_{j-1}`` at
    ``t_j`` and ``d_j`` at ``t_{j+1}`` (``d_j`` the slope of piece ``j``, ``d_{-1} = d_0``)."""
    x = linear_knots(times, values, mask)
    h = (times[1:] - times[:-1]).to(x.dtype).unsqueeze(-1)
    d = (x[..., 1:, :] - x[..., :-1, :]) / h
    m = torch.cat([d[..., :1, :], d[..., :-1, :]], dim=-2)  # slope at the left knot of each piece
    # a + m s + c2 s^2 + c3 s^3 with c2 = 2 (d - m) / h, c3 = (m - d) / h^2
    return x[..., :-1, :], m, 4 * (d - m) / h, 3 * (m - d) / h**2


def _ends_filled(times: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Values and mask with the first observation of each channel copied to the times before it
    and the last to the times after it (as observations); never-observed channels become 0."""
    n = mask.shape[-2]
    prev, nxt = _neighbours(mask)
    before, after = prev < 0, nxt >= n
    src = torch.where(before, nxt, torch.where(after, prev, torch.arange(n, device=mask.device).view(-1, 1)))
    x = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    x = x.gather(-2, src.clamp(0, n - 1))
    never = ~mask.any(-2, keepdim=True)
    full = mask | before | after | never
    return torch.where(never, torch.zeros_like(x), x), full


def _tridiagonal(lower: Tensor, diag: Tensor, upper: Tensor, rhs: Tensor) -> Tensor:
    """Thomas' algorithm along the last dim (``lower[k]`` multiplies ``x[k - 1]``)."""
    n = diag.shape[-1]
    cp, rp = [upper[..., 0] / diag[..., 0]], [rhs[..., 0] / diag[..., 0]]
    for k in range(1, n):
        m = diag[..., k] - lower[..., k] * cp[-1]
        cp.append(upper[..., k] / m)
        rp.append((rhs[..., k] - lower[..., k] * rp[-1]) / m)
    out = [rp[-1]]
    for k in range(n - 2, -1, -1):
        out.append(rp[k] - cp[k] * out[-1])
    return torch.stack(out[::-1], dim=-1)


def natural_cubic_coeffs(times: Tensor, values: Tensor,
                         mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The natural cubic spline through each channel's observations (Kidger et al. 2020), with
    the first and last observation extended to the ends, written piece by piece on ``times``."""
    mask = check_series(times, values, mask)
    x, full = _ends_filled(times, values, mask)
    x, full = x.transpose(-1, -2), full.transpose(-1, -2)  # (..., C, L)
    n = full.shape[-1]
    order = torch.sort((~full).to(torch.int8), dim=-1, stable=True).indices  # observed first
    count = full.sum(-1, keepdim=True)
    k = torch.arange(n, device=x.device)
    tt = times.to(x.dtype)
    tau = tt[order]
    y = x.gather(-1, order)
    pad = k >= count
    last_tau = tau.gather(-1, (count - 1).clamp(min=0))
    tau = torch.where(pad, last_tau + (k - count + 1).to(x.dtype), tau)
    y = torch.where(pad, y.gather(-1, (count - 1).clamp(min=0)), y)
    valid = (k[:-1] + 1) < count  # piece k joins two observations
    h = tau[..., 1:] - tau[..., :-1]
    rh = torch.where(valid, 1 / h, torch.zeros_like(h))
    slope3 = 3 * (y[..., 1:] - y[..., :-1]) * rh**2
    zero = torch.zeros_like(rh[..., :1])
    diag = 2 * (torch.cat([zero, rh], -1) + torch.cat([rh, zero], -1))
    diag = torch.where(diag == 0, torch.ones_like(diag), diag)
    rhs = torch.cat([zero, slope3], -1) + torch.cat([slope3, zero], -1)
    kd = _tridiagonal(torch.cat([zero, rh], -1), diag, torch.cat([rh, zero], -1), rhs)
    dy = (y[..., 1:] - y[..., :-1]) * rh
    b0, b1 = kd[..., :-1], kd[..., 1:]
    two_c = (6 * dy - 4 * b0 - 2 * b1) * rh
    three_d = (-6 * dy + 3 * (b0 + b1)) * rh**2
    # piece p of the observations that contains grid interval j, re-centred at times[j]
    p = (full.cumsum(-1)[..., :-1] - 1).clamp(0, n - 2)
    a_, b_, c_, d_ = (v.gather(-1, p) for v in (y[..., :-1], b0, two_c, three_d))
    delta = tt[:-1] - tau[..., :-1].gather(-1, p)
    a = a_ + (b_ + (c_ / 2 + d_ / 3 * delta) * delta) * delta
    b = b_ + (c_ + d_ * delta) * delta
    c = c_ + 2 * d_ * delta
    return tuple(v.transpose(-1, -2) for v in (a, b, c, d_))  # type: ignore[return-value]


__all__ = ["check_series", "hermite_cubic_coeffs", "linear_knots", "natural_cubic_coeffs",
           "rectilinear_knots"]

"""Noise schedules: ``x_t = alpha(t) x_0 + sigma(t) eps``.

Every schedule gives ``alpha(t)``, ``sigma(t)``, the log signal-to-noise ratio
``lambda(t) = log(alpha / sigma)``, its inverse ``t_from_log_snr``, the time derivatives
``dalpha``/``dsigma`` (used to convert flow velocities), and the range ``[t_min, t_max]`` in
which the model may be evaluated. ``t_data = t_from_log_snr(+inf)`` is the time at which the
noise vanishes (the end point of sampling). All evaluations are float64.

``t`` is always the schedule's own time: integer-valued training steps ``0..N-1`` for
:class:`VPDiscreteSchedule` (as in diffusers), ``sigma`` for :class:`EDMSchedule` (as in
k-diffusion), ``t in [0, 1]`` for the continuous VP/VE schedules and rectified flow.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


def _f64(t) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class NoiseSchedule:
    """Base class. Subclasses implement ``alpha``, ``sigma``, ``t_from_log_snr`` and the
    derivatives; ``log_snr`` is derived."""

    t_min: float
    t_max: float

    def alpha(self, t) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sigma(self, t) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def log_snr(self, t) -> Tensor:
        """``lambda(t) = log(alpha(t) / sigma(t))``."""
        al, si = self.alpha_sigma(t)
        return torch.log(al) - torch.log(si)

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))`` together (one evaluation where a schedule can share work)."""
        t = _f64(t)
        return self.alpha(t), self.sigma(t)

    def t_from_log_snr(self, lam) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def dalpha(self, t) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def dsigma(self, t) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @functools.cached_property
    def t_data(self) -> float:
        """The time at which ``sigma = 0`` (may lie outside ``[t_min, t_max]``)."""
        return float(self.t_from_log_snr(torch.tensor(math.inf, dtype=torch.float64)))

    def prior_std(self) -> float:
        """Standard deviation ``sqrt(alpha^2 + sigma^2)`` at ``t_max`` for unit-variance data:
        ``sample`` scales unit Gaussian noise by it to form the initial state."""
        a, s = float(self.alpha(self.t_max)), float(self.sigma(self.t_max))
        return math.sqrt(a * a + s * s)

    def check_times(self, t: Tensor, name: str = "grid") -> None:
        """Raise unless every time lies in ``[t_min, t_max]`` or equals ``t_data``."""
        t = _f64(t)
        ok = ((t >= self.t_min - 1e-9) & (t <= self.t_max + 1e-9)) | (t == self.t_data)
        if not bool(ok.all()):
            bad = t[~ok][0].item()
            raise ValueError(
                f"{name} leaves the schedule's range: t={bad:.6g} is outside "
                f"[t_min={self.t_min:.6g}, t_max={self.t_max:.6g}] (and is not t_data={self.t_data:.6g})"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t_min={self.t_min:.4g}, t_max={self.t_max:.4g})"


class _VPSchedule(NoiseSchedule):
    """Variance preserving: ``alpha^2 + sigma^2 = 1``; subclasses give ``log_alpha(t)`` and its
    inverse and derivative."""

    def log_alpha(self, t) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def t_from_log_alpha(self, la) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def dlog_alpha(self, t) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def alpha(self, t):
        return torch.exp(self.log_alpha(_f64(t)))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(_f64(t))))

    def log_snr(self, t):
        la = self.log_alpha(_f64(t))
        return la - 0.5 * torch.log(-torch.expm1(2.0 * la))

    def alpha_sigma(self, t):
        la = self.log_alpha(_f64(t))
        return torch.exp(la), torch.sqrt(-torch.expm1(2.0 * la))

    def t_from_log_snr(self, lam):
        lam = _f64(lam)
        return self.t_from_log_alpha(-0.5 * torch.nn.functional.softplus(-2.0 * lam))

    def dalpha(self, t):
        t = _f64(t)
        return self.alpha(t) * self.dlog_alpha(t)

    def dsigma(self, t):
        t = _f64(t)
        a = self.alpha(t)
        return -a * self.dalpha(t) / self.sigma(t)


class VPDiscreteSchedule(_VPSchedule):
    """Discrete-time VP schedule of DDPM (Ho et al. 2020), in diffusers' time: steps ``0..N-1``.

    ``alpha_t^2 = alphas_cumprod[t]`` at integer ``t``; ``log alpha`` is interpolated linearly
    between integer steps (Lu et al. 2022, DPM-Solver, Appendix: discrete-time models). The
    range is extended to ``t = -1`` where ``alpha = 1, sigma = 0`` (diffusers' final
    ``alphas_cumprod = 1``), so ``t_data = -1``.

    Args:
        alphas_cumprod: 1-D tensor of the cumulative products ``prod(1 - beta)``.
    """

    def __init__(self, alphas_cumprod: Tensor) -> None:
        ac = _f64(alphas_cumprod).detach().cpu()
        if ac.ndim != 1 or ac.numel() < 2:
            raise ValueError("alphas_cumprod must be a 1-D tensor with at least 2 entries")
        if not bool(((ac > 0) & (ac < 1)).all()) or not bool((ac[1:] < ac[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing in (0, 1)")
        self.alphas_cumprod = ac
        self.num_train_timesteps = ac.numel()
        # knots at t = -1, 0, ..., N-1
        self._knots_t = torch.arange(-1, ac.numel(), dtype=torch.float64)
        self._knots_la = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * torch.log(ac)])
        self._knots_dla = self._knots_la[1:] - self._knots_la[:-1]
        self.t_min, self.t_max = 0.0, float(ac.numel() - 1)

    @classmethod
    def from_betas(cls, name: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02,
                   num_train_timesteps: int = 1000) -> VPDiscreteSchedule:
        """Betas by diffusers' names: ``linear``, ``scaled_linear``, ``squaredcos_cap_v2``.

        Betas are formed in float32 exactly as diffusers forms them (so that the schedule a model
        was trained with is reproduced bit for bit), then accumulated in float64.
        """
        n = int(num_train_timesteps)
        if n < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {n}")
        if name == "linear":
            betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
        elif name == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
        elif name == "squaredcos_cap_v2":
            # Nichol & Dhariwal (2021), eq. 17, with betas capped at 0.999.
            def abar(u):
                return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor(
                [min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=torch.float32
            )
        else:
            raise ValueError(
                f"unknown beta schedule {name!r}; choose from 'linear', 'scaled_linear', 'squaredcos_cap_v2'"
            )
        return cls(torch.cumprod(1.0 - betas.to(torch.float64), dim=0))

    def log_alpha(self, t):
        t = _f64(t)
        tc = t.clamp(-1.0, self.t_max)  # the knots' range (the knot differences are precomputed)
        i = torch.clamp(torch.floor(tc).long() + 1, 0, self.num_train_timesteps - 1)
        w = tc - self._knots_t[i]
        return self._knots_la[i] + w * self._knots_dla[i]

    def dlog_alpha(self, t):
        t = _f64(t)
        kt, kla = self._knots_t, self._knots_la
        i = torch.clamp(torch.floor(t.clamp(kt[0], kt[-1])).long() + 1, 0, kt.numel() - 2)
        return kla[i + 1] - kla[i]

    def t_from_log_alpha(self, la):
        la = _f64(la)
        kt, kla = self._knots_t, self._knots_la  # kla decreasing
        lac = la.clamp(kla[-1], kla[0])
        # index of the interval [kla[i+1], kla[i]] containing la
        neg = -kla
        i = torch.clamp(torch.searchsorted(neg, -lac, right=True) - 1, 0, kt.numel() - 2)
        w = (lac - kla[i]) / (kla[i + 1] - kla[i])
        return kt[i] + w

    def __repr__(self) -> str:
        return f"VPDiscreteSchedule(num_train_timesteps={self.num_train_timesteps})"


class VPLinearSchedule(_VPSchedule):
    """Continuous VP SDE with linear ``beta(t) = beta_min + t (beta_max - beta_min)``
    (Song et al. 2021, eq. 11): ``log alpha(t) = -t^2 (b1 - b0) / 4 - t b0 / 2``.

    Args:
        beta_min, beta_max: the SDE's betas (0.1, 20 as in Score SDE).
        t_min: smallest evaluation time (1e-3 as in Score SDE's sampling).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3,
                 t_max: float = 1.0) -> None:
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.t_min, self.t_max = float(t_min), float(t_max)

    def log_alpha(self, t):
        t = _f64(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def dlog_alpha(self, t):
        t = _f64(t)
        return -0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min

    def t_from_log_alpha(self, la):
        big_l = -2.0 * _f64(la)
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return 2.0 * big_l / (torch.sqrt(b0 * b0 + 2.0 * db * big_l) + b0)


class VPCosineSchedule(_VPSchedule):
    """Cosine VP schedule of Nichol & Dhariwal (2021), continuous in ``t``:
    ``alpha(t) = cos((t + s)/(1 + s) pi/2) / cos(s/(1 + s) pi/2)``.

    ``t_max`` defaults to 0.9946 as in DPM-Solver, where ``alpha`` is still well away from 0.
    """

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946) -> None:
        self.s = float(s)
        self.t_min, self.t_max = float(t_min), float(t_max)
        self._log_c0 = math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))

    def log_alpha(self, t):
        t = _f64(t)
        # clamp: rounding may put log alpha a hair above 0 at t = 0
        return (torch.log(torch.cos((t + self.s) / (1 + self.s) * math.pi / 2)) - self._log_c0).clamp(max=0.0)

    def dlog_alpha(self, t):
        t = _f64(t)
        u = (t + self.s) / (1 + self.s) * math.pi / 2
        return -torch.tan(u) * math.pi / (2 * (1 + self.s))

    @property
    def t_data(self) -> float:
        return 0.0

    def t_from_log_alpha(self, la):
        la = _f64(la)
        return 2 * (1 + self.s) / math.pi * torch.arccos(torch.exp(la + self._log_c0)) - self.s


class VESchedule(NoiseSchedule):
    """Variance exploding SDE (Song et al. 2021, eq. 9): ``alpha = 1``,
    ``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` for ``t in [t_min, 1]``. Its noise
    vanishes only as ``t -> -inf``, which is its ``t_data``."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5,
                 t_max: float = 1.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.t_min, self.t_max = float(t_min), float(t_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t):
        return torch.ones_like(_f64(t))

    def sigma(self, t):
        return self.sigma_min * torch.exp(_f64(t) * self._log_ratio)

    def t_from_log_snr(self, lam):
        return (-_f64(lam) - math.log(self.sigma_min)) / self._log_ratio

    def dalpha(self, t):
        return torch.zeros_like(_f64(t))

    def dsigma(self, t):
        return self.sigma(t) * self._log_ratio


class EDMSchedule(NoiseSchedule):
    """EDM (Karras et al. 2022): ``alpha = 1``, ``sigma = t``; the time is the noise level, as in
    k-diffusion. ``t_data = 0``."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.t_min, self.t_max = self.sigma_min, self.sigma_max

    def alpha(self, t):
        return torch.ones_like(_f64(t))

    def sigma(self, t):
        return _f64(t).clone()

    def t_from_log_snr(self, lam):
        return torch.exp(-_f64(lam))

    def dalpha(self, t):
        return torch.zeros_like(_f64(t))

    def dsigma(self, t):
        return torch.ones_like(_f64(t))


class RectifiedFlowSchedule(NoiseSchedule):
    """Linear interpolant of rectified flow / flow matching (Liu et al. 2022; Lipman et al.
    2023): ``x_t = (1 - t) x_0 + t eps``, ``t in [0, 1]``, ``t = 1`` pure noise, ``t_data = 0``.

    Args:
        t_min, t_max: evaluation range; log-SNR-based grids need ``0 < t_min`` and ``t_max < 1``.
    """

    def __init__(self, t_min: float = 0.0, t_max: float = 1.0) -> None:
        if not 0 <= t_min < t_max <= 1:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
        self.t_min, self.t_max = float(t_min), float(t_max)

    def alpha(self, t):
        return 1.0 - _f64(t)

    def sigma(self, t):
        return _f64(t).clone()

    def t_from_log_snr(self, lam):
        return torch.sigmoid(-_f64(lam))

    def dalpha(self, t):
        return -torch.ones_like(_f64(t))

    def dsigma(self, t):
        return torch.ones_like(_f64(t))


SCHEDULES = {
    "vp-discrete": VPDiscreteSchedule,
    "vp-linear": VPLinearSchedule,
    "vp-cosine": VPCosineSchedule,
    "ve": VESchedule,
    "edm": EDMSchedule,
    "rectified-flow": RectifiedFlowSchedule,
}

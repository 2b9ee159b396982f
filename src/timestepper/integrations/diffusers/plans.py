"""The grid a diffusers scheduler class steps on, per class family: its timesteps (what the
pipeline hands the model), our schedule's times where each step starts and ends, the class's
``sigmas`` attribute, the state space the pipeline's sample lives in, and ``init_noise_sigma``.

State spaces: ``"vp"`` — the sample is ``x = alpha x0 + sigma eps`` (DDPM, DDIM, PNDM, the
DPM-Solver/DEIS/UniPC family); ``"ve"`` — the sample is ``x / alpha = x0 + s eps`` with
``s = sigma / alpha`` (Euler, Euler-ancestral, LMS, Heun: k-diffusion's convention, hence
``scale_model_input`` dividing by ``sqrt(s^2 + 1)``); ``"flow"`` — ``x = (1 - s) x0 + s eps``
(FlowMatch*). The rules themselves are in :mod:`.spacing`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...diffusion.schedules import NoiseSchedule
from . import spacing as sp


@dataclass
class Plan:
    """One ``set_timesteps`` worth of grid.

    Attributes:
        timesteps: the model times the pipeline iterates over (int64 or float32).
        start: float64 times of our schedule where each step starts (``len(timesteps)``).
        end: float64 times where each step ends; ``end[i] == start[i + 1]`` except in classes
            that step to ``t - T // N`` whatever the spacing (DDIM), or ``nan`` for a zero-length
            step (the sample is returned unchanged).
        sigmas: the class's ``sigmas`` attribute (float32, with the final value) or ``None``.
        space: ``"vp"``, ``"ve"`` or ``"flow"`` (module docstring).
        init_noise_sigma: the class's ``init_noise_sigma``.
        label_of_sigma: the model timestep the class gives an evaluation between grid points at
            noise level ``s = sigma / alpha`` (KDPM2's midpoints: linear in ``log sigma`` between
            training steps), or ``None`` (our schedule's time).
        exposed_sigmas: the class's ``sigmas`` attribute where it is not the noise level of
            each evaluation (KDPM2 repeats the grid's sigmas), else ``None``.
        mid_timesteps: the model timestep of each step's second evaluation where the class
            computes it from its own float32 midpoint sigmas (KDPM2-ancestral: there the midpoint
            is the next grid sigma, but the class labels it by ``sigma_interpol``, unrounded),
            else ``None`` (:attr:`label_of_sigma` or the grid's timestep).
    """

    timesteps: Tensor
    start: Tensor
    end: Tensor
    sigmas: Tensor | None
    space: str
    init_noise_sigma: float
    label_of_sigma: Callable[[np.ndarray], np.ndarray] | None = None
    exposed_sigmas: Tensor | None = None
    mid_timesteps: Tensor | None = None

    @property
    def chained(self) -> bool:
        """Whether every step ends where the next starts (a multistep solver can run on it)."""
        return bool((self.end[:-1] == self.start[1:]).all()) and not bool(torch.isnan(self.end[-1]))


def _times_of_sigmas(schedule: NoiseSchedule, s: np.ndarray) -> Tensor:
    """Our schedule's times at noise levels ``s = sigma / alpha`` (``t_data`` at ``s = 0``)."""
    s64 = torch.as_tensor(np.asarray(s, dtype=np.float64))
    pos = s64 > 0
    t = schedule.t_from_log_snr(-torch.log(torch.where(pos, s64, torch.ones_like(s64))))
    return torch.where(pos, t, torch.full_like(t, schedule.t_data))


#: k-diffusion-style classes that round the timesteps of Karras sigmas to whole steps
ROUNDED_KARRAS_TIMESTEPS = ("KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler")


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def _integer_timesteps(cfg: dict[str, Any], n: int, custom: np.ndarray | None,
                       multistep: bool) -> np.ndarray:
    """Custom timesteps as given, else the config's spacing (float64 of whole steps)."""
    if custom is not None:
        return np.asarray(custom, dtype=np.float64)
    default = "linspace" if multistep else "leading"
    return sp.spaced_timesteps(cfg.get("timestep_spacing", default),
                               int(cfg.get("num_train_timesteps", 1000)), n,
                               int(cfg.get("steps_offset", 0)), multistep=multistep)


def discrete_plan(cfg: dict[str, Any], schedule: NoiseSchedule, n: int, class_name: str,
                  custom: np.ndarray | None = None) -> Plan:
    """DDPM and DDIM: integer timesteps; DDIM steps to ``t - T // N`` (to the final alpha below
    0: ``alpha = 1`` with ``set_alpha_to_one``, else step 0), DDPM to the next timestep."""
    T = int(cfg.get("num_train_timesteps", 1000))
    ts = _integer_timesteps(cfg, n, custom, multistep=False)
    start = torch.as_tensor(ts.copy())
    final = schedule.t_data
    if class_name == "DDIMScheduler":
        if not cfg.get("set_alpha_to_one", True):
            final = 0.0
        end = start - T // len(ts)
        end = torch.where(end < 0, torch.full_like(end, final), end)
        end = torch.where(end == start, torch.full_like(end, math.nan), end)
    else:
        if class_name == "PNDMScheduler" and not cfg.get("set_alpha_to_one", False):
            final = 0.0
        end = torch.cat([start[1:], torch.tensor([final], dtype=torch.float64)])
        if end[-1] == start[-1]:
            raise ValueError(f"{class_name} ending at timestep 0 with set_alpha_to_one=False "
                             "(a zero-length last step) is not reproduced; use steps_offset=1")
    return Plan(torch.as_tensor(ts.astype(np.int64)), start, end, None, "vp", 1.0)


CONVERSIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas")


def _converted(cfg: dict[str, Any], s: np.ndarray, n: int, train: np.ndarray,
               bounds_from_train: bool) -> tuple[np.ndarray, bool]:
    """Karras / exponential / beta sigmas, or DPM-Solver's uniform log-SNR ``use_lu_lambdas``,
    when the config asks (``bounds_from_train``: span the training sigmas, as the multistep
    family does; else the given list's ends; ``sigma_min``/``sigma_max`` of the config win)."""
    kind = next((k for k in CONVERSIONS if cfg.get(k)), None)
    if kind is None:
        return s, False
    hi, lo = (float(train[-1]), float(train[0])) if bounds_from_train else (float(s[0]), float(s[-1]))
    if kind == "use_lu_lambdas":  # uniform in log sigma over the training range, no overrides
        return sp.exponential_sigmas(hi, lo, n), True
    hi = float(cfg["sigma_max"]) if cfg.get("sigma_max") is not None else hi
    lo = float(cfg["sigma_min"]) if cfg.get("sigma_min") is not None else lo
    convert = {"use_karras_sigmas": sp.karras_sigmas, "use_exponential_sigmas": sp.exponential_sigmas,
               "use_beta_sigmas": sp.beta_sigmas}[kind]
    return convert(hi, lo, n), True


def _final_sigma(cfg: dict[str, Any], train: np.ndarray, default: str) -> float:
    kind = cfg.get("final_sigmas_type", default) or default
    if kind not in ("zero", "sigma_min"):
        raise ValueError(f"final_sigmas_type={kind!r} is not one of 'zero', 'sigma_min'")
    return 0.0 if kind == "zero" else float(train[0])


def _sigma_plan(schedule: NoiseSchedule, ts: np.ndarray, s: np.ndarray, last: float,
                space: str, timestep_dtype: torch.dtype, init_noise_sigma: float) -> Plan:
    sig = _f32(np.concatenate([s, [last]]))
    times = _times_of_sigmas(schedule, sig)
    return Plan(torch.as_tensor(ts).to(timestep_dtype), times[:-1].clone(), times[1:].clone(),
                torch.as_tensor(sig, dtype=torch.float32), space, init_noise_sigma)


def _k_sigmas(cfg: dict[str, Any], n: int, train: np.ndarray,
              custom: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Timesteps and sigmas (without the final one) of the k-diffusion-style classes."""
    T = int(cfg.get("num_train_timesteps", 1000))
    if custom is not None:
        ts = _f32(custom)
    else:
        ts = sp.spaced_timesteps(cfg.get("timestep_spacing", "linspace"), T, n,
                                 int(cfg.get("steps_offset", 0)), multistep=False, integral=False)
    s = sp.sigmas_at(ts, train)
    if cfg.get("interpolation_type", "linear") == "log_linear":
        s = np.exp(np.linspace(math.log(train[-1]), math.log(train[0]), n + 1))[::-1][:n].copy()
    s, converted = _converted(cfg, s, n, train, bounds_from_train=False)
    if converted:
        ts = sp.timestep_of_sigma(s, train)
        if cfg.get("use_karras_sigmas") and cfg.get("_class_name") in ROUNDED_KARRAS_TIMESTEPS:
            ts = ts.round()
    return ts, s


def k_plan(cfg: dict[str, Any], schedule: NoiseSchedule, n: int, train: np.ndarray,  # noqa: PLR0913 - set_timesteps' options
           custom: np.ndarray | None = None, sigmas: np.ndarray | None = None) -> Plan:
    """Euler, Euler-ancestral, LMS, Heun: fractional timesteps, sigmas linear in sigma between
    training steps, the sample scaled by ``1 / alpha`` (state space ``"ve"``); custom
    ``timesteps``, or custom ``sigmas`` (with their final value)."""
    spacing = cfg.get("timestep_spacing", "linspace")
    if sigmas is not None:
        sig = _f32(sigmas)
        s, last, ts = sig[:-1], float(sig[-1]), sp.timestep_of_sigma(sig[:-1], train)
    else:
        ts, s = _k_sigmas(cfg, n, train, custom)
        last = _final_sigma(cfg, train, "zero")
    s_max = float(np.float32(max(s.max(), last)))
    init = s_max if spacing in ("linspace", "trailing") else math.sqrt(s_max**2 + 1)
    if cfg.get("timestep_type", "discrete") == "continuous" and cfg.get("prediction_type") == "v_prediction":
        ts = 0.25 * np.log(_f32(s))
    converted = sigmas is None and any(cfg.get(k) for k in CONVERSIONS)
    wide = converted and cfg.get("_class_name") in ROUNDED_KARRAS_TIMESTEPS  # float64 there
    plan = _sigma_plan(schedule, ts, s, last, "ve", torch.float64 if wide else torch.float32, init)
    plan.label_of_sigma = lambda sig: sp.timestep_of_sigma(sig, train)
    return plan


def multistep_plan(cfg: dict[str, Any], schedule: NoiseSchedule, n: int, class_name: str,
                   train: np.ndarray, custom: np.ndarray | None = None) -> Plan:
    """DPM-Solver (multistep, singlestep), DEIS, UniPC: the multistep spacings of
    :mod:`.spacing`, sigmas at integer timesteps (or Karras/exponential sigmas at rounded
    timesteps), the sample unscaled (``"vp"``)."""
    ts = _integer_timesteps(cfg, n, custom, multistep=True)
    s = sp.sigmas_at(ts, train)
    s, converted = _converted(cfg, s, n, train, bounds_from_train=True)
    if converted:
        ts = sp.timestep_of_sigma(s, train)
        rounded = cfg.get("use_karras_sigmas") or cfg.get("use_lu_lambdas")
        if rounded and cfg.get("beta_schedule") != "squaredcos_cap_v2":
            ts = ts.round()
    default_final = "sigma_min" if class_name == "DEISMultistepScheduler" else "zero"
    last = _final_sigma(cfg, train, default_final)
    return _sigma_plan(schedule, ts, s, last, "vp", torch.int64, 1.0)


def flow_plan(cfg: dict[str, Any], schedule: NoiseSchedule, n: int,
              sigmas: np.ndarray | None = None, mu: float | None = None) -> Plan:
    """FlowMatch Euler/Heun: ``sigma`` from ``sigma_max`` to ``sigma_min`` of the shifted
    training sigmas, shifted again (static ``shift``) or by ``mu`` (dynamic shifting), timesteps
    ``sigma * T``, the final sigma 0."""
    T = int(cfg.get("num_train_timesteps", 1000))
    shift = float(cfg.get("shift", 1.0))
    dynamic = bool(cfg.get("use_dynamic_shifting", False))
    if dynamic and mu is None:
        raise ValueError("use_dynamic_shifting=True needs set_timesteps(..., mu=...)")
    if sigmas is None:
        top, bottom = 1.0, 1.0 / T
        if not dynamic:
            top, bottom = (float(np.float32(v)) for v in sp.flow_shift(np.array([top, bottom]), shift))
        base = np.linspace(np.float32(top) * T, np.float32(bottom) * T, n) / T
    else:
        base = _f32(sigmas)
    if dynamic and mu is not None:
        kind = cfg.get("time_shift_type", "exponential")
        s = (sp.exponential_time_shift if kind == "exponential" else sp.linear_time_shift)(float(mu), base)
    else:
        s = sp.flow_shift(base, shift)
    s, _ = _converted(cfg, s, len(s), s, bounds_from_train=False)
    s = _f32(s)
    t = torch.as_tensor(np.concatenate([s, [0.0]]))
    ts = torch.as_tensor(s, dtype=torch.float32) * T
    return Plan(ts, t[:-1].clone(), t[1:].clone(), t.to(torch.float32), "flow", 1.0)

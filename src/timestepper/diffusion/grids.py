"""Time grids for sampling.

A grid is built in two parts: a *spacing* that places ``n`` times in ``[t_min, t_max]`` (from noise
to data, both ends included), and the *final step* rule:

* ``final="zero"`` (default): ``steps + 1`` points span the range; the model is evaluated at the
  first ``steps`` of them and the last step goes from there to ``sigma = 0`` (``t_data``) instead
  of to ``t_min``. The last evaluation is thus one grid spacing above ``t_min`` (sigma/alpha ~ 0.03
  at 10 steps on a uniform log-SNR grid of Stable Diffusion's schedule, against ~0.34 with
  diffusers' default ``linspace`` spacing), and no model call is spent at ``t_min``, where it buys
  almost nothing: on the benchmark mixtures this beats evaluating down to ``t_min`` at every NFE
  from 5 to 20, for every multistep solver tried.
* ``final="sigma_min"``: ``steps + 1`` points span the range; the last step ends at ``t_min``.

An explicit tensor of times is the list of model-evaluation times; the end point is appended
unless the tensor already ends there.

Spacings: ``uniform`` in ``t``, ``logsnr`` (uniform in ``lambda``; Lu et al. 2022),
``karras`` (Karras et al. 2022, eq. 5, ``rho = 7``), ``quadratic`` (Song et al. 2021, DDIM
Appendix D.2), ``sigmoid``, and diffusers' ``linspace`` / ``leading`` / ``trailing`` spacings of
integer timesteps for discrete schedules.

``sigmoid``: with the uniform ramp ``u`` from 1 to 0 and ``g(u) = 1 / (1 + e^{-scale (u - 1/2)})``,
``t = t_min + (t_max - t_min) (g(u) - g(0)) / (g(1) - g(0))``: a logistic curve of the ramp,
normalised to the range, dense at both ends (``scale`` sets the steepness, default 6). This is
our own spacing, not Lumina-Next's (Zhuo et al. 2024): the paper's formula for its "sigmoid time
discretization" was not readable from here. Its released sampler (``lumina_next_t2i`` and
``lumina_next_t2i_mini``, ``time_shifting_factor``) changes the uniform grid only by the time
shift below, which is itself logistic in logit time: ``s' = sigmoid(logit(s) - log shift)`` in its
time ``s`` (0 = noise). ``grid="uniform", shift=k`` on a flow schedule, with ``steps`` one fewer than its
``num_steps`` (it counts points), reproduces that grid.

Any spacing takes ``shift``: the flow time shift ``t' = shift t / (1 + (shift - 1) t)`` (Esser et
al. 2024, SD3, eq. 23) applied on the range normalised to ``[0, 1]`` (noise at 1). Lumina-Next's
released sampler applies the same map in its own time ``s = 1 - t`` (0 = noise):
``s' = s / (s + shift - shift s)``, i.e. ``1 - s' = shift (1 - s) / (1 + (shift - 1)(1 - s))``.

``shift="resolution"`` makes it resolution-aware (:func:`resolution_shift`): with
``grid_options={"tokens": m, "base_tokens": n}`` the factor is ``sqrt(m / n)``, SD3's rule
(Esser et al. 2024, Sec. 5.3.2: a time ``t_n`` at resolution ``n`` has the same uncertainty as
``t_m = sqrt(m/n) t_n / (1 + (sqrt(m/n) - 1) t_n)`` at resolution ``m``, ``n, m`` the numbers of
pixels -- equivalently of latent tokens, which grow with them). Lumina-Next's released sampler
takes the factor as a user setting (``time_shifting_factor``, applied with the map above; higher
for higher resolutions); the resolution rule used here to set it is SD3's, the only closed form
we could verify.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.validation import check_int
from .schedules import NoiseSchedule, VPDiscreteSchedule

FINALS = ("zero", "sigma_min")


@dataclass
class SamplingGrid:
    """Float64 grid of ``N + 1`` points: the times and the schedule at them.

    ``t[:-1]`` are where steps start (the model is evaluated there); ``t[-1]`` is the end.
    ``model_t`` is ``None`` except on grids built by :meth:`with_model_times`, a compatibility
    constructor for reproducing peers that evaluate the network at a time other than the one whose
    ``alpha, sigma`` they step with.
    """

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    log_snr: Tensor
    model_t: Tensor | None = None

    @classmethod
    def from_times(cls, schedule: NoiseSchedule, t: Tensor) -> SamplingGrid:
        t = torch.as_tensor(t, dtype=torch.float64)
        is_end = t == schedule.t_data
        al, si = schedule.alpha_sigma(torch.where(is_end, t[0], t))
        al = torch.where(is_end, schedule.alpha(schedule.t_data), al)
        si = torch.where(is_end, torch.zeros_like(t), si)
        lam = torch.log(al) - torch.log(si)  # +inf where sigma = 0
        return cls(t=t, alpha=al, sigma=si, log_snr=lam)

    @classmethod
    def with_model_times(cls, schedule: NoiseSchedule, sigmas: Tensor, model_t: Tensor) -> SamplingGrid:
        """Peer-compatibility grid: step with the noise levels ``sigmas`` but call the network at
        ``model_t``.

        ``sigmas`` are the noise levels of the scaled state, ``s = sigma / alpha`` (the ``sigmas``
        of k-diffusion and of diffusers' schedulers), from noise to data, the last one may be 0.
        ``model_t`` holds the time handed to the network at each of ``sigmas[:-1]``. This is how
        diffusers' ``use_karras_sigmas=True`` works (it steps with the Karras sigmas but evaluates
        the model at the timestep rounded to an integer) and how ``LMSDiscreteScheduler`` works
        (sigma interpolated linearly between integer steps while the model gets the fractional
        timestep). Our own grids never do this: they evaluate the model exactly at the step's time.
        """
        s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
        mt = torch.as_tensor(model_t, dtype=torch.float64).flatten()
        if mt.numel() != s.numel() - 1:
            raise ValueError(f"model_t must have one time per step start: {s.numel() - 1}, got {mt.numel()}")
        if not bool((s[1:] < s[:-1]).all()) or not bool((s >= 0).all()):
            raise ValueError("sigmas must be >= 0 and strictly decreasing (from noise to data)")
        lam = torch.where(s > 0, -torch.log(s), torch.full_like(s, math.inf))
        t = torch.where(s > 0, schedule.t_from_log_snr(lam), torch.full_like(s, schedule.t_data))
        grid = cls.from_times(schedule, t)
        grid.model_t = torch.cat([mt, t[-1:]])
        return grid

    def points(self, start: int, stop: int | None = None) -> SamplingGrid:
        """The sub-grid of points ``start .. stop - 1`` (Python slice semantics on the points)."""
        sl = slice(start, stop)
        mt = None if self.model_t is None else self.model_t[sl]
        return SamplingGrid(self.t[sl], self.alpha[sl], self.sigma[sl], self.log_snr[sl], mt)

    @property
    def steps(self) -> int:
        return self.t.numel() - 1

    def __len__(self) -> int:
        return self.t.numel()


def _uniform(schedule, n, **_):
    return torch.linspace(schedule.t_max, schedule.t_min, n, dtype=torch.float64)


def _logsnr(schedule, n, **_):
    lo, hi = schedule.log_snr(schedule.t_max), schedule.log_snr(schedule.t_min)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(
            "the log-SNR grid needs a finite log-SNR at t_min and t_max; "
            f"this schedule has lambda(t_max)={float(lo)}, lambda(t_min)={float(hi)} "
            "(for rectified flow pass t_min > 0 and t_max < 1 to the schedule)"
        )
    t = schedule.t_from_log_snr(torch.linspace(float(lo), float(hi), n, dtype=torch.float64))
    t[0], t[-1] = schedule.t_max, schedule.t_min
    return t


def _karras(schedule, n, rho: float = 7.0, **_):
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    s_max = float(torch.exp(-schedule.log_snr(schedule.t_max)))
    s_min = float(torch.exp(-schedule.log_snr(schedule.t_min)))
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    t = schedule.t_from_log_snr(-torch.log(s))
    t[0], t[-1] = schedule.t_max, schedule.t_min
    return t


def _quadratic(schedule, n, **_):
    u = torch.linspace(1, 0, n, dtype=torch.float64)
    return schedule.t_min + (schedule.t_max - schedule.t_min) * u**2


def _sigmoid(schedule, n, scale: float = 6.0, **_):
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    u = torch.linspace(1, 0, n, dtype=torch.float64)
    g = torch.sigmoid(scale * (u - 0.5))
    lo, hi = math.exp(-scale / 2) / (1 + math.exp(-scale / 2)), 1 / (1 + math.exp(-scale / 2))
    return schedule.t_min + (schedule.t_max - schedule.t_min) * (g - lo) / (hi - lo)



def default_spacing(schedule: NoiseSchedule) -> str:
    """``"logsnr"`` where the schedule's log-SNR is finite at both ends of its range, else
    ``"uniform"`` (a rectified flow whose range reaches pure noise or the data)."""
    ends = (schedule.log_snr(schedule.t_max), schedule.log_snr(schedule.t_min))
    return "logsnr" if all(math.isfinite(float(v)) for v in ends) else "uniform"


SPACINGS = {
    "uniform": _uniform,
    "logsnr": _logsnr,
    "karras": _karras,
    "quadratic": _quadratic,
    "sigmoid": _sigmoid,
}
DIFFUSERS_SPACINGS = ("linspace", "leading", "trailing")
# The options each named spacing takes (grid_options): anything else is refused, never ignored.
SPACING_OPTIONS: dict[str, tuple[str, ...]] = {
    "uniform": (), "logsnr": (), "karras": ("rho",), "quadratic": (), "sigmoid": ("scale",),
    **{name: ("steps_offset",) for name in DIFFUSERS_SPACINGS},
}


RESOLUTION_OPTIONS = ("tokens", "base_tokens")


def resolution_shift(tokens: float, base_tokens: float) -> float:
    """The resolution-aware flow time shift ``sqrt(tokens / base_tokens)`` (Esser et al. 2024,
    SD3, Sec. 5.3.2; the factor Lumina-Next's sampler applies is set by hand): ``tokens`` is the
    number of image tokens (or pixels) to sample, ``base_tokens`` that of the resolution the
    model's grid was set for (shift 1 there)."""
    for name, v in (("tokens", tokens), ("base_tokens", base_tokens)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name} must be a number > 0, got {v!r}")
    return math.sqrt(float(tokens) / float(base_tokens))


def check_grid_options(grid: object, options: dict, shift: float | str | None) -> None:
    """Refuse options the grid does not use: unknown names, options for an explicit grid, and
    ``shift`` where it is not applied (explicit grids, diffusers' integer spacings);
    ``shift="resolution"`` needs ``tokens`` and ``base_tokens``."""
    named = isinstance(grid, str)
    takes = SPACING_OPTIONS.get(grid, ()) if named else ()  # type: ignore[call-overload]
    if shift == "resolution":
        missing = [k for k in RESOLUTION_OPTIONS if k not in options]
        if missing:
            raise ValueError(f'shift="resolution" needs grid_options {missing} (the image token counts)')
        takes = (*takes, *RESOLUTION_OPTIONS)
    elif isinstance(shift, str):
        raise ValueError(f'shift must be a number > 0 or "resolution", got {shift!r}')
    unused = sorted(set(options) - set(takes))
    what = f"grid {grid!r}" if named else "an explicit grid"
    if unused:
        allowed = f"it takes: {', '.join(takes)}" if takes else "it takes none"
        raise ValueError(f"grid options {unused} are not used by {what} ({allowed})")
    if shift is not None and (not named or grid in DIFFUSERS_SPACINGS):
        raise ValueError(f"shift is not applied to {what}: shift the times yourself or use a named "
                         f"spacing ({', '.join(k for k in SPACING_OPTIONS if k not in DIFFUSERS_SPACINGS)})")


def diffusers_timesteps(num_train_timesteps: int, steps: int, spacing: str, steps_offset: int = 0) -> Tensor:
    """The integer timesteps diffusers' schedulers use (``timestep_spacing``), noise to data."""
    T = int(num_train_timesteps)
    if spacing == "linspace":
        ts = torch.linspace(0, T - 1, steps + 1, dtype=torch.float64).round().flip(0)[:-1]
    elif spacing == "leading":
        ts = (torch.arange(0, steps, dtype=torch.float64) * (T // steps)).round().flip(0) + steps_offset
    elif spacing == "trailing":
        ts = torch.round(torch.arange(T, 0, -T / steps, dtype=torch.float64)) - 1
    else:
        raise ValueError(f"unknown diffusers spacing {spacing!r}; choose from {DIFFUSERS_SPACINGS}")
    return ts


def _shift(t: Tensor, schedule: NoiseSchedule, shift: float) -> Tensor:
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    span = schedule.t_max - schedule.t_min
    u = (t - schedule.t_min) / span
    return schedule.t_min + span * shift * u / (1 + (shift - 1) * u)


def _explicit_times(grid: Tensor | list | tuple, end: float) -> Tensor:
    """Model-evaluation times given by the user, with the end point appended unless present."""
    times = torch.as_tensor(grid, dtype=torch.float64).flatten()
    if times.numel() < 1:
        raise ValueError("an explicit grid needs at least one time")
    if times.numel() == 1 or float(times[-1]) != end:
        times = torch.cat([times, torch.tensor([end], dtype=torch.float64)])
    return times


def _named_times(schedule: NoiseSchedule, steps: int, grid: str, end: float,
                 shift: float | str | None, options: dict) -> Tensor:
    """The ``steps + 1`` times of a named spacing, ending at ``end``."""
    if grid in DIFFUSERS_SPACINGS:
        if not isinstance(schedule, VPDiscreteSchedule):
            raise ValueError(f"grid {grid!r} (diffusers spacing) needs a VPDiscreteSchedule")
        times = diffusers_timesteps(schedule.num_train_timesteps, steps, grid, **options)
        return torch.cat([times, torch.tensor([end], dtype=torch.float64)])
    if grid not in SPACINGS:
        names = list(SPACINGS) + list(DIFFUSERS_SPACINGS)
        raise ValueError(f"unknown grid {grid!r}; choose from {', '.join(names)} or pass a tensor")
    factor = shift
    if shift == "resolution":
        factor = resolution_shift(options.pop("tokens"), options.pop("base_tokens"))
    times = SPACINGS[grid](schedule, steps + 1, **options)
    if factor is not None:
        times = _shift(times, schedule, float(factor))
    if end == schedule.t_data:
        times[-1] = end  # the last step goes on to zero noise instead of t_min
    return times


def make_grid(schedule: NoiseSchedule, steps: int, grid: str | Tensor = "logsnr",
              final: str = "zero", shift: float | str | None = None, **options) -> SamplingGrid:
    """Build the :class:`SamplingGrid` for ``steps`` steps.

    Args:
        schedule: the noise schedule.
        steps: number of steps (>= 1).
        grid: a spacing name (``uniform``, ``logsnr``, ``karras``, ``quadratic``, ``sigmoid``,
            or for discrete schedules ``linspace``/``leading``/``trailing``), a 1-D tensor of
            model-evaluation times ordered from noise to data, or a ready :class:`SamplingGrid`
            (returned as is; ``steps`` and ``final`` are then ignored).
        final: ``"zero"`` (default) or ``"sigma_min"``; see the module docstring.
        shift: optional flow time shift factor, or ``"resolution"`` for
            :func:`resolution_shift` of the options ``tokens`` and ``base_tokens``.
        options: spacing options (``rho`` for karras, ``scale`` for sigmoid; ``tokens``,
            ``base_tokens`` with ``shift="resolution"``).
    """
    if final not in FINALS:
        raise ValueError(f"unknown final {final!r}; choose from {', '.join(FINALS)}")
    if isinstance(grid, SamplingGrid):
        return grid
    if isinstance(grid, str) and grid not in SPACING_OPTIONS:
        raise ValueError(f"unknown grid {grid!r}; choose from {', '.join(SPACING_OPTIONS)} or pass a tensor")
    check_grid_options(grid, options, shift)
    end = schedule.t_data if final == "zero" else schedule.t_min
    if isinstance(grid, (Tensor, list, tuple)):
        times = _explicit_times(grid, end)
    else:
        steps = check_int(steps, "steps", 1)
        if not isinstance(grid, str):
            raise TypeError(f"grid must be a name or a 1-D tensor of times, got {type(grid).__name__}")
        times = _named_times(schedule, steps, grid, end, shift, options)
    d = times[1:] - times[:-1]
    if not bool((d < 0).all()):
        raise ValueError("grid must be strictly decreasing in time (from noise to data)")
    schedule.check_times(times)
    return SamplingGrid.from_times(schedule, times)

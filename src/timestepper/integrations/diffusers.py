"""Interop with diffusers: its models as :class:`Denoiser` s, and our solvers as a scheduler.

* :func:`schedule_from_config` reads a diffusers scheduler config (``num_train_timesteps``,
  ``beta_schedule``, ``beta_start``, ``beta_end``, ``trained_betas``) into a
  :class:`~timestepper.diffusion.schedules.VPDiscreteSchedule`.
* :func:`denoiser_from_diffusers` wraps a ``UNet2DModel`` (or any
  module called as ``unet(x, t, **kw)`` returning a tensor or an object with ``.sample``).
* :class:`Scheduler` speaks diffusers' ``set_timesteps`` / ``step`` protocol, so a pipeline can run
  any of our one-evaluation-per-step solvers::

      pipe.scheduler = Scheduler.from_config(pipe.scheduler.config, solver="dpmpp-2m")

  The scheduler replays the model output the pipeline hands to ``step`` into the solver: the
  solver's ``step`` runs unchanged, and asks the diffusion term for exactly one model output at
  the state the pipeline evaluated. Solvers that need more than one evaluation per step (Heun) do
  not fit this protocol and are refused with an error naming the ones that do.

diffusers is not imported by this module; it is only needed to run a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.solver import Solver
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import SamplingGrid, make_grid
from ..diffusion.predictions import canonical_prediction
from ..diffusion.schedules import VPDiscreteSchedule
from ..diffusion.term import DiffusionTerm
from ..solvers.registry import available, get

_PREDICTIONS = ("epsilon", "sample", "v_prediction")


def _as_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "config") and not isinstance(config, dict):
        config = config.config
    try:
        return dict(config)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"expected a diffusers scheduler or its config, got {type(config).__name__}"
        ) from e


def schedule_from_config(config: Any) -> VPDiscreteSchedule:
    """The :class:`VPDiscreteSchedule` of a diffusers DDPM-family scheduler (or its config)."""
    cfg = _as_dict(config)
    if cfg.get("rescale_betas_zero_snr"):
        raise ValueError(
            "rescale_betas_zero_snr=True gives alphas_cumprod = 0 at the last step, "
            "which a VPDiscreteSchedule cannot represent"
        )
    n = int(cfg.get("num_train_timesteps", 1000))
    betas = cfg.get("trained_betas")
    if betas is not None:
        b = torch.as_tensor(betas, dtype=torch.float32).to(torch.float64)
        return VPDiscreteSchedule(torch.cumprod(1.0 - b, dim=0))
    return VPDiscreteSchedule.from_betas(
        cfg.get("beta_schedule", "linear"),
        float(cfg.get("beta_start", 1e-4)),
        float(cfg.get("beta_end", 0.02)),
        n,
    )


def prediction_from_config(config: Any) -> str:
    kind = _as_dict(config).get("prediction_type", "epsilon")
    if kind not in _PREDICTIONS:
        raise ValueError(
            f"unsupported diffusers prediction_type {kind!r}; supported: {', '.join(_PREDICTIONS)}"
        )
    return canonical_prediction(kind)


class _DiffusersModel:
    """``unet(x, t, **kw)`` -> tensor; keeps the first ``C`` channels of learned-variance models."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        out = self.unet(x, t, **kwargs)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim == x.ndim and out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]  # variance_type="learned"/"learned_range": mean part
        return out


def denoiser_from_diffusers(
    unet: Any, scheduler_or_config: Any, model_kwargs: dict[str, Any] | None = None
) -> Denoiser:
    """A :class:`Denoiser` over a diffusers UNet with the schedule and prediction type of a
    scheduler (or its config). ``t`` reaches the UNet in diffusers' timestep units."""
    if not callable(unet):
        raise TypeError(f"unet must be callable, got {type(unet).__name__}")
    return Denoiser(
        _DiffusersModel(unet),
        schedule_from_config(scheduler_or_config),
        prediction_from_config(scheduler_or_config),
        model_kwargs=model_kwargs,
    )


class _Config(dict):
    """A dict with attribute access, like diffusers' ``FrozenDict``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


@dataclass
class SchedulerOutput:
    """What ``step`` returns: the state after the step, as diffusers' ``prev_sample``."""

    prev_sample: Tensor


class _Replay:
    """Model function returning the output the pipeline passed to ``step``, exactly once."""

    def __init__(self) -> None:
        self.pending: Tensor | None = None
        self.at: Tensor | None = None

    def __call__(self, x: Tensor, t: Tensor, **_: Any) -> Tensor:
        if self.pending is None:
            raise RuntimeError(
                "the solver asked for a second model evaluation within one step; the "
                "diffusers step protocol supplies one per step"
            )
        if x is not self.at:
            raise RuntimeError(
                "the solver evaluated the model at a state other than the sample the pipeline "
                "evaluated it at; this solver cannot run under the diffusers step protocol"
            )
        out, self.pending, self.at = self.pending, None, None
        return out


def _fits_step_protocol(solver: Solver) -> bool:
    """A fixed-grid diffusion solver with one model evaluation per step."""
    return solver.family == "diffusion" and solver.nfe_per_step == 1 and solver.error_order is None


def single_evaluation_solvers() -> list[str]:
    """Registry names of solvers usable through :class:`Scheduler` (one evaluation per step)."""
    return [name for name in available("diffusion") if _fits_step_protocol(get(name))]


class Scheduler:
    """A diffusers-compatible scheduler backed by a timestepper solver.

    Build it with :meth:`from_config`. The pipeline calls ``set_timesteps(n)``, then for each
    ``t`` in ``timesteps``: ``model_output = unet(scale_model_input(x, t), t)`` and
    ``x = step(model_output, t, x).prev_sample``.

    Args:
        schedule: the noise schedule.
        prediction: what the model predicts.
        solver: registry name or instance (one model evaluation per step).
        grid: spacing name (ours, or diffusers' ``linspace``/``leading``/``trailing``).
        final: ``"zero"`` (default; the last step ends at ``sigma = 0``) or ``"sigma_min"``.
        solver_options, grid_options: passed to the solver / grid.
        config: the diffusers config this scheduler was built from (kept as ``.config``).
    """

    order = 1

    def __init__(  # noqa: PLR0913 - the options of a diffusers scheduler
        self,
        schedule: VPDiscreteSchedule,
        prediction: str = "epsilon",
        solver: str | Solver = "dpmpp-2m",
        grid: str = "leading",
        final: str = "zero",
        solver_options: dict[str, Any] | None = None,
        grid_options: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.solver = get(solver, **(solver_options or {}))
        if not _fits_step_protocol(self.solver):
            raise ValueError(
                f"solver {solver!r} takes {self.solver.nfe_per_step} model evaluations per step; "
                "the diffusers step protocol supplies one. Choose from "
                f"{', '.join(single_evaluation_solvers())}"
            )
        self.schedule = schedule
        self.prediction = canonical_prediction(prediction)
        self.grid_name, self.final = grid, final
        self.grid_options = dict(grid_options or {})
        self.config = _Config(config or {})
        self.config.setdefault("num_train_timesteps", schedule.num_train_timesteps)
        self.init_noise_sigma = 1.0
        self.timesteps: Tensor | None = None
        self.num_inference_steps: int | None = None
        self._replay = _Replay()
        self._term: DiffusionTerm | None = None

    @classmethod
    def from_config(
        cls, config: Any, solver: str | Solver = "dpmpp-2m", grid: str | None = None, **options: Any
    ) -> Scheduler:
        """From a diffusers scheduler config (or scheduler). ``grid`` defaults to the config's
        ``timestep_spacing`` (``leading`` when absent, with its ``steps_offset``), or ``karras``
        when ``use_karras_sigmas`` is set. ``options``: ``final``, ``solver_options``,
        ``grid_options``."""
        cfg = _as_dict(config)
        grid_options = dict(options.pop("grid_options", {}) or {})
        if grid is None:
            if cfg.get("use_karras_sigmas"):
                grid = "karras"
            else:
                grid = cfg.get("timestep_spacing", "leading")
                if grid == "leading":
                    grid_options.setdefault("steps_offset", int(cfg.get("steps_offset", 0)))
        return cls(
            schedule_from_config(cfg),
            prediction_from_config(cfg),
            solver,
            grid,
            grid_options=grid_options,
            config=cfg,
            **options,
        )

    def __len__(self) -> int:
        return self.schedule.num_train_timesteps

    def set_timesteps(
        self, num_inference_steps: int, device: str | torch.device | None = None
    ) -> None:
        """Build the grid for ``num_inference_steps`` steps; ``timesteps`` lists the model times
        (int64 when they are whole diffusers steps, float32 otherwise)."""
        self.grid: SamplingGrid = make_grid(
            self.schedule,
            int(num_inference_steps),
            self.grid_name,
            final=self.final,
            **self.grid_options,
        )
        t = self.grid.t[:-1]
        integral = bool((t == t.round()).all())
        self.timesteps = (t.to(torch.int64) if integral else t.to(torch.float32)).to(device)
        self.num_inference_steps = int(num_inference_steps)
        self._term = DiffusionTerm(Denoiser(self._replay, self.schedule, self.prediction))
        self._state = None
        self._table = None
        self._step_index = 0

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        """Identity: the state is in the VP schedule's own space."""
        return sample

    def step(
        self,
        model_output: Tensor,
        timestep: Any,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        **_: Any,
    ):
        """Advance ``sample`` one step given the model output at ``(sample, timestep)``."""
        if self._term is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        i = self._step_index
        if i >= self.grid.steps:
            raise RuntimeError(
                f"step() called more than num_inference_steps={self.grid.steps} times; "
                "call set_timesteps again to restart"
            )
        term = self._term
        term.generator = generator
        if self._table is None:
            self._state, self._table = self.solver.init(term, self.grid, sample)
        self._replay.pending, self._replay.at = model_output, sample
        t0, t1 = float(self.grid.t[i]), float(self.grid.t[i + 1])
        row = self._table[i] if self._table is not None else None
        x1, self._state, _, _ = self.solver.step(term, t0, t1, sample, self._state, row)
        self._replay.pending = self._replay.at = None
        self._step_index += 1
        return SchedulerOutput(x1) if return_dict else (x1,)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``alpha(t) x0 + sigma(t) eps`` (for img2img-style pipelines)."""
        t = torch.as_tensor(timesteps, dtype=torch.float64).cpu().reshape(-1)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        a = self.schedule.alpha(t).to(original_samples).view(shape)
        s = self.schedule.sigma(t).to(original_samples).view(shape)
        return a * original_samples + s * noise

"""A diffusers-compatible scheduler backed by timestepper's solvers.

Two ways to build one:

* ``Scheduler.from_config(cfg)`` (no solver named) reproduces the config's diffusers class —
  its timesteps, ``sigmas``, ``init_noise_sigma``, ``scale_model_input`` and update — on our
  solvers (:mod:`.classes`); options we do not reproduce raise.
* ``Scheduler.from_config(cfg, solver="dpmpp-3m", grid="logsnr")`` or
  ``Scheduler(schedule, prediction, solver, grid)``: our solver on our grid, with the config's
  training schedule and prediction type.

The loop shapes pipelines use are supported: the full loop; a loop that starts mid-schedule
(img2img, inpainting, SDXL's refiner) after ``set_begin_index`` or from the first ``timestep``
passed to ``step`` (a timestep not on the grid raises); ``add_noise`` / ``scale_noise`` at the
starting timestep; ``set_timesteps(timesteps=...)`` / ``(sigmas=..., mu=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...core.solver import Solver
from ...diffusion.denoiser import Denoiser
from ...diffusion.grids import make_grid
from ...diffusion.predictions import canonical_prediction
from ...diffusion.schedules import NoiseSchedule, RectifiedFlowSchedule, VPDiscreteSchedule
from ...solvers.registry import available, get
from ...solvers.schedule import SolverSchedule, load_schedule
from . import postprocess
from .classes import Recipe, recipe_for
from .config import as_dict, prediction_from_config, schedule_from_config
from .layout import Layout, expanded, single
from .plans import Plan
from .pndm_counter import PndmCounterLoop
from .stepping import LoopRun, Segment, evaluation_times

_UPCAST = (torch.float16, torch.bfloat16)
MID_SCHEDULES = ("diffusers", "restart")


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


def _fits_step_protocol(solver: Solver) -> bool:
    """A diffusion solver on a fixed grid (multi-evaluation ones through the order-2 protocol)."""
    return (solver.family == "diffusion" and solver.error_order is None
            and getattr(solver, "evaluates_on_grid", True))


def scheduler_solvers() -> list[str]:
    """Registry names of solvers usable through :class:`Scheduler`."""
    return [name for name in available("diffusion") if _fits_step_protocol(get(name))]


def _check_solver(solver: str | Solver, options: dict[str, Any]) -> Solver:
    built = get(solver, **options)
    if not _fits_step_protocol(built):
        why = ("is not a diffusion sampler" if built.family != "diffusion"
               else "chooses its own steps (adaptive)" if built.error_order is not None
               else "calls the model at data-dependent times off the grid")
        raise ValueError(
            f"solver {solver!r} {why}; the diffusers step protocol runs a diffusion solver on "
            f"the scheduler's grid. Choose from {', '.join(scheduler_solvers())}"
        )
    return built


class Scheduler:
    """A diffusers-compatible scheduler backed by a timestepper solver.

    The pipeline calls ``set_timesteps(n)``, then for each ``t`` in ``timesteps``:
    ``out = model(scale_model_input(x, t), t)`` and ``x = step(out, t, x).prev_sample``.

    Args:
        schedule: the noise schedule (a :class:`VPDiscreteSchedule` in diffusers' training steps,
            or e.g. :class:`RectifiedFlowSchedule` whose times reach the model as ``1000 t``).
        prediction: what the model predicts (``epsilon``, ``v_prediction``, ``sample``,
            ``velocity``/``flow``).
        solver: registry name or instance (one model evaluation per step).
        grid: our spacing name, diffusers' ``linspace``/``leading``/``trailing`` (discrete
            schedules), or a tensor of times; default ``leading`` for discrete schedules, else
            ``uniform``.
        final: ``"zero"`` (default; the last step ends at ``sigma = 0``) or ``"sigma_min"``.
        solver_options, grid_options: passed to the solver / grid.
        config: the diffusers config this scheduler was built from (kept as ``.config``).
        num_train_timesteps: the model's time scale for continuous schedules (default 1000).
    """

    order = 1

    def __init__(  # noqa: PLR0913 - the options of a diffusers scheduler
        self,
        schedule: NoiseSchedule,
        prediction: str = "epsilon",
        solver: str | Solver = "dpmpp-2m",
        grid: str | Tensor | None = None,
        final: str = "zero",
        solver_options: dict[str, Any] | None = None,
        grid_options: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        num_train_timesteps: int | None = None,
    ) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a timestepper NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.prediction = canonical_prediction(prediction)
        self._solver_spec, self._solver_options = solver, dict(solver_options or {})
        self.solver = _check_solver(solver, self._solver_options)
        self.grid_name = grid if grid is not None else (
            "leading" if isinstance(schedule, VPDiscreteSchedule) else "uniform")
        self.final = final
        self.grid_options = dict(grid_options or {})
        self.recipe: Recipe | None = None
        #: the solver schedule this scheduler runs (``from_config(cfg, schedule=...)``), if any
        self.solver_schedule: SolverSchedule | None = None
        #: how a reproduced class runs a loop that starts mid-schedule: ``"diffusers"`` as the
        #: class does, ``"restart"`` our solver started afresh there (see :meth:`from_config`)
        self.mid_schedule = "diffusers"
        default_T = getattr(schedule, "num_train_timesteps", 1000)
        base = dict(config) if config is not None else _base_config_of(schedule, self.prediction)
        base.setdefault("num_train_timesteps", int(num_train_timesteps or default_T))
        self._base = base
        self._register()
        self._reset_plan()

    def _record(self) -> dict[str, Any]:
        """The config to save: the diffusers config's keys, and ours under ``ts_*``."""
        grid = self.grid_name
        flat = {k: v for k, v in self._base.items() if not k.startswith("_")}
        flat.update(
            ts_scheduler_class=self._base.get("_class_name"),
            ts_solver=None if self.recipe is not None else getattr(
                self.solver, "registry_name", str(self._solver_spec)),
            ts_solver_options=None if self.recipe is not None else self._solver_options,
            ts_grid=grid.tolist() if isinstance(grid, Tensor) else grid,
            ts_grid_options=self.grid_options, ts_final=self.final,
            ts_mid_schedule=self.mid_schedule)
        if self.solver_schedule is not None:
            flat.update(ts_schedule=self.solver_schedule.to_dict(), ts_solver=None, ts_grid=None)
        return flat

    def _register(self) -> None:
        self._config = _Config(self._record())

    @property
    def config(self) -> Any:
        """The scheduler's config: the diffusers config it was built from, plus ``ts_*`` keys
        (solver, grid, final, options) with which :meth:`from_config` rebuilds it."""
        return self._config

    def _reset_plan(self) -> None:
        self.plan: Plan | None = None
        self.layout: Layout | None = None
        self._scales: list[tuple[float, float]] = []
        self.timesteps: Tensor | None = None
        self.sigmas: Tensor | None = None
        self.num_inference_steps: int | None = None
        self.init_noise_sigma = 1.0
        self._begin_index: int | None = None
        self._step_index: int | None = None
        self._run: LoopRun | None = None
        self._counter: PndmCounterLoop | None = None

    @classmethod
    def from_config(cls, config: Any, solver: str | Solver | None = None,
                    grid: str | Tensor | None = None, **options: Any) -> Scheduler:
        """From a diffusers scheduler or config.

        With no ``solver`` the config's class (``_class_name``, or ``scheduler_class=``) is
        reproduced. With a ``solver``, that solver runs on ``grid`` (default: the config's
        ``timestep_spacing`` with its ``steps_offset``, or ``karras`` with ``use_karras_sigmas``).
        ``options``: ``final``, ``solver_options``, ``grid_options``, ``scheduler_class``, and
        ``mid_schedule``: how a reproduced class runs a loop that starts mid-schedule (img2img,
        inpainting): ``"diffusers"`` (default) exactly as the class does, quirks included
        (LMS's first steps with a truncated history, singlestep DPM-Solver's full-schedule
        grouping, PNDM's call counter); ``"restart"``: our solver started afresh at the loop's
        first step (the method as published on the remaining grid; PNDM then raises).
        ``schedule``: a :class:`~timestepper.solvers.schedule.SolverSchedule` or the path of its
        JSON, run with the config's training schedule and prediction type (no ``solver``,
        ``grid`` or options then; ``force=True`` accepts a schedule made for another model);
        ``set_timesteps()`` takes its step count. A loop that starts mid-schedule (step ``k``
        after ``set_begin_index(k)``, or from ``timesteps[k]``) runs the schedule's steps from
        ``k`` with the multistep history restarted there
        (:meth:`~timestepper.solvers.schedule.SolverSchedule.starting_at`), as diffusers'
        multistep classes do.
        """
        cfg = as_dict(config)
        if "ts_final" in cfg:  # a config saved by this class
            cfg, solver, grid, options = _saved(cfg, solver, grid, options)
        if options.get("schedule") is not None:
            return cls._running_schedule(cfg, solver, grid, options)
        options.pop("schedule", None)
        class_name = options.pop("scheduler_class", None)
        mid = options.pop("mid_schedule", "diffusers")
        if mid not in MID_SCHEDULES:
            raise ValueError(f"mid_schedule must be one of {', '.join(MID_SCHEDULES)}, got {mid!r}")
        if solver is None:
            sched = cls._reproducing(cfg, recipe_for(cfg, class_name))
            sched.mid_schedule = mid
            sched._register()
            return sched
        if str(cfg.get("_class_name", "")).startswith("FlowMatch"):
            sched = cls(RectifiedFlowSchedule(), "velocity", solver, grid, config=cfg, **options)
            sched.grid_options.setdefault("shift", float(cfg.get("shift", 1.0)))
            sched._register()
            return sched
        grid_options = dict(options.pop("grid_options", {}) or {})
        if grid is None:
            grid = "karras" if cfg.get("use_karras_sigmas") else cfg.get("timestep_spacing", "leading")
            if grid == "leading":
                grid_options.setdefault("steps_offset", int(cfg.get("steps_offset", 0)))
        return cls(schedule_from_config(cfg), prediction_from_config(cfg), solver, grid,
                   grid_options=grid_options, config=cfg, **options)

    @classmethod
    def _running_schedule(cls, cfg: dict[str, Any], solver: Any, grid: Any,
                          options: dict[str, Any]) -> Scheduler:
        """A scheduler that runs a :class:`~timestepper.solvers.schedule.SolverSchedule` (or the
        JSON at a path) with the config's training schedule and prediction type: its times are
        the grid, its per-step specs (or its registered solver) the solver. Options that would
        contradict it are refused; so is a schedule made for another noise schedule or
        prediction type, unless ``force=True``."""
        options = dict(options)
        sched, force = options.pop("schedule"), bool(options.pop("force", False))
        clash = sorted([k for k, v in (("solver", solver), ("grid", grid)) if v is not None]
                       + [k for k in options if k != "mid_schedule"])
        if clash:
            raise ValueError(f"{', '.join(clash)} cannot be given together with schedule=: the "
                             "schedule fixes the solver and the times")
        sched = load_schedule(sched) if isinstance(sched, (str, Path)) else sched
        if not isinstance(sched, SolverSchedule):
            raise TypeError(f"schedule must be a SolverSchedule or a JSON path, got {type(sched).__name__}")
        flow = str(cfg.get("_class_name", "")).startswith("FlowMatch")
        noise = RectifiedFlowSchedule() if flow else schedule_from_config(cfg)
        prediction = "velocity" if flow else prediction_from_config(cfg)
        sched.validate(Denoiser(lambda x, t: x, noise, prediction), force=force)
        times = torch.tensor(sched.times, dtype=torch.float64)
        final = "zero" if sched.times[-1] == noise.t_data else "sigma_min"
        if final == "sigma_min" and sched.times[-1] != noise.t_min:
            raise ValueError(f"the schedule ends at t={sched.times[-1]!r}, neither at zero noise "
                             f"(t_data={noise.t_data!r}) nor at t_min={noise.t_min!r}")
        out = cls(noise, prediction, sched.build_solver(), times, final=final, config=cfg)
        out.solver_schedule = sched
        out._register()
        return out

    @classmethod
    def _reproducing(cls, cfg: dict[str, Any], recipe: Recipe) -> Scheduler:
        prediction = "velocity" if isinstance(recipe.schedule, RectifiedFlowSchedule) else (
            prediction_from_config(cfg))
        sched = cls(recipe.schedule, prediction, recipe.solver, solver_options=recipe.options,
                    config=cfg)
        sched.recipe = recipe
        sched._register()
        return sched

    def __len__(self) -> int:
        return int(self._base["num_train_timesteps"])

    # -- set_timesteps ---------------------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int | None = None,  # noqa: PLR0913 - diffusers' signature
                      device: str | torch.device | None = None, timesteps: Any = None,
                      sigmas: Any = None, mu: float | None = None, **_: Any) -> None:
        """Build the grid: ``num_inference_steps`` steps, or the given ``timesteps`` (model
        times) or ``sigmas`` (noise levels ``sigma / alpha``; for flow models ``sigma``); ``mu``
        is the dynamic shift of flow-matching configs."""
        if timesteps is not None and sigmas is not None and self.recipe is None:
            raise ValueError("pass only one of timesteps= and sigmas=")
        if self.solver_schedule is not None:
            n = self._schedule_count(num_inference_steps, timesteps, sigmas)
        else:
            n = _count(num_inference_steps, timesteps, sigmas)
        self._reset_plan()
        if self.recipe is not None:
            plan = self.recipe.plan(n, _array(timesteps), sigmas=_array(sigmas), mu=mu)
        else:
            plan = self._our_plan(n, timesteps, sigmas, mu)
        self.plan = plan
        self.layout = self._layout(plan)
        self._scales = self._state_scales(plan, self.layout)
        self.timesteps = self.layout.timesteps.to(device)
        self.sigmas = plan.exposed_sigmas if plan.exposed_sigmas is not None else self.layout.sigmas
        self.order = self.layout.order
        if self.recipe is not None and self.recipe.order is not None:
            self.order = self.recipe.order  # the class's declared order (what pipelines slice by)
        self.num_inference_steps = len(plan.timesteps)
        self.init_noise_sigma = plan.init_noise_sigma

    def _schedule_count(self, n: int | None, timesteps: Any, sigmas: Any) -> int:
        """The step count of the held solver schedule (``num_inference_steps`` may repeat it)."""
        assert self.solver_schedule is not None
        steps = len(self.solver_schedule.times) - 1
        if timesteps is not None or sigmas is not None:
            raise ValueError("set_timesteps(timesteps=/sigmas=) cannot be used with a solver schedule: "
                             "the schedule fixes the times")
        if n is not None and n != steps:
            raise ValueError(f"num_inference_steps={n} contradicts the solver schedule, which has "
                             f"{steps} steps")
        return steps

    def _layout(self, plan: Plan) -> Layout:
        if not plan.chained or getattr(self.solver, "registry_name", "") in (
                "ddim", "euler", "ddpm", "euler-ancestral"):
            return single(plan)
        times = evaluation_times(self.solver, self.schedule, plan.start, plan.end)
        return expanded(plan, times, self.schedule, len(self))

    def _our_plan(self, n: int, timesteps: Any, sigmas: Any, mu: float | None) -> Plan:
        T, sch = len(self), self.schedule
        opts = dict(self.grid_options)
        if mu is not None:
            opts["shift"] = float(np.exp(mu))
        if timesteps is not None:
            t = torch.as_tensor(_array(timesteps), dtype=torch.float64)
            grid: Any = t if isinstance(sch, VPDiscreteSchedule) else t / T
        elif sigmas is not None:
            s = torch.as_tensor(_array(sigmas), dtype=torch.float64)
            s = s[s > 0]
            if isinstance(sch, RectifiedFlowSchedule):  # flow sigmas are times; mu shifts them
                shift = opts.pop("shift", None)
                grid = s if shift is None else shift * s / (1 + (shift - 1) * s)
            else:
                grid = sch.t_from_log_snr(-torch.log(s))
        else:
            grid = self.grid_name
        g = make_grid(sch, n, grid, final=self.final, **opts)
        model_t = g.t[:-1] if isinstance(sch, VPDiscreteSchedule) else g.t[:-1] * T
        integral = bool((model_t == model_t.round()).all()) and isinstance(sch, VPDiscreteSchedule)
        ts = model_t.to(torch.int64) if integral else model_t.to(torch.float32)
        return Plan(ts, g.t[:-1].clone(), g.t[1:].clone(), (g.sigma / g.alpha).to(torch.float32),
                    "vp", 1.0)

    # -- begin / step index ----------------------------------------------------------------

    @property
    def begin_index(self) -> int | None:
        """The index of the first step, set by ``set_begin_index`` (``None`` otherwise)."""
        return self._begin_index

    @property
    def step_index(self) -> int | None:
        """The index of the next step (``None`` before the first ``step``)."""
        return self._step_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the loop at ``timesteps[begin_index]`` (img2img, inpainting, refiners)."""
        lay = self._require_layout()
        if not 0 <= int(begin_index) < len(lay.timesteps):
            raise ValueError(f"begin_index must be in [0, {len(lay.timesteps) - 1}], got {begin_index}")
        if lay.sub[int(begin_index)] != 0 and not self._counts_calls():
            raise ValueError(f"begin_index={begin_index} is inside a multi-evaluation step; a loop "
                             "starts at a step's first timestep (t_start * scheduler.order)")
        self._begin_index = int(begin_index)

    def _counts_calls(self) -> bool:
        """Whether a loop that starts mid-schedule runs the class's own call-counter loop."""
        return (self.recipe is not None and self.recipe.mid_loop is not None
                and self.mid_schedule == "diffusers")

    def index_for_timestep(self, timestep: Any) -> int:
        """The entry of ``timesteps`` equal to ``timestep`` where a loop may start (a step's first
        evaluation; the second of repeated ones, as diffusers)."""
        lay = self._require_layout()
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        listed = lay.timesteps.cpu().to(torch.float64)
        # float32 timesteps of another computation of the same rule may differ in the last bit
        hits = torch.nonzero((listed - t).abs() <= 1e-6 * max(1.0, abs(t))).flatten().tolist()
        if not hits:
            near = lay.timesteps.tolist()
            raise ValueError(
                f"timestep {t:g} is not one of this scheduler's timesteps {near}; a loop must "
                "start at one of them (slice scheduler.timesteps, or call set_begin_index)"
            )
        starts = [h for h in hits if lay.sub[h] == 0]  # a loop starts at a step's first one
        hits = starts or hits
        return hits[1] if len(hits) > 1 else hits[0]

    def _current_index(self, timestep: Any) -> int:
        if self._step_index is None:
            self._step_index = (self._begin_index if self._begin_index is not None
                                else self.index_for_timestep(timestep))
        return self._step_index

    def _require_plan(self) -> Plan:
        if self.plan is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before stepping")
        return self.plan

    def _require_layout(self) -> Layout:
        self._require_plan()
        assert self.layout is not None
        return self.layout

    # -- the step protocol -----------------------------------------------------------------

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        """The model's input: ``sample / sqrt(s^2 + 1)`` for the classes whose state is
        ``x / alpha`` (Euler, LMS, ...), the sample itself otherwise."""
        plan, lay = self._require_plan(), self._require_layout()
        if plan.space != "ve" or lay.sigmas is None:
            return sample
        s = lay.sigmas[self._current_index(timestep)]
        return sample / ((s**2 + 1) ** 0.5)

    def step(self, model_output: Tensor, timestep: Any, sample: Tensor,  # noqa: PLR0913 - diffusers' signature
             generator: torch.Generator | None = None, return_dict: bool = True,
             **kwargs: Any) -> Any:
        """Advance ``sample`` one step given the model output at ``(sample, timestep)``.

        Half-precision inputs are stepped in float32 and returned in the model output's dtype,
        as diffusers does. ``kwargs``: ``eta`` (DDIM), ``order`` (LMS), ``s_churn`` (Euler; only
        0 is reproduced), ``use_clipped_model_output`` (DDIM)."""
        lay = self._require_layout()
        e = self._current_index(timestep)
        if e >= len(lay.timesteps):
            raise RuntimeError(
                f"step() called more than len(timesteps)={len(lay.timesteps)} times; "
                "call set_timesteps again to restart"
            )
        out_dtype = model_output.dtype
        work = sample.float() if sample.dtype in _UPCAST else sample
        m = self._raw_output(model_output.to(work.dtype), work)
        if self._counter is None and self._run is None and e > 0 and self._counts_calls():
            assert self.recipe is not None and self.recipe.mid_loop is not None
            self._counter = self.recipe.mid_loop(lay.timesteps.tolist())
        if self._counter is not None:
            tau = float(torch.as_tensor(timestep).reshape(-1)[0])
            return self._finish(e, self._counter.step(m, tau, work), out_dtype, return_dict)
        if self._run is None:
            self._run = self._start_run(lay.step[e], work, generator, kwargs)
        into, back = self._scales[e]
        x = work if into == 1.0 else work * into
        _, y = self._run.step(lay.step[e], lay.sub[e], x, m)  # done or not: back says where y is
        x1 = y if back == 1.0 else y / back
        return self._finish(e, x1, out_dtype, return_dict)

    def _finish(self, e: int, x1: Tensor, out_dtype: torch.dtype, return_dict: bool) -> Any:
        self._step_index = e + 1
        x1 = x1.to(out_dtype)
        return SchedulerOutput(x1) if return_dict else (x1,)

    def _raw_output(self, m: Tensor, x: Tensor) -> Tensor:
        """The first ``C`` channels of a learned-variance model's ``2C``-channel output."""
        if m.ndim == x.ndim and m.ndim > 1 and m.shape[1] == 2 * x.shape[1]:
            return m[:, : x.shape[1]]
        return m

    def _state_scales(self, plan: Plan, lay: Layout) -> list[tuple[float, float]]:
        """Per entry: the factor taking the pipeline's sample to our state (``alpha`` for the
        ``x / alpha`` classes, else 1), and the ``alpha`` dividing the state handed back (at the
        step's end when the entry completes its step, else at the next evaluation)."""
        if plan.space != "ve":
            return [(1.0, 1.0)] * len(lay.times)
        n = len(lay.times)
        steps = torch.tensor(lay.step)
        ends = torch.where(torch.isnan(plan.end), plan.start, plan.end)[steps]  # nan: zero length
        last = torch.tensor([e + 1 == n or lay.sub[e + 1] == 0 for e in range(n)])
        after = torch.where(last, ends, torch.cat([lay.times[1:], ends[-1:]]))
        t_data = self.schedule.t_data
        alpha_in = self.schedule.alpha(lay.times)
        alpha_out = torch.where(after == t_data, 1.0, self.schedule.alpha(after))
        return list(zip(alpha_in.tolist(), alpha_out.tolist()))

    def _start_run(self, first: int, x: Tensor, generator: torch.Generator | None,
                   kwargs: dict[str, Any]) -> LoopRun:
        plan = self._require_plan()
        opts, keep = self._loop_options(kwargs, first)
        solver = self.solver if opts is None else _check_solver(self._solver_name(), opts)
        if self.solver_schedule is not None and first > 0:
            solver = self.solver_schedule.starting_at(first).build_solver()
        runs = self._class_runs(first, opts)
        segments = None if runs is None else [
            Segment(a, b, _check_solver(self._solver_name(), o)) for a, b, o in runs]
        if runs is None or first > 0 and self.recipe is not None and self.recipe.segments is not None:
            self._check_mid_start(solver, first)
        transform = self._transform()
        run = LoopRun(solver, self.schedule, self.prediction, plan.start, plan.end, first, x,
                      generator, transform, keep if transform is not None else None, segments)
        run.multi_evaluation = self._require_layout().order > 1
        return run

    def _class_runs(self, first: int,
                    opts: dict[str, Any] | None) -> list[tuple[int, int, dict[str, Any]]] | None:
        """The solver runs (:class:`Segment` arguments) of the reproduced class's loop from step
        ``first``, or ``None`` for one run of the solver from there."""
        recipe, plan = self.recipe, self._require_plan()
        if recipe is None or opts is None:
            return None
        if recipe.segments is not None:
            return recipe.segments(plan, first, opts)
        if first > 0 and recipe.mid_segments is not None and self.mid_schedule == "diffusers":
            return recipe.mid_segments(len(plan.timesteps), first, opts)
        return None

    def _solver_name(self) -> str | Solver:
        assert self.recipe is not None
        return self.recipe.solver

    def _check_mid_start(self, solver: Solver, first: int) -> None:
        """A loop that starts at step ``first > 0`` of a multi-evaluation grid must find there the
        evaluations the solver makes from that point (no warm-up that changes them)."""
        lay, plan = self._require_layout(), self._require_plan()
        if first == 0 or lay.order == 1:
            return
        ahead = evaluation_times(solver, self.schedule, plan.start[first:], plan.end[first:])
        listed = [[float(t) for t, s in zip(lay.times, lay.step) if s == i]
                  for i in range(first, len(plan.start))]
        if ahead != listed:
            raise ValueError(
                f"solver {getattr(solver, 'registry_name', solver)!r} started at step {first} "
                "makes other model evaluations (a warm-up) than the timesteps list; it cannot "
                "start mid-schedule (img2img, inpainting) through the diffusers step protocol. "
                "Use a solver without a multi-evaluation warm-up there, e.g. "
                "Scheduler.from_config(config, solver='dpmpp-2m') or an Euler/DPM-Solver config")

    def _loop_options(self, kwargs: dict[str, Any],
                      first: int) -> tuple[dict[str, Any] | None, float | None]:
        """The reproduced class's solver options for this loop, with ``step``'s keywords and the
        grid set (step indices in options count from the loop's first step), and DDIM's ``eta``
        where the model's own noise is kept; ``(None, None)`` for our own solver."""
        recipe = self.recipe
        if recipe is None:
            return None, None
        if kwargs.get("s_churn", 0.0):
            raise ValueError(
                "step(s_churn > 0) is not reproduced: diffusers adds the churn noise after the "
                "pipeline evaluated the model at the un-churned sample, and uses that output as if "
                "taken at the raised sigma (Karras et al. 2022's stochastic sampler evaluates "
                "after the noise); no sampler of ours steps that way. Use s_churn=0")
        if kwargs.get("variance_noise") is not None:
            raise ValueError("step(variance_noise=...) is not reproduced: our solvers draw their "
                             "noise from the generator passed to step")
        opts = dict(recipe.options)
        for key, option in recipe.step_options.items():
            if key in kwargs:
                opts[option] = kwargs[key]
        if recipe.lower_order_final is not None:
            n = len(self._require_plan().timesteps)
            opts["lower_order_final"] = recipe.lower_order_final(n, n - first)
        if "disable_corrector" in opts:
            opts["disable_corrector"] = tuple(i - first for i in opts["disable_corrector"] if i >= first)
        keep = None
        if recipe.keeps_model_noise and not kwargs.get("use_clipped_model_output", False):
            keep = float(opts.get("eta", 0.0))
        return opts, keep

    def _transform(self) -> Any:
        recipe = self.recipe
        if recipe is None:
            return None
        if recipe.threshold is not None:
            return partial(postprocess.dynamic_threshold, ratio=recipe.threshold[0],
                           max_value=recipe.threshold[1])
        if recipe.clip is not None:
            return partial(postprocess.clip, limit=recipe.clip)
        return None

    # -- noising ---------------------------------------------------------------------------

    def _noise_indices(self, timesteps: Tensor) -> list[int]:
        if self._begin_index is None:
            return [self.index_for_timestep(t) for t in timesteps.reshape(-1)]
        idx = self._step_index if self._step_index is not None else self._begin_index
        return [idx] * timesteps.numel()

    def _noise_levels(self, timesteps: Any, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma)`` of the sample space at each timestep, shaped to broadcast."""
        plan = self._require_plan()
        ts = torch.as_tensor(timesteps).reshape(-1).cpu()
        direct = self.recipe is None or plan.sigmas is None  # the model time is our time
        if direct and isinstance(self.schedule, VPDiscreteSchedule):
            t = ts.to(torch.float64)  # any training step, as diffusers indexes alphas_cumprod
        else:
            t = self._require_layout().times[self._noise_indices(ts)]
        a, s = self.schedule.alpha_sigma(t)
        if plan.space == "ve":
            a, s = torch.ones_like(a), s / a
        shape = (-1,) + (1,) * (like.ndim - 1)
        return a.to(like).view(shape), s.to(like).view(shape)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Any) -> Tensor:
        """The noised sample at ``timesteps`` in this scheduler's sample space
        (``alpha x0 + sigma eps``; ``x0 + s eps`` for the ``x / alpha`` classes)."""
        a, s = self._noise_levels(timesteps, original_samples)
        return a * original_samples + s * noise

    def scale_noise(self, sample: Tensor, timestep: Any, noise: Tensor) -> Tensor:
        """Flow matching's forward process ``(1 - sigma) x0 + sigma eps`` at ``timestep``."""
        return self.add_noise(sample, noise, timestep)


def _base_config_of(schedule: NoiseSchedule, prediction: str) -> dict[str, Any]:
    """A diffusers-style config that rebuilds ``schedule`` (for saving a scheduler built from a
    schedule rather than from a config)."""
    if isinstance(schedule, RectifiedFlowSchedule):
        return {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0}
    if isinstance(schedule, VPDiscreteSchedule):
        ac = schedule.alphas_cumprod
        betas = 1.0 - ac / torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
        kind = {"epsilon": "epsilon", "sample": "sample", "v_prediction": "v_prediction"}
        return {"trained_betas": betas.tolist(), "prediction_type": kind.get(prediction, "epsilon")}
    return {"_class_name": None}


def _saved(cfg: dict[str, Any], solver: Any, grid: Any,
           options: dict[str, Any]) -> tuple[dict[str, Any], Any, Any, dict[str, Any]]:
    """Split a saved config into the diffusers config and our options (explicit ones win)."""
    ours = {k: cfg.pop(k) for k in list(cfg) if k.startswith("ts_")}
    cfg["_class_name"] = ours.get("ts_scheduler_class")
    options = dict(options)
    options.pop("return_unused_kwargs", None)
    if solver is None and grid is None and ours.get("ts_schedule") is not None:
        options.setdefault("schedule", SolverSchedule.from_dict(ours["ts_schedule"]))
        return cfg, solver, grid, options
    if solver is None and ours.get("ts_solver") is None:
        options.setdefault("mid_schedule", ours.get("ts_mid_schedule") or "diffusers")
    if solver is None and ours.get("ts_solver") is not None:
        solver = ours["ts_solver"]
        options.setdefault("solver_options", ours.get("ts_solver_options") or {})
        options.setdefault("grid_options", ours.get("ts_grid_options") or {})
        options.setdefault("final", ours.get("ts_final", "zero"))
        if grid is None and ours.get("ts_grid") is not None:
            g = ours["ts_grid"]
            grid = torch.tensor(g, dtype=torch.float64) if isinstance(g, list) else g
    return cfg, solver, grid, options


def _array(values: Any) -> np.ndarray | None:
    if values is None:
        return None
    if isinstance(values, Tensor):
        return values.detach().cpu().to(torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _count(n: int | None, timesteps: Any, sigmas: Any) -> int:
    if n is None and timesteps is None and sigmas is None:
        raise ValueError("set_timesteps needs num_inference_steps, timesteps= or sigmas=")
    if n is not None:
        if isinstance(n, bool) or int(n) != n or int(n) < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {n!r}")
        return int(n)
    return len(timesteps) if timesteps is not None else len(sigmas)

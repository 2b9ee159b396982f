"""A solver schedule as data (USF, Liu et al. 2023): the time points, what each step does, and
where the schedule came from.

A :class:`SolverSchedule` is either *per-step* -- ``N + 1`` times and ``N`` :class:`StepSpec`
entries, run by :class:`~timestepper.solvers.scheduled.ScheduledSolver` (``"usf"``) -- or a
registered diffusion solver (``solver`` + ``solver_options``) run over its times. Either way it
is one sample's worth of model calls: ``nfe`` is exact. It saves to a small JSON file
(:meth:`SolverSchedule.save`; ``docs/schedules.md`` gives the format) with its provenance: the
model's noise schedule and prediction type (checked against the model it is run with, see
:meth:`SolverSchedule.validate`), the model id/hash if known, and how it was found (method,
objective, seed, search cost).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..core.solver import Solver
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import SamplingGrid
from ..diffusion.schedules import NoiseSchedule
from .registry import entry, get
from .scheduled import ScheduledSolver
from .step_spec import StepSpec, check_history, spec_from

FORMAT = "timestepper.solver_schedule/1"
RANGE = ("t_min", "t_max")


def describe_schedule(schedule: NoiseSchedule) -> dict[str, Any]:
    """The noise schedule's class and parameters as JSON data: its public float/int/str
    attributes, and a SHA-256 of each tensor (``alphas_cumprod``). Two schedules that describe
    equal give the same ``alpha, sigma`` at every time. The evaluation range ``t_min, t_max`` is
    left out: it does not change the noise schedule (a schedule's times are checked against the
    model's range separately)."""
    params: dict[str, Any] = {}
    for k, v in sorted(vars(schedule).items()):
        if k.startswith("_") or k in RANGE or isinstance(getattr(type(schedule), k, None),
                                                         functools.cached_property):
            continue  # private state, the evaluation range, values cached on first use (t_data)
        if isinstance(v, (bool, int, float, str)):
            params[k] = v
        elif isinstance(v, torch.Tensor):
            data = v.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
            params[f"{k}_sha256"] = hashlib.sha256(data).hexdigest()
    return {"class": type(schedule).__name__, "params": params}


def model_provenance(denoiser: Denoiser, model: str | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance a schedule tuned for ``denoiser`` records: ``schedule`` (its noise schedule,
    :func:`describe_schedule`), ``prediction`` (the model's output kind), ``model`` (an id or hash
    the caller gives, optional) and any ``extra`` entries (``method``, ``objective``, ``seed``,
    ``search_cost={"model_calls": .., "seconds": ..}``)."""
    out: dict[str, Any] = {"schedule": describe_schedule(denoiser.schedule),
                           "prediction": denoiser.prediction}
    if model is not None:
        out["model"] = str(model)
    out.update(extra)
    return out


@dataclass
class SolverSchedule:
    """A solver schedule: ``times`` (noise to data) and, per step, what the solver does.

    Attributes:
        times: ``N + 1`` times in the model schedule's own time variable, strictly decreasing
            (noise to data); the model is evaluated at ``times[:-1]``; ``times[-1]`` may be
            ``t_data`` (a last step to zero noise).
        steps: ``N`` :class:`StepSpec` entries (one model call each), or ``()`` with ``solver``.
        solver: instead of per-step specs, a registered diffusion solver run over ``times``.
        solver_options: its options (JSON-serialisable; large arrays go in a side file named here).
        provenance: where it came from (:func:`model_provenance`; ``nfe`` is filled in).
    """

    times: tuple[float, ...]
    steps: tuple[StepSpec, ...] = ()
    solver: str | None = None
    solver_options: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times = tuple(float(t) for t in self.times)
        self.steps = tuple(spec_from(i, s) for i, s in enumerate(self.steps))
        self.solver_options = dict(self.solver_options)
        self.provenance = dict(self.provenance)
        self.check()

    # -- checks ---------------------------------------------------------------------------------

    def check(self) -> None:
        """The checks that need no model: times, NFE consistency, orders within the history."""
        if len(self.times) < 2:
            raise ValueError(f"times must hold at least 2 points (one step), got {len(self.times)}")
        check_times(self.times)
        if self.solver is None:
            if len(self.steps) != len(self.times) - 1:
                raise ValueError(f"NFE mismatch: {len(self.steps)} steps for {len(self.times)} times "
                                 f"(a per-step schedule needs len(steps) == len(times) - 1 = "
                                 f"{len(self.times) - 1})")
            check_history(self.steps)
        else:
            if self.steps:
                raise ValueError("give either per-step specs (steps) or a registered solver, not both")
            if entry(self.solver).family != "diffusion":
                raise ValueError(f"solver {self.solver!r} is not a diffusion solver")
        nfe = self.provenance.get("nfe")
        if nfe is not None and nfe != self.nfe and self.solver is None:
            raise ValueError(f"NFE mismatch: the provenance says nfe={nfe} but the schedule takes "
                             f"{self.nfe} model calls")

    def validate(self, denoiser: Denoiser | None = None, force: bool = False) -> None:
        """Refuse a schedule that cannot run, or (unless ``force``) one made for another model.

        Raises ``ValueError`` naming the step for non-monotone times, orders above the history
        (on a grid from pure noise the first step leaves none), a corrector on the last step, an
        NFE mismatch; with ``denoiser``: times outside its schedule's range, and a provenance
        whose noise schedule or prediction type differs from the model's (``force=True``
        accepts it)."""
        self.check()
        if denoiser is None:
            return
        t = torch.tensor(self.times, dtype=torch.float64)
        denoiser.schedule.check_times(t, "the schedule's times")
        if self.solver is None:
            grid = SamplingGrid.from_times(denoiser.schedule, t)
            pure = float(grid.alpha[0]) == 0.0
            check_history(self.steps, first_with_history=int(pure),
                          final_zero=not math.isfinite(float(grid.log_snr[-1])))
        if not force:
            check_model(self.provenance, denoiser)

    # -- running --------------------------------------------------------------------------------

    @property
    def nfe(self) -> int:
        """Model calls of one sample: ``N`` for a per-step schedule or a one-call-per-step solver.
        For a solver with more calls per step it is the NFE recorded in the provenance (measured
        by whoever made the schedule; ``sample`` checks it), else ``N * nfe_per_step``, an upper
        bound (Heun's last step to zero noise takes one call, not two)."""
        n = len(self.times) - 1
        if self.solver is None:
            return n
        per_step = get(self.solver, **self.solver_options).nfe_per_step
        recorded = self.provenance.get("nfe")
        return n if per_step == 1 else int(recorded) if recorded is not None else n * per_step

    @property
    def nfe_is_exact(self) -> bool:
        """Whether :attr:`nfe` is exact without running the schedule (else an upper bound)."""
        return (self.solver is None or "nfe" in self.provenance
                or get(self.solver, **self.solver_options).nfe_per_step == 1)

    def build_solver(self) -> Solver:
        """The solver that runs this schedule over ``times``."""
        if self.solver is None:
            return ScheduledSolver(self.steps)
        return get(self.solver, **self.solver_options)

    def starting_at(self, first: int) -> SolverSchedule:
        """The schedule of a loop that starts at step ``first`` (img2img, inpainting: the state
        at ``times[first]`` is given): the times from there on, and the multistep history
        **restarts** -- the steps keep their own specs (prediction type, corrector, variant, and
        the order the full schedule gave them, so a last-steps order reduction stays where it
        was), with each order capped by the model outputs the loop has made so far (step ``j``
        of the loop has ``j + 1``), which is what diffusers' multistep classes do when started
        mid-schedule. A registered solver is restarted on the remaining times with its
        options; an option holding one value per step (``dc-unipc``'s ``ratios``) keeps the
        values of the remaining steps, except the steps the restarted solver needs to fill its
        history (``dc-unipc``'s first ``dc_order`` steps have ratio 1, as at any start)."""
        n = len(self.times) - 1
        if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first < n:
            raise ValueError(f"first must be a step index in [0, {n - 1}], got {first!r}")
        if first == 0:
            return self
        provenance = {k: v for k, v in self.provenance.items() if k != "nfe"}
        provenance["started_at"] = first
        if self.solver is None:
            steps = tuple(replace(s, order=min(s.order, j + 1)) for j, s in enumerate(self.steps[first:]))
            return SolverSchedule(self.times[first:], steps, provenance=provenance)
        options = {k: list(v[first:]) if isinstance(v, (list, tuple)) and len(v) == n else v
                   for k, v in self.solver_options.items()}
        if "disable_corrector" in options:  # step indices count from the loop's first step
            options["disable_corrector"] = [i - first for i in options["disable_corrector"] if i >= first]
        if self.solver == "dc-unipc" and options.get("ratios") is not None:
            warm = int(self.solver_options.get("dc_order", 2))
            options["ratios"] = [1.0] * warm + list(options["ratios"][warm:])
        return SolverSchedule(self.times[first:], solver=self.solver, solver_options=options,
                              provenance=provenance)

    def grid(self, schedule: NoiseSchedule) -> SamplingGrid:
        """The :class:`SamplingGrid` of ``times`` on the model's noise schedule."""
        t = torch.tensor(self.times, dtype=torch.float64)
        schedule.check_times(t, "the schedule's times")
        return SamplingGrid.from_times(schedule, t)

    @classmethod
    def from_solver(cls, name: str, grid: SamplingGrid, **options: Any) -> SolverSchedule:
        """The per-step schedule that reproduces the registered solver ``name`` (with
        ``options``) on ``grid``: ``dpmpp-2m``/``3m``, ``dpm-solver-2m``/``3m``, ``unipc-bh1``/
        ``bh2``, ``ddim``/``euler``/``dpm-solver-1``. Other solvers are refused (run them as
        ``SolverSchedule(times, solver=name, solver_options=...)``)."""
        from .schedule_convert import specs_of_solver

        steps = specs_of_solver(get(name, **options), grid)
        return cls(tuple(grid.t.tolist()), steps,
                   provenance={"method": f"from_solver:{name}", "solver_options": dict(options)})

    # -- JSON -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "times": list(self.times),
            "steps": [s.to_dict() for s in self.steps],
            "solver": self.solver,
            "solver_options": self.solver_options,
            "provenance": {**self.provenance, **({"nfe": self.nfe} if self.nfe_is_exact else {})},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SolverSchedule:
        if not isinstance(d, Mapping):
            raise TypeError(f"a solver schedule must be a dict, got {type(d).__name__}")
        fmt = d.get("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"unknown schedule format {fmt!r}; this version reads {FORMAT!r}")
        unknown = sorted(set(d) - {"format", "times", "steps", "solver", "solver_options", "provenance"})
        if unknown:
            raise ValueError(f"unknown schedule fields {unknown}")
        if "times" not in d:
            raise ValueError("a solver schedule needs 'times'")
        return cls(tuple(d["times"]), tuple(d.get("steps", ())), d.get("solver"),
                   dict(d.get("solver_options") or {}), dict(d.get("provenance") or {}))

    def save(self, path: str | Path) -> None:
        """Write the schedule as JSON (floats round-trip exactly)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SolverSchedule:
        """Read a schedule written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON solver schedule ({exc})") from exc
        return cls.from_dict(data)


def check_times(times: tuple[float, ...]) -> None:
    """Refuse non-finite times and times that do not strictly decrease (noise to data), naming
    the step."""
    for i, t in enumerate(times):
        if not math.isfinite(t):
            raise ValueError(f"times[{i}] = {t} is not finite")
    for i in range(len(times) - 1):
        if not times[i + 1] < times[i]:
            raise ValueError(f"step {i}: times must strictly decrease from noise to data "
                             f"({times[i]!r} -> {times[i + 1]!r})")


def check_model(provenance: Mapping[str, Any], denoiser: Denoiser) -> None:
    """Refuse a schedule whose provenance names another noise schedule or prediction type."""
    want = provenance.get("schedule")
    have = describe_schedule(denoiser.schedule)
    if want is not None and want != have:
        raise ValueError(f"the schedule was made for noise schedule {want} but the model has {have}; "
                         "pass force=True to run it anyway")
    pred = provenance.get("prediction")
    if pred is not None and pred != denoiser.prediction:
        raise ValueError(f"the schedule was made for a {pred!r}-prediction model but the model predicts "
                         f"{denoiser.prediction!r}; pass force=True to run it anyway")


def load_schedule(path: str | Path) -> SolverSchedule:
    """Read a solver schedule JSON (:meth:`SolverSchedule.save`)."""
    return SolverSchedule.load(path)


__all__ = ["ScheduledSolver", "SolverSchedule", "StepSpec", "describe_schedule", "load_schedule",
           "model_provenance"]

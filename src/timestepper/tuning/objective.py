"""The objective of a schedule search (issue 15): distance to the model's own exact sample.

No data is needed: the ground truth is the model itself. For each training noise the reference is
a tight solve of the probability-flow ODE from the same noise (by default a 3rd-order multistep
solve with ``reference_steps`` steps on the log-SNR grid, or an exact solution the caller gives,
e.g. :meth:`timestepper.bench.GaussianMixture.reference_solution`); the objective of a schedule is
the mean L2 distance of its sample to the reference at ``sigma = 0`` -- or, for image models, the
mean L2 distance between their *features* (``features=``, e.g. a classifier's penultimate layer:
the pathwise counterpart of a Fréchet distance, which weighs the differences a feature extractor
sees rather than every pixel alike). A search scores candidates on
the training noise; :meth:`Objective.held_out` reports on a separate set. Every model call and
second spent by the objective (references included) is counted, so the search's own cost can be
reported next to its gain.

Evaluations are memoised by the schedule's content (:meth:`Objective.key`) and can be written to a
*journal* file as they happen: a search run again with the same seed and the same journal replays
the evaluations it already made without calling the model, which is how an interrupted
``timestepper tune`` resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..bench.metrics import trajectory_error
from ..core.status import SolveError
from ..core.validation import check_int, check_state
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import default_spacing
from ..sampling.sample import sample
from ..solvers.schedule import SolverSchedule

Reference = Tensor | Callable[[Tensor], Tensor] | None
#: how the journal (strict JSON) writes an infinite objective; read back as ``inf``, so a replayed
#: search sees what the live one saw (S^3's predictor treats the two differently)
JOURNAL_INF = 1e300


class CallCounter:
    """A :class:`Denoiser` view of ``denoiser`` that counts its calls (one per batched call)."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.calls = 0
        self.inner = denoiser

        def counted(x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
            self.calls += 1
            return denoiser.model_fn(x, t, **kwargs)

        self.denoiser = Denoiser(counted, denoiser.schedule, denoiser.prediction, denoiser.model_kwargs)


def model_fingerprint(denoiser: Denoiser, like: Tensor) -> str:
    """A short hash identifying the model: its parameters when it is a ``torch.nn.Module``, else
    its outputs at three times on a fixed probe shaped like ``like``."""
    h = hashlib.sha256()
    fn = denoiser.model_fn
    if isinstance(fn, torch.nn.Module):
        for name, p in sorted(fn.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().to("cpu", torch.float64).numpy().round(10).tobytes())
    else:
        g = torch.Generator().manual_seed(1234)
        probe = torch.randn((1, *like.shape[1:]), generator=g, dtype=torch.float64).to(like)
        s = denoiser.schedule
        for frac in (0.1, 0.5, 0.9):
            t = torch.full((1,), s.t_min + frac * (s.t_max - s.t_min), dtype=torch.float64, device=like.device)
            with torch.no_grad():
                out = denoiser(probe, t.to(like.dtype) if like.dtype.is_floating_point else t)
            h.update(out.detach().to("cpu", torch.float64).numpy().round(8).tobytes())
    h.update(repr(denoiser.schedule).encode() + denoiser.prediction.encode())
    return h.hexdigest()[:16]


def _digest(noise: Tensor, reference: Tensor) -> str:
    """A hash of the training problem (noise and reference, rounded), to match a journal to it."""
    h = hashlib.sha256()
    for t in (noise, reference):
        h.update(t.detach().to("cpu", torch.float64).numpy().round(7).tobytes())
    return h.hexdigest()[:16]


def tight_solve(denoiser: Denoiser, noise: Tensor, steps: int) -> Tensor:
    """The default reference: ``dpmpp-3m`` with ``steps`` steps on the log-SNR grid (uniform in
    time for a flow whose log-SNR is infinite at the ends of its range)."""
    out = sample(denoiser, noise, "dpmpp-3m", steps=steps, grid=default_spacing(denoiser.schedule))
    assert isinstance(out, Tensor)
    return out


def run_schedule(denoiser: Denoiser, noise: Tensor, schedule: SolverSchedule) -> Tensor:
    """The sample of ``schedule`` from ``noise`` (``ts.sample(den, noise, schedule=schedule)``:
    exactly ``schedule.nfe`` model calls); the provenance check is the caller's."""
    out = sample(denoiser, noise, schedule=schedule, force=True)
    assert isinstance(out, Tensor)
    return out


def finite_sample(denoiser: Denoiser, noise: Tensor, schedule: SolverSchedule) -> Tensor | None:
    """:func:`run_schedule`'s sample, or ``None`` when the schedule is refused, the solve fails
    or the sample is not finite (an evaluation that scores ``inf``)."""
    try:
        x = run_schedule(denoiser, noise, schedule)
    except (ValueError, SolveError):
        return None
    return x if bool(torch.isfinite(x).all()) else None


class Objective:
    """Mean L2 distance at ``sigma = 0`` between a schedule's sample and the reference solution.

    Args:
        denoiser: the model.
        noise: training noise (a batch, as :func:`timestepper.sample` takes it).
        reference: the exact samples for ``noise`` (a tensor), or a function ``noise -> samples``
            (then used for ``held_out`` too), or ``None``: a tight solve of the model's PF-ODE.
        held_out: noise for the held-out report (its reference is computed the same way).
        reference_steps: steps of the default reference solve (``dpmpp-3m`` on the log-SNR grid).
        seed: the seed of the search's random choices (:attr:`rng`).
        journal: a JSON file memoising evaluations across runs (resumable searches).
        features: a function ``samples -> (n, k) features``; the distance is then taken between
            the features of a schedule's sample and of the reference (default: the samples).
    """

    def __init__(self, denoiser: Denoiser, noise: Tensor, reference: Reference = None,  # noqa: PLR0913 - the protocol's inputs
                 held_out: Tensor | None = None, reference_steps: int = 400, seed: int = 0,
                 journal: str | Path | None = None, features: Callable[[Tensor], Tensor] | None = None) -> None:
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
        check_state("noise", noise)
        if features is not None and not callable(features):
            raise TypeError(f"features must be a function samples -> features, got {type(features).__name__}")
        self.features = features
        self.counter = CallCounter(denoiser)
        self.noise = noise
        self.reference_steps = check_int(reference_steps, "reference_steps", 2)
        self.seed = seed
        self.rng = random.Random(seed)
        self.seconds = 0.0
        self.evaluations = 0
        self.replayed_calls = 0
        self.on_evaluate: Callable[[float], None] | None = None
        self._cache: dict[str, float] = {}
        self._journal = Path(journal) if journal is not None else None
        self._reference_fn = reference if callable(reference) else None
        self.reference = self._reference_for(noise, reference)
        self._reference_features = self._featurize(self.reference)
        self.problem = _digest(noise, self.reference) + ("" if features is None else ":features")
        self._load_journal()
        self.held_out_noise = held_out
        self._held_out_reference: Tensor | None = None

    # -- references ----------------------------------------------------------------------------
    def _reference_for(self, noise: Tensor, given: Reference) -> Tensor:
        t0 = time.perf_counter()
        if isinstance(given, Tensor):
            if given.shape != noise.shape:
                raise ValueError(f"reference must have the noise's shape {tuple(noise.shape)}, "
                                 f"got {tuple(given.shape)}")
            ref = given
        elif callable(given):
            ref = given(noise)
        else:
            ref = tight_solve(self.counter.denoiser, noise, self.reference_steps)
        self.seconds += time.perf_counter() - t0
        return ref

    @property
    def denoiser(self) -> Denoiser:
        """The counting view of the model (use it for any extra model call a method makes)."""
        return self.counter.denoiser

    @property
    def model_calls(self) -> int:
        """Model calls spent so far, including those of earlier runs replayed from the journal."""
        return self.counter.calls + self.replayed_calls

    # -- evaluation ----------------------------------------------------------------------------
    @staticmethod
    def key(schedule: SolverSchedule) -> str:
        """The memo key: the schedule's content without its provenance."""
        d = schedule.to_dict()
        d.pop("provenance", None)
        return json.dumps(d, sort_keys=True, default=str)

    def __call__(self, schedule: SolverSchedule) -> float:
        """The training objective of ``schedule`` (``inf`` when its sample fails or is not finite)."""
        k = self.key(schedule)
        if k in self._cache:
            return self._cache[k]
        calls, t0 = self.counter.calls, time.perf_counter()
        value = self.error(schedule, self.noise, self._reference_features, self.counter.denoiser, self._extractor)
        self.seconds += time.perf_counter() - t0
        self.evaluations += 1
        self._cache[k] = value
        self._append_journal(k, value, self.counter.calls - calls, time.perf_counter() - t0)
        if self.on_evaluate is not None:
            self.on_evaluate(value)
        return value

    @property
    def _extractor(self) -> Callable[[Tensor], Tensor] | None:
        return None if self.features is None else self._featurize

    def _featurize(self, x: Tensor) -> Tensor:
        if self.features is None:
            return x
        with torch.no_grad():
            return self.features(x)

    @staticmethod
    def error(schedule: SolverSchedule, noise: Tensor, reference: Tensor, denoiser: Denoiser,
              featurize: Callable[[Tensor], Tensor] | None = None) -> float:
        """Mean L2 distance of ``schedule``'s sample from ``noise`` (its ``featurize``-d features
        when given) to ``reference`` (the reference's, featurized alike); ``inf`` when the schedule
        is refused or the sample is not finite."""
        x = finite_sample(denoiser, noise, schedule)
        if x is None:
            return math.inf
        if featurize is not None:
            x = featurize(x)
        e = trajectory_error(x, reference)
        return e if math.isfinite(e) else math.inf

    def held_out(self, schedule: SolverSchedule) -> float:
        """The objective of ``schedule`` on the held-out noise (not counted as search cost)."""
        if self.held_out_noise is None:
            raise ValueError("this objective has no held_out noise")
        if self._held_out_reference is None:
            given = self._reference_fn
            self._held_out_reference = self._featurize(
                given(self.held_out_noise) if given is not None else
                tight_solve(self.counter.inner, self.held_out_noise, self.reference_steps))
        return self.error(schedule, self.held_out_noise, self._held_out_reference, self.counter.inner, self._extractor)

    # -- journal -------------------------------------------------------------------------------
    def _load_journal(self) -> None:
        if self._journal is None or not self._journal.exists():
            return
        for line in self._journal.read_text().splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
            if entry.get("problem") != self.problem:
                raise ValueError(f"the journal {self._journal} was written for other noise or another model; "
                                 "delete it (timestepper tune --fresh) to start over")
            value = float(entry["value"])
            self._cache[entry["key"]] = math.inf if value >= JOURNAL_INF else value
            self.replayed_calls += int(entry["calls"])
            self.seconds += float(entry.get("seconds", 0.0))

    def _append_journal(self, key: str, value: float, calls: int, seconds: float) -> None:
        if self._journal is None:
            return
        entry = {"problem": self.problem, "key": key, "value": value if math.isfinite(value) else JOURNAL_INF,
                 "calls": calls, "seconds": seconds}
        with self._journal.open("a") as f:
            f.write(json.dumps(entry) + "\n")


__all__ = ["CallCounter", "Objective", "finite_sample", "model_fingerprint", "run_schedule", "tight_solve"]

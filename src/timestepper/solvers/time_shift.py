"""Time-Shift Sampler (Li, Qu, Yao, Sun & Moens, "Alleviating Exposure Bias in Diffusion Models
through Sampling with Shifted Time Steps", ICLR 2024): TS-DDIM and TS-DPM-Solver(++) multistep.

A learned model's sampling trajectory drifts off the training marginals (exposure bias): the state
``x_i`` reached at the nominal time ``t_i`` matches the noise level of another time better. Before
each step whose nominal start lies above the cutoff ``t_i > c``, the sampler measures the variance
of the current state, per sample over all its entries, and starts the step from the time of the
window around ``t_i`` whose noise level matches it best (the paper's Section 4 rule):

``t_s = argmin_{tau in W_i} | Var(x_i) - (sigma_tau^2 + alpha_tau^2 v_data) |``,
``W_i = {t_i + k delta : k = -floor(w / 2), ..., floor(w / 2)}``

with ``w`` the window size in training steps ``delta`` (one timestep of a discrete schedule,
``(t_max - t_min) / 1000`` otherwise: the paper's ``T = 1000``). ``v_data = 0`` (default) is the
paper's and its code's rule, which compares the variance with ``1 - alphabar_tau`` of a VP model;
``v_data > 0`` adds the data's own variance for schedules where it is not negligible. The model is
then evaluated at ``t_s`` and the step goes from ``(alpha, sigma, lambda)(t_s)`` to the nominal
next grid point, so the number of model calls is unchanged. The first step (from the initial noise,
which sits exactly at ``t_0``; on a grid from pure noise, ``alpha = 0``, also the step after the
DDIM step from it) is never shifted; candidates are kept within 45 % of the gaps to
the neighbouring grid times (and in ``[t_min, t_max]``), so no step runs backwards and multistep
nodes stay distinct.

Multistep solvers (TS-DPM-Solver; the paper's code shifts DPM-Solver-2 multistep): the history's
log-SNRs are the shifted start times, so a step's weights depend on which candidate each of its
nodes took. They are tabulated once per grid, in float64, for every combination of the candidates
of its nodes (``(w + 1)^k`` for a step of order ``k``) with the solver's own coefficient rule
(:meth:`DPMSolverMultistep.weights <timestepper.solvers.dpmpp.DPMSolverMultistep.weights>`
evaluated on the batch of grids of all combinations at once, :mod:`~timestepper.solvers.expint`),
cast to the state's dtype and moved to its device once. A step then picks
each sample's candidate with an ``argmin`` and gathers its time, prediction conversion and weights
by index: no host synchronisation, no data-dependent Python branch.

The shifted time is a deliberate departure from the probability-flow ODE: with an exact denoiser
(no exposure bias) it can only add error; its gain is on imperfect, learned models
(docs/time_shift.md gives measured numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.validation import check_int
from ..diffusion.grids import SamplingGrid
from ..diffusion.schedules import NoiseSchedule, VPDiscreteSchedule
from ..diffusion.term import DiffusionTerm, EvalPoint
from .base import nonzero
from .dpmpp import DPMSolverMultistep
from .expint import PhiTable
from .multistep import MultistepRow
from .registry import register

MAX_COMBINATIONS = 100_000  # candidate combinations tabulated for one step
NEIGHBOUR_FRACTION = 0.45  # a candidate moves at most this fraction of the gap to a neighbouring grid time


@dataclass(slots=True)
class Candidates:
    """The start times a shifted step may take (device tensors, one entry per candidate).

    ``times`` are handed to the model; ``target_var`` is the variance of a state at each of
    them; ``conv[:, k] = (a, b)`` converts the model output ``m`` there to the prediction
    ``a x + b m`` the solver combines."""

    times: Tensor
    target_var: Tensor
    conv: Tensor
    correction: int


@dataclass(slots=True)
class ShiftedRow:
    """A step one of whose nodes (its start or a history node) was shifted.

    ``cand`` is ``None`` when the step's own start is the nominal ``point``. ``cx[c]`` and
    ``weights[:, c]`` are the coefficients of candidate combination ``c = sum_j idx_j
    strides[j]`` (``j`` newest first; ``strides[j]`` is ``None`` for an unshifted node)."""

    point: EvalPoint
    cand: Candidates | None
    cx: Tensor
    weights: Tensor
    strides: tuple[int | None, ...]


def default_time_step(schedule: NoiseSchedule) -> float:
    """One training step of ``schedule``: 1 timestep of a discrete schedule, else ``(t_max -
    t_min) / 1000`` (the paper's window is counted in the ``T = 1000`` steps of its models)."""
    if isinstance(schedule, VPDiscreteSchedule):
        return 1.0
    return (schedule.t_max - schedule.t_min) / 1000.0


def candidate_times(grid: SamplingGrid, schedule: NoiseSchedule, n: int, window: int,
                    time_step: float) -> Tensor:
    """The window of start times around grid point ``n`` (float64, ``window // 2`` steps of
    ``time_step`` on either side), clipped to ``[t_min, t_max]`` and to within
    ``NEIGHBOUR_FRACTION`` (45 %) of the gaps to the neighbouring grid times."""
    t = grid.t
    half = window // 2
    times = t[n] + time_step * torch.arange(-half, half + 1, dtype=torch.float64)
    tn = float(t[n])
    lo = max(schedule.t_min, tn - NEIGHBOUR_FRACTION * (tn - float(t[n + 1])))
    hi = min(schedule.t_max, tn + NEIGHBOUR_FRACTION * (float(t[n - 1]) - tn)) if n > 0 else tn
    return times.clamp(min(lo, tn), max(hi, tn))


@dataclass(slots=True)
class NodeCombinations:
    """Every combination of the candidates of a step's nodes: ``fields[n]`` holds node ``n``'s
    ``(t, alpha, sigma, log_snr)`` over the ``count`` combinations (its candidate values where it is
    shifted, its grid values otherwise), in row-major order of the nodes (oldest first), so the
    newest node's index varies fastest; ``strides`` (newest first) turn per-node candidate
    indices into a combination index (``None`` for an unshifted node)."""

    fields: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]]
    count: int
    strides: tuple[int | None, ...]

    def grid(self, nodes: list[int], target: tuple[Tensor, Tensor, Tensor, Tensor]) -> SamplingGrid:
        """The batch of grids (2-D fields ``(len(nodes) + 1, count)``, :mod:`~timestepper.solvers.expint`)
        of points ``nodes`` followed by the ``target`` point's values."""
        return SamplingGrid(*(torch.stack([*(self.fields[n][f] for n in nodes), target[f].expand(self.count)])
                              for f in range(4)))


FIELDS = ("t", "alpha", "sigma", "log_snr")


def node_combinations(grid: SamplingGrid, nodes: list[int], cands: dict[int, SamplingGrid]) -> NodeCombinations:
    """The :class:`NodeCombinations` of grid points ``nodes`` (oldest first)."""
    sizes = [cands[n].t.numel() if n in cands else 1 for n in nodes]
    count = math.prod(sizes)
    fields = {}
    for j, n in enumerate(nodes):
        shape = [1] * len(sizes)
        shape[j] = sizes[j]
        src = cands[n] if n in cands else grid.points(n, n + 1)
        fields[n] = tuple(getattr(src, name).reshape(shape).expand(sizes).reshape(count) for name in FIELDS)
    strides: list[int | None] = []  # newest node first; it varies fastest
    stride = 1
    for n, size in zip(reversed(nodes), reversed(sizes)):
        strides.append(stride if n in cands else None)
        stride *= size
    return NodeCombinations(fields, count, tuple(strides))


def grid_point(grid: SamplingGrid, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Point ``n``'s ``(t, alpha, sigma, log_snr)`` as 0-d tensors."""
    return tuple(getattr(grid, name)[n] for name in FIELDS)


def select(x: Tensor, cand: Candidates) -> Tensor:
    """Each sample's candidate: the one whose state variance is nearest the sample's own
    variance over all its entries (a ``(B,)`` index tensor; no host read)."""
    v = x.reshape(x.shape[0], -1).var(dim=1, correction=cand.correction)
    return (v[:, None] - cand.target_var).abs().argmin(dim=1)


def combination_index(idxs: tuple[Tensor | None, ...], strides: tuple[int | None, ...]) -> Tensor:
    """Each sample's candidate combination ``sum_j idxs[j] strides[j]`` over the shifted nodes
    (which nodes are shifted is fixed by the table, not by data)."""
    terms = [idx * stride for idx, stride in zip(idxs, strides) if stride is not None and idx is not None]
    if not terms:
        raise ValueError("a shifted row needs a shifted node")
    out = terms[0]
    for extra in terms[1:]:
        out = out + extra
    return out


class TimeShift:
    """The Time-Shift Sampler's options and candidate tables, shared by its bases (the multistep
    DPM-Solver family here, UniPC in :mod:`~timestepper.solvers.time_shift_unipc`). A base's
    :meth:`table` tabulates its weights for every candidate combination of a step's nodes
    (:func:`node_combinations`); :meth:`evaluate` picks each sample's candidate and calls the
    model there."""

    evaluates_on_grid = False  # data-dependent model times: no diffusers step protocol
    stacks_rows = False  # its rows pick a candidate combination per sample
    reuses_state_memory = False  # a step of its own (advance)
    prediction = "data"

    def init_shift(self, window: int, cutoff: float | None, time_step: float | None,  # noqa: PLR0913
                   data_variance: float, nodes: int, order: int) -> None:
        """Check and keep the paper's options; ``nodes`` shifted nodes at most enter one step's
        weights (``order`` names the base's order in the error)."""
        self.window = check_int(window, "window", 0)
        self.cutoff = None if cutoff is None else float(cutoff)
        if time_step is not None and not float(time_step) > 0:
            raise ValueError(f"time_step must be > 0, got {time_step!r}")
        self.time_step = None if time_step is None else float(time_step)
        if not float(data_variance) >= 0:
            raise ValueError(f"data_variance must be >= 0, got {data_variance!r}")
        self.data_variance = float(data_variance)
        if (window + 1) ** nodes > MAX_COMBINATIONS:
            raise ValueError(f"window={window} with order {order} tabulates "
                             f"{(window + 1) ** nodes} candidate combinations per step "
                             f"(at most {MAX_COMBINATIONS}): use a smaller window or order")

    def shifted_points(self, schedule: NoiseSchedule, grid: SamplingGrid) -> list[int]:
        """The grid points whose start time is shifted: all but the first, above the cutoff."""
        cutoff = self.cutoff
        if cutoff is None:
            cutoff = schedule.t_min + 0.3 * (schedule.t_max - schedule.t_min)
        t = grid.t.tolist()
        return [n for n in range(1, grid.steps) if t[n] > cutoff]

    def shift_candidates(self, schedule: NoiseSchedule, grid: SamplingGrid) -> dict[int, SamplingGrid]:
        """The candidate start times (a grid of them) of every shifted point."""
        dt = self.time_step if self.time_step is not None else default_time_step(schedule)
        return {n: SamplingGrid.from_times(schedule, candidate_times(grid, schedule, n, self.window, dt))
                for n in self.shifted_points(schedule, grid)}

    def candidates(self, term: DiffusionTerm, cgrid: SamplingGrid, x0: Tensor) -> Candidates:
        """The device tensors of one step's candidate start points."""
        pts = term.points(cgrid, x0)
        conv = [(p.a, p.b) if self.prediction == "data" else (p.c, p.d) for p in pts]
        var = cgrid.sigma**2 + cgrid.alpha**2 * self.data_variance
        return Candidates(torch.stack([p.t[0] for p in pts]), var.to(device=x0.device, dtype=_dtype(x0)),
                          torch.tensor(conv, dtype=torch.float64).T.to(device=x0.device, dtype=_dtype(x0)),
                          1 if (x0[0].numel() if x0.ndim > 0 else 1) > 1 else 0)

    def evaluate(self, term: DiffusionTerm, x: Tensor, point: EvalPoint,
                 cand: Candidates | None) -> tuple[Tensor, Tensor | None]:
        """The prediction at ``x`` and each sample's candidate index: at the nominal ``point``
        (index ``None``) when the step's start is not shifted, else at the candidate whose noise
        level matches the sample's variance (:func:`select`)."""
        if cand is None:
            return term.prediction(x, point, self.prediction), None
        k_now = select(x, cand)
        raw = term.model_output(x, EvalPoint(cand.times[k_now], 0.0, 0.0, 0.0, 0.0))
        ab = cand.conv[:, k_now]
        shape = (-1,) + (1,) * (x.ndim - 1)
        return x * ab[0].view(shape) + raw * ab[1].view(shape), k_now


def _dtype(x0: Tensor) -> torch.dtype:
    return x0.dtype if x0.is_floating_point() else torch.float64


def device_column(values, count: int, x0: Tensor) -> Tensor:
    """A float64 ``(count,)`` column of tabulated coefficients, cast to the state's dtype and moved
    to its device once."""
    return torch.as_tensor(values, dtype=torch.float64).expand(count).to(device=x0.device, dtype=_dtype(x0))


def per_sample(coeffs: Tensor, combo: Tensor, x: Tensor) -> Tensor:
    """Each sample's coefficient from a tabulated column, shaped to broadcast over ``x``."""
    return coeffs[combo].view((-1,) + (1,) * (x.ndim - 1))


class TimeShiftSampler(TimeShift, DPMSolverMultistep):
    """Time-Shift Sampler (Li et al., ICLR 2024) on the multistep DPM-Solver(++) family: order 1 is
    TS-DDIM, order 2 TS-DPM-Solver(++)-2M. One model call per step.

    Args:
        order: 1 (DDIM, the first-order exponential integrator) or 2 (2M); 3 is allowed with
            small windows (``(window + 1)^3`` combinations are tabulated per step).
        prediction: ``"data"`` (DPM-Solver++) or ``"noise"`` (DPM-Solver, as the paper's code).
        window: the window size ``w`` in training steps (candidates ``t_i + k time_step`` for
            ``|k| <= w // 2``); 0 evaluates at the nominal time (the base solver).
        cutoff: only steps starting at a nominal time ``t_i > cutoff`` are shifted (the paper's
            ``t_c``, in the schedule's own time); default ``t_min + 0.3 (t_max - t_min)`` (300 of a
            1000-step discrete schedule).
        time_step: the spacing of the candidates (default :func:`default_time_step`).
        data_variance: ``v_data`` of the rule (module docstring); 0 is the paper's rule.
        solver_type, lower_order_final: as :class:`~timestepper.solvers.dpmpp.DPMSolverMultistep`.
    """

    def __init__(  # noqa: PLR0913 - the base solver's options plus the paper's three
        self,
        order: int = 2,
        prediction: str = "data",
        window: int = 10,
        cutoff: float | None = None,
        time_step: float | None = None,
        data_variance: float = 0.0,
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
    ) -> None:
        DPMSolverMultistep.__init__(self, order, prediction, solver_type, lower_order_final)
        self.init_shift(window, cutoff, time_step, data_variance, self.max_order, self.max_order)

    def start_state(self, x0):
        return (), ()

    def table(self, term, grid, points, x0):
        cands = self.shift_candidates(term.schedule, grid)
        phis = self.phi_table(grid)
        rows: list[MultistepRow | ShiftedRow] = []
        for i, k in enumerate(self.step_orders(grid)):
            nodes = [i - j for j in range(k)][::-1]  # oldest first
            if not any(n in cands for n in nodes):
                cx, w = self.weights(grid, i, k, phis)
                rows.append(MultistepRow(points[i], nonzero(cx), tuple(w)))
            else:
                cand = self.candidates(term, cands[i], x0) if i in cands else None
                rows.append(self.shifted_row(grid, i, nodes, cands, points[i], cand, x0))
        return rows

    def shifted_row(self, grid, i, nodes, cands, point, cand, x0) -> ShiftedRow:  # noqa: PLR0913
        """The tabulated coefficients of step ``i`` for every combination of its nodes'
        candidates: the solver's own :meth:`weights` on the batch of grids of the combinations,
        float64, cast to the state's dtype and moved to its device once."""
        combos = node_combinations(grid, nodes, cands)
        cx, w = self.weights(combos.grid(nodes, grid_point(grid, i + 1)), len(nodes) - 1, len(nodes),
                             PhiTable([], 0))  # (C,) tensors: all combinations
        return ShiftedRow(point, cand, device_column(cx, combos.count, x0),
                          torch.stack([device_column(v, combos.count, x0) for v in w]), combos.strides)

    def advance(self, term, x, state, row):
        preds, idxs = state
        if type(row) is MultistepRow:
            out, hist, _, nfe = super().advance(term, x, preds, row)
            return out, (hist, (None, *idxs)[: self.max_order - 1]), None, nfe
        m, k_now = self.evaluate(term, x, row.point, row.cand)
        hist, hidx = (m, *preds), (k_now, *idxs)
        combo = combination_index(hidx, row.strides)
        out = x * per_sample(row.cx, combo, x)
        for j in range(row.weights.shape[0]):
            out = out + hist[j] * per_sample(row.weights[j], combo, x)
        keep = self.max_order - 1
        return out, (hist[:keep], hidx[:keep]), None, 1


register("ts-ddim", TimeShiftSampler, order=1, prediction="data",
         summary="Time-Shift DDIM (Li et al. 2024): DDIM started from the time in a window whose "
                 "noise level matches the state's variance. Order 1 at window 0; one call per step.")
register("ts-dpmpp-2m", TimeShiftSampler, order=2, prediction="data",
         summary="Time-Shift DPM-Solver++(2M) (Li et al. 2024): shifted start times, multistep "
                 "weights from the shifted log-SNRs. One model call per step.")
register("ts-dpm-solver-2m", TimeShiftSampler, order=2, prediction="noise",
         summary="Time-Shift multistep DPM-Solver-2 in noise prediction (Li et al. 2024, the "
                 "paper's TS-DPM-Solver). One model call per step.")

__all__ = ["Candidates", "NodeCombinations", "ShiftedRow", "TimeShift", "TimeShiftSampler", "candidate_times",
           "device_column", "grid_point", "node_combinations", "per_sample", "select"]

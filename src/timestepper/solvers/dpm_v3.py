"""DPM-Solver-v3 (Zheng, Lu, Chen & Zhu, NeurIPS 2023, "DPM-Solver-v3: Improved Diffusion ODE
Solver with Empirical Model Statistics", arXiv:2310.13268).

With ``lambda = log(alpha / sigma)`` the probability-flow ODE is
``dx/dlambda = (dlog alpha / dlambda) x - sigma eps(x, lambda)``. DPM-Solver-v3 rewrites it with
three per-dimension *empirical model statistics* (EMS) ``l, s, b`` (functions of ``lambda``,
shaped like one sample; Section 3.1 of the paper):

* ``N = sigma eps - l x`` is the non-linear part left after moving ``l x`` into the linear part,
  ``f = N / alpha``, and with ``L(lambda) = int l``:
  ``x_t = (alpha_t / alpha_s) e^{-(L_t - L_s)} x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-(L_t - L_r)} f(r) dr``;
* ``g(lambda) = e^{-(S_lambda - S_s)} f(lambda) - int_{lambda_s}^{lambda} e^{-(S_r - S_s)} b_r dr``
  (``S = int s``) is the quantity the solver expands in ``lambda``. The EMS are fitted so that
  ``g`` is as flat as possible along the model's own trajectories: ``l = E[diag(d(sigma eps)/dx)]``
  and ``(s, b)`` the per-dimension least-squares fit ``df/dlambda ~ s f + b`` (eq. 6-7;
  :func:`timestepper.tuning.ems.compute_ems` estimates them).

Expanding ``g`` to order ``n`` around ``lambda_s``, ``g ~ sum_k g^(k) (lambda - lambda_s)^k / k!``,
gives the local update (eq. 8)

``x_t = A x_s - alpha_t e^{-(L_t - L_s)} [sum_k J_k g^(k) + Q]``, ``A = (alpha_t / alpha_s) e^{-(L_t - L_s)}``,
``J_k = int e^{(L + S)(r) - (L + S)(lambda_s)} (r - lambda_s)^k / k! dr``,
``Q = int e^{(L + S)(r) - (L + S)(lambda_s)} B_s(r) dr``, ``B_s(r) = int_{lambda_s}^{r} e^{-(S_u - S_s)} b_u du``.

The derivatives ``g^(k)`` come from the ``g`` values at past points (multistep predictor): the
interpolating polynomial (order ``n + 1``), or with ``predictor_pseudo`` the *pseudo-order*
estimate of Section 3.3 (``g^(k)`` from the ``k + 1`` newest points only: Newton divided
differences). The *pseudo-corrector* (Section 3.2) redoes the previous step once the model has
been evaluated at its end ``t``, with ``t`` among the points (like UniC), keeping ``N`` at ``t`` (so
``f_t``) unchanged: no extra model call. Its order is the previous predictor's (plus one with
``corrector_pseudo``); a corrector of order 1 changes nothing and is skipped.

Numerics (all float64, once per grid, no host sync in a step): the EMS are piecewise linear in
``lambda`` between their points (constant outside), so ``L`` and ``S`` are exact piecewise
quadratics; ``J_k``, ``Q`` and ``B_s`` are computed by composite Gauss-Legendre quadrature on the
pieces between EMS points (each cut to width <= 0.25, 8 nodes), exact to rounding for these
smooth integrands. Every step is then ``x_t = A * x_s + sum_j V_j * f_j + K`` with per-dimension
tensors ``A, V_j, K`` and ``f_j = (sigma_j / alpha_j) eps_j - (l_j / alpha_j) * x_j`` stored in the
history.

Special cases (Section 3.1): ``l = 1, s = b = 0`` gives ``f = -x0`` and ``g = -x0`` -- DPM-Solver++
(data prediction) with exact Taylor weights: order 2 is ``dpmpp-2m`` with ``solver_type="heun"``,
order 3 is ``dpmpp-3m`` (its default Taylor third-order weight); ``l = 0, s = -1, b = 0`` is the
noise-prediction multistep DPM-Solver. (Not ``l = s = b = 0``: that expands ``e^{-lambda} eps``.)
Without statistics the solver runs the ``l = 1, s = b = 0`` case.

Deliberate differences from the official code (thu-ml/DPM-Solver-v3): integrals by Gauss-Legendre
on the interpolated EMS instead of the trapezoid rule on the statistics grid (so grids need not
lie on the statistics points); ``lower_order_final`` follows this library's multistep rule (only
grids under 15 steps); a step to zero noise (``final="zero"``) is the first-order data-prediction
step, as in every multistep solver here, since the EMS are not defined at ``lambda = +inf``.
"""

from __future__ import annotations

import hashlib
import json
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.validation import check_order
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm, EvalPoint
from .base import DiffusionSolver
from .expint import first_order_at, grid_floats, multistep_orders, polynomial_basis
from .registry import register
from .schedule import describe_schedule

F64 = torch.float64
GL_NODES = 8
MAX_PIECE = 0.25
FORMAT = "timestepper-ems-1"


# -- the statistics --------------------------------------------------------------------------------

@dataclass(eq=False)
class EMS:
    """Empirical model statistics of DPM-Solver-v3 (Zheng et al. 2023, Section 3.1).

    Attributes:
        log_snr: ``(K,)`` strictly increasing ``lambda = log(alpha / sigma)`` points (float64).
        l, s, b: ``(K, *sample_shape)`` statistics at those points (float64).
        header: provenance: ``schedule`` and ``model`` fingerprints, ``prediction``, ``n_samples``,
            the cost of computing them (see :func:`model_fingerprint`).
    """

    log_snr: Tensor
    l: Tensor
    s: Tensor
    b: Tensor
    header: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_snr = torch.as_tensor(self.log_snr, dtype=F64).flatten().cpu()
        k = self.log_snr.numel()
        if k < 1 or not bool(torch.isfinite(self.log_snr).all()) or not bool((self.log_snr.diff() > 0).all()):
            raise ValueError("EMS log_snr must be a non-empty, finite, strictly increasing 1-D tensor")
        for name in ("l", "s", "b"):
            v = torch.as_tensor(getattr(self, name), dtype=F64).cpu()
            if v.ndim < 1 or v.shape[0] != k or not bool(torch.isfinite(v).all()):
                raise ValueError(f"EMS {name} must be finite with one row per log_snr point ({k}), "
                                 f"got shape {tuple(v.shape)}")
            setattr(self, name, v)
        if not (self.l.shape == self.s.shape == self.b.shape):
            raise ValueError(f"EMS l, s, b must have the same shape, got {tuple(self.l.shape)}, "
                             f"{tuple(self.s.shape)}, {tuple(self.b.shape)}")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample the statistics are for."""
        return tuple(self.l.shape[1:])

    @classmethod
    def constant(cls, sample_shape: Sequence[int], l: float = 1.0, s: float = 0.0, b: float = 0.0,
                 log_snr: tuple[float, float] = (-30.0, 30.0)) -> EMS:
        """Statistics constant in ``lambda``: ``l = 1, s = b = 0`` is DPM-Solver++ (data
        prediction), ``l = 0, s = -1, b = 0`` the noise-prediction DPM-Solver."""
        lam = torch.tensor(log_snr, dtype=F64)
        shape = (2, *map(int, sample_shape))
        return cls(lam, torch.full(shape, float(l), dtype=F64), torch.full(shape, float(s), dtype=F64),
                   torch.full(shape, float(b), dtype=F64), {})

    # -- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready inline form (nested lists); :meth:`from_dict` reads it back."""
        return {"format": FORMAT, "header": self.header, "log_snr": self.log_snr.tolist(),
                "l": self.l.tolist(), "s": self.s.tolist(), "b": self.b.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EMS:
        """The statistics of :meth:`to_dict`."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"statistics dict must come from EMS.to_dict() (format {FORMAT!r})")
        return cls(torch.tensor(d["log_snr"], dtype=F64), torch.tensor(d["l"], dtype=F64),
                   torch.tensor(d["s"], dtype=F64), torch.tensor(d["b"], dtype=F64), dict(d.get("header", {})))

    def save(self, path: str | Path) -> None:
        """Write the statistics to ``path``: a torch file of the four float64 tensors and the JSON
        header (read back safely with ``weights_only``)."""
        torch.save({"format": FORMAT, "header": json.dumps(self.header, sort_keys=True),
                    "log_snr": self.log_snr, "l": self.l, "s": self.s, "b": self.b}, str(path))

    @classmethod
    def load(cls, path: str | Path, denoiser: Denoiser | None = None, force: bool = False) -> EMS:
        """Read statistics written by :meth:`save`; with ``denoiser``, refuse them unless they were
        computed for that model (:meth:`check_model`) or ``force`` is set."""
        try:
            d = torch.load(str(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"statistics file {str(path)!r} does not exist") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a DPM-Solver-v3 statistics file (format {FORMAT!r})")
        ems = cls(d["log_snr"], d["l"], d["s"], d["b"], json.loads(d["header"]))
        if denoiser is not None:
            ems.check_model(denoiser, force=force)
        return ems

    def check_model(self, denoiser: Denoiser, force: bool = False) -> None:
        """Raise ``ValueError`` unless the header's schedule, prediction type and model fingerprint
        are those of ``denoiser`` (statistics without a header, e.g. :meth:`constant`, pass).
        ``force`` skips the check."""
        if force or not self.header:
            return
        mine = model_fingerprint(denoiser)
        for key in ("schedule", "prediction", "model"):
            if key in self.header and self.header[key] != mine[key]:
                raise ValueError(
                    f"these DPM-Solver-v3 statistics were computed for another {key} "
                    f"({self.header[key]!r}, this model has {mine[key]!r}); recompute them with "
                    "timestepper.tuning.ems.compute_ems, or pass force=True to use them anyway")


def _children(obj: Any) -> list[Any]:
    """What a model function holds: a denoiser's function and keyword arguments, a function's
    closure cells, bound object and wrapped function, a container's items, an object's attributes."""
    if isinstance(obj, Denoiser):
        return [obj.model_fn, obj.model_kwargs]
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, (list, tuple)):
        return list(obj)
    out = [c.cell_contents for c in (getattr(obj, "__closure__", None) or ()) if _cell_is_set(c)]
    out += [getattr(obj, a, None) for a in ("__self__", "__wrapped__", "func")]
    return out + list(getattr(obj, "__dict__", {}).values())


def _tensors_of(obj: Any, depth: int = 0, seen: set[int] | None = None) -> list[Tensor]:
    """The tensors a model function reaches (a module's parameters and buffers, the arrays of an
    exact model), following closures, bound objects and attributes up to five levels deep."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 5 or isinstance(obj, (str, bytes, int, float, bool, type(None), type)):
        return []
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, torch.nn.Module):
        return list(obj.state_dict().values())
    return [t for child in _children(obj) for t in _tensors_of(child, depth + 1, seen)]


def _cell_is_set(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _digest(tensors: Sequence[Tensor]) -> str:
    """A hash of the set of tensors (each by dtype, shape and bytes; order and repeats ignored)."""
    parts = set()
    for t in tensors:
        t = t.detach().cpu().contiguous().reshape(-1)
        parts.add(hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode() + t.view(torch.uint8).numpy().tobytes())
                  .hexdigest())
    return hashlib.sha256("".join(sorted(parts)).encode()).hexdigest()[:16]


def model_fingerprint(denoiser: Denoiser) -> dict[str, Any]:
    """``{"schedule", "prediction", "model", "schedule_description"}`` of a denoiser: its noise
    schedule's class and a hash of its ``alpha, sigma`` at 33 times, its prediction type, a hash
    of the set of tensors its model function reaches (a module's parameters and buffers, or the
    arrays of an exact model; wrappers such as a call-counting view reach the same set), and the
    schedule as :func:`~timestepper.solvers.schedule.describe_schedule` records it (for reading;
    not compared). Cached per denoiser object."""
    cached = _FINGERPRINTS.get(denoiser)
    if cached is not None:
        return cached
    sch = denoiser.schedule
    al, si = sch.alpha_sigma(torch.linspace(sch.t_min, sch.t_max, 33, dtype=F64))
    out = {"schedule": f"{type(sch).__name__}:{_digest([al, si])}", "prediction": denoiser.prediction,
           "model": _digest(_tensors_of(denoiser)), "schedule_description": describe_schedule(sch)}
    _FINGERPRINTS[denoiser] = out
    return out


_FINGERPRINTS: weakref.WeakKeyDictionary[Denoiser, dict[str, Any]] = weakref.WeakKeyDictionary()


# -- quadrature on the interpolated statistics ----------------------------------------------------

class _PiecewiseLinear:
    """A per-dimension function of ``lambda``, linear between knots and constant outside, with its
    exact antiderivative ``int_{knots[0]}^{lambda}``."""

    def __init__(self, knots: Tensor, values: Tensor) -> None:
        if knots.numel() == 1:
            knots, values = torch.cat([knots, knots + 1.0]), torch.cat([values, values])
        self.knots, self.values = knots, values
        self.slopes = (values[1:] - values[:-1]) / (knots[1:] - knots[:-1])[:, None]
        pieces = 0.5 * (values[1:] + values[:-1]) * (knots[1:] - knots[:-1])[:, None]
        self.cum = torch.cat([torch.zeros_like(values[:1]), pieces.cumsum(0)])

    def _locate(self, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        inside = lam.clamp(float(self.knots[0]), float(self.knots[-1]))
        idx = (torch.searchsorted(self.knots, inside, right=True) - 1).clamp(0, self.knots.numel() - 2)
        return inside, idx, inside - self.knots[idx]

    def value(self, lam: Tensor) -> Tensor:
        """``(M, D)`` values at the ``(M,)`` points ``lam``."""
        _, idx, w = self._locate(lam)
        return self.values[idx] + self.slopes[idx] * w[:, None]

    def integral(self, lam: Tensor) -> Tensor:
        """``(M, D)``: ``int_{knots[0]}^{lam}`` (exact)."""
        inside, idx, w = self._locate(lam)
        w2 = w[:, None]
        at = self.cum[idx] + self.values[idx] * w2 + 0.5 * self.slopes[idx] * w2 * w2
        return at + (lam - inside)[:, None] * self.value(inside)


_GL_X, _GL_W = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(GL_NODES))


def _breakpoints(a: float, b: float, knots: Tensor) -> Tensor:
    """``a``, the knots strictly between, ``b``; each gap cut into pieces no wider than ``MAX_PIECE``."""
    lo, hi = min(a, b), max(a, b)
    inner = knots[(knots > lo) & (knots < hi)].tolist()
    pts = [lo, *inner, hi]
    out = [lo]
    for p, q in zip(pts[:-1], pts[1:]):
        n = max(1, math.ceil((q - p) / MAX_PIECE))
        out += [p + (q - p) * (j + 1) / n for j in range(n)]
    out[-1] = hi
    return torch.tensor(out if a <= b else out[::-1], dtype=F64)


def _nodes(bounds: Tensor) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes ``(P, n)`` and signed weights ``(P, n)`` of the pieces ``bounds``."""
    lo, hi = bounds[:-1, None], bounds[1:, None]
    half = 0.5 * (hi - lo)
    return lo + half * (_GL_X + 1.0), half * _GL_W


class _Statistics:
    """The interpolated EMS of one solve and the integrals of its updates (float64, CPU)."""

    def __init__(self, ems: EMS) -> None:
        k = ems.log_snr
        self.knots = k
        self.l = _PiecewiseLinear(k, ems.l.reshape(k.numel(), -1))
        self.s = _PiecewiseLinear(k, ems.s.reshape(k.numel(), -1))
        self.b = _PiecewiseLinear(k, ems.b.reshape(k.numel(), -1))

    def l_at(self, lam: float) -> Tensor:
        return self.l.value(torch.tensor([lam], dtype=F64))[0]

    def _exponent(self, lam: Tensor, lam_s: float) -> Tensor:
        """``(L + S)(lam) - (L + S)(lam_s)``."""
        base = torch.tensor([lam_s], dtype=F64)
        return (self.l.integral(lam) - self.l.integral(base)) + (self.s.integral(lam) - self.s.integral(base))

    def _b_integrand(self, lam: Tensor, lam_s: float) -> Tensor:
        """``e^{-(S(lam) - S(lam_s))} b(lam)`` at ``(M,)`` points."""
        s_rel = self.s.integral(lam) - self.s.integral(torch.tensor([lam_s], dtype=F64))
        return torch.exp(-s_rel) * self.b.value(lam)

    def beta(self, lam_s: float, lam: float) -> Tensor:
        """``B_s(lam) = int_{lam_s}^{lam} e^{-(S_u - S_s)} b_u du`` (signed)."""
        if lam == lam_s:
            return torch.zeros(self.l.values.shape[1], dtype=F64)
        x, w = _nodes(_breakpoints(lam_s, lam, self.knots))
        return (w.reshape(-1, 1) * self._b_integrand(x.reshape(-1), lam_s)).sum(0)

    def _beta_at_nodes(self, bounds: Tensor, x: Tensor, w: Tensor, lam_s: float) -> Tensor:
        """``B_s`` at every node ``x (P, n)``: whole pieces before it plus the part of its own."""
        whole = (w[..., None] * self._b_integrand(x.reshape(-1), lam_s).reshape(*x.shape, -1)).sum(1)
        before = torch.cat([torch.zeros_like(whole[:1]), whole.cumsum(0)[:-1]])
        lo = bounds[:-1, None, None]
        half = 0.5 * (x[..., None] - lo)  # (P, n, 1)
        inner_x = lo + half * (_GL_X + 1.0)  # (P, n, n)
        f = self._b_integrand(inner_x.reshape(-1), lam_s).reshape(*inner_x.shape, -1)
        part = ((half * _GL_W)[..., None] * f).sum(2)
        return before[:, None, :] + part

    def moments(self, lam_s: float, lam_t: float, n: int) -> tuple[list[Tensor], Tensor]:
        """``[J_0 .. J_{n-1}]`` and ``Q`` of the step ``lam_s -> lam_t`` (module docstring)."""
        bounds = _breakpoints(lam_s, lam_t, self.knots)
        x, w = _nodes(bounds)
        e = torch.exp(self._exponent(x.reshape(-1), lam_s)) * w.reshape(-1, 1)
        u = (x.reshape(-1) - lam_s)[:, None]
        js = [(e * u**k).sum(0) / math.factorial(k) for k in range(n)]
        q = (e * self._beta_at_nodes(bounds, x, w, lam_s).reshape(e.shape)).sum(0)
        return js, q


def derivative_weights(offsets: Sequence[float], pseudo: bool) -> list[list[float]]:
    """``D`` with ``g^(k) ~ sum_j D[k][j] g_j`` from values at ``lambda_s + offsets[j]``
    (``offsets[0] = 0``). Full: derivatives of the interpolating polynomial. Pseudo (Zheng et al.
    2023, Section 3.3): ``g^(k) = k! [g_0, ..., g_k]``, the divided difference of the ``k + 1``
    first points."""
    n = len(offsets)
    if not pseudo:
        basis = polynomial_basis(list(offsets))
        return [[math.factorial(k) * basis[k][j] for j in range(n)] for k in range(n)]
    rows = []
    for k in range(n):
        row = [0.0] * n
        for j in range(k + 1):
            row[j] = math.factorial(k) / math.prod(offsets[j] - offsets[m] for m in range(k + 1) if m != j)
        rows.append(row)
    return rows


# -- the solver -------------------------------------------------------------------------------------

@dataclass(slots=True)
class V3Update:
    """``x_t = cx * x_s + sum_j weights[j] * f_j + const`` (per-dimension tensors; ``f_j`` newest first)."""

    cx: Tensor
    weights: tuple[Tensor, ...]
    const: Tensor | None

    def apply(self, x: Tensor, fs: Sequence[Tensor]) -> Tensor:
        out = x * self.cx
        for w, f in zip(self.weights, fs):
            out.addcmul_(w, f)
        return out if self.const is None else out.add_(self.const)


@dataclass(slots=True)
class V3Row:
    """Step ``i``: evaluate at ``point``; ``f_i = f_scale * eps + f_shift * x_i``; optionally correct
    ``x_i`` from ``x_{i-1}`` (pseudo-corrector), then predict ``x_{i+1}``."""

    point: EvalPoint
    f_scale: float
    f_shift: Tensor
    corrector: V3Update | None
    predictor: V3Update


class DPMSolverV3(DiffusionSolver):
    """DPM-Solver-v3 (Zheng et al., NeurIPS 2023): the multistep predictor on the empirical model
    statistics, with its pseudo-order estimates and pseudo-corrector (module docstring).

    Args:
        statistics: an :class:`EMS`, the path of a file written by :meth:`EMS.save`, or its
            :meth:`EMS.to_dict` form; ``None``: ``l = 1, s = b = 0`` (DPM-Solver++).
        order: predictor order, 1-3 (the predictions it combines).
        predictor_pseudo: pseudo-order derivative estimates in the predictor (the paper uses it at
            5 NFE). They take ``g'`` from the two newest points, so the method converges at order
            2 (measured), which ``self.order`` then declares.
        corrector: the pseudo-corrector (no extra model call).
        corrector_pseudo: one order more in the corrector, pseudo-order estimates (order 2 too).
        lower_order_final: lower orders on the last two steps of grids with fewer than 15 steps.
        force: use statistics computed for another model (refused otherwise).
    """

    nfe_per_step = 1

    def __init__(  # noqa: PLR0913 - the paper's options, all with defaults
        self,
        statistics: EMS | str | Path | dict | None = None,
        order: int = 3,
        predictor_pseudo: bool = False,
        corrector: bool = True,
        corrector_pseudo: bool = False,
        lower_order_final: bool = True,
        force: bool = False,
    ) -> None:
        if statistics is not None and not isinstance(statistics, (EMS, str, Path, dict)):
            raise TypeError("statistics must be an EMS, a path to a saved EMS file, an EMS.to_dict() dict "
                            f"or None, got {type(statistics).__name__}")
        self.statistics = statistics
        self.points = check_order(order, (1, 2, 3))  # predictions the predictor combines
        # a pseudo-order estimate takes g' from two points: the method is then second order
        self.order = min(self.points, 2) if (predictor_pseudo or corrector_pseudo) else self.points
        self.predictor_pseudo = bool(predictor_pseudo)
        self.corrector = bool(corrector)
        self.corrector_pseudo = bool(corrector_pseudo)
        self.lower_order_final = bool(lower_order_final)
        self.force = bool(force)
        self.keep = self.points + int(self.corrector_pseudo) - 1  # past f values the next step may use

    def resolve(self, denoiser: Denoiser, sample_shape: tuple[int, ...]) -> EMS:
        """The statistics for a solve: loaded, checked against the model (unless ``force``) and
        against the sample shape."""
        st = self.statistics
        if st is None:
            return EMS.constant(sample_shape)
        ems = st if isinstance(st, EMS) else EMS.from_dict(st) if isinstance(st, dict) else EMS.load(st)
        ems.check_model(denoiser, force=self.force)
        if ems.sample_shape != sample_shape:
            raise ValueError(f"the statistics are for samples shaped {ems.sample_shape}, the state's samples "
                             f"are {sample_shape}")
        return ems

    def step_orders(self, grid: SamplingGrid) -> list[int]:
        """The predictor order at each step (warm-up, ``lower_order_final``, first order to zero noise)."""
        return [1 if first_order_at(grid, i) else k
                for i, k in enumerate(multistep_orders(grid.steps, self.points, self.lower_order_final))]

    def table(self, term: DiffusionTerm, grid: SamplingGrid, points: list[EvalPoint], x0: Tensor) -> list:
        shape = tuple(x0.shape[1:])
        stats = _Statistics(self.resolve(term.denoiser, shape))
        f = grid_floats(grid)
        orders = self.step_orders(grid)

        def cast(t: Tensor) -> Tensor:
            return t.reshape(shape).to(dtype=x0.dtype, device=x0.device)

        rows = []
        for i, k in enumerate(orders):
            pred = self._update(stats, f, i, i + 1, [i - j for j in range(k)], self.predictor_pseudo)
            corr = None
            c = (orders[i - 1] + int(self.corrector_pseudo)) if (self.corrector and i > 0) else 0
            if c >= 2:
                nodes = [i - 1, i, *[i - 1 - j for j in range(1, c - 1)]]
                corr = self._update(stats, f, i - 1, i, nodes, self.corrector_pseudo)
            shift = -stats.l_at(f.lam[i]) / f.alpha[i]
            rows.append(V3Row(points[i], f.sigma[i] / f.alpha[i], cast(shift),
                              None if corr is None else _cast_update(corr, cast), _cast_update(pred, cast)))
        return rows

    @staticmethod
    def _update(stats: _Statistics, f: Any, s: int, t: int, nodes: list[int], pseudo: bool) -> V3Update:
        """Coefficients of the update ``s -> t`` from the ``f`` values at grid points ``nodes``
        (``nodes[0] = s``), returned with weights ordered newest point first."""
        lam_s, lam_t, a_s, a_t = f.lam[s], f.lam[t], f.alpha[s], f.alpha[t]
        if not math.isfinite(lam_t):  # to zero noise: x_t = alpha_t x0 with N kept (first order)
            l_s = stats.l_at(lam_s)
            return V3Update(a_t / a_s * (1.0 - l_s), (torch.full_like(l_s, -a_t),), None)
        js, q = stats.moments(lam_s, lam_t, len(nodes))
        base = torch.tensor([lam_s], dtype=F64)
        lt = (stats.l.integral(torch.tensor([lam_t], dtype=F64)) - stats.l.integral(base))[0]
        pre = -a_t * torch.exp(-lt)
        dw = derivative_weights([f.lam[j] - lam_s for j in nodes], pseudo)
        const = pre * q
        by_node = {}
        for j, node in enumerate(nodes):
            w = pre * sum(dw[k][j] * js[k] for k in range(len(nodes)))
            lam_j = torch.tensor([f.lam[node]], dtype=F64)
            s_rel = (stats.s.integral(lam_j) - stats.s.integral(base))[0]
            by_node[node] = w * torch.exp(-s_rel)
            const = const - w * stats.beta(lam_s, f.lam[node])
        order = sorted(by_node, reverse=True)
        return V3Update(a_t / a_s * torch.exp(-lt), tuple(by_node[n] for n in order), const)

    def start_state(self, x0: Tensor) -> Any:
        return (x0, ())

    def advance(self, term, x, state, row):
        eps = term.noise_prediction(x, row.point)
        f_new = torch.addcmul(eps * row.f_scale, row.f_shift, x)
        x_prev, hist = state
        fs = (f_new, *hist)
        if row.corrector is not None:
            x = row.corrector.apply(x_prev, fs)
        out = row.predictor.apply(x, fs)
        return out, (x, fs[: self.keep]), None, 1


def _cast_update(u: V3Update, cast: Any) -> V3Update:
    return V3Update(cast(u.cx), tuple(cast(w) for w in u.weights), None if u.const is None else cast(u.const))


register("dpm-solver-v3", DPMSolverV3,
         summary="DPM-Solver-v3 (Zheng et al. 2023): multistep predictor on empirical model statistics, "
                 "pseudo-order and pseudo-corrector. Order 1-3 (default 3).")

__all__ = ["EMS", "DPMSolverV3", "derivative_weights", "model_fingerprint"]

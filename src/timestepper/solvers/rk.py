"""Explicit Runge–Kutta methods as data: a Butcher tableau and one generic stepper.

A new method is a :class:`ButcherTableau`, not a new stepping routine. Tableaux are stored as
Python floats (float64) and applied with scalar-tensor arithmetic, so a step issues no host
synchronisation. The stepper handles FSAL ("first same as last": the last stage of a step is
``f(t1, x1)`` and is reused as the first stage of the next), embedded error estimates and dense
output (the method's own interpolant, as polynomial weights in the step fraction ``theta``).

The tableaux themselves live in :mod:`timestepper.solvers.rk_tableaux`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.ops import add_scaled, compiling
from ..core.solver import Solver
from ..core.terms import VectorFieldTerm


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method.

    Attributes:
        name: registry name.
        order: order of the propagated solution.
        c: nodes; a: strictly lower-triangular rows (row ``i`` has ``i + 1`` entries for stage
            ``i + 1``); b: weights.
        b_err: weights of the embedded method; the error estimate is ``h * sum((b - b_err) k)``.
        b_err2: optional second embedded method; with it the error is combined as in Hairer's
            DOP853 (``e5^2 / sqrt(e5^2 + 0.01 e3^2)``, elementwise here).
        error_order: the exponent denominator of the controller (``q + 1`` for a local error
            ``O(h^(q+1))``); defaults to ``order``.
        interp: dense output: ``interp[i][j]`` is the coefficient of ``theta^(j+1)`` in the
            weight of stage ``i``, so ``x(t0 + theta h) = x0 + h sum_i k_i P_i(theta)``.
            ``None``: no interpolant (adaptive saving then steps onto the save times).
        extra_c, extra_a: extra stages evaluated only when the interpolant is used (DOP853's
            dense output); ``interp`` then has ``stages + len(extra_c)`` rows.
        reuse_last_stage: the last stage (at ``t1``, evaluated at the embedded solution rather
            than at ``x1``) becomes the next step's first stage, as torchdiffeq's
            ``adaptive_heun`` and ``fehlberg2`` do: one evaluation fewer per step, and the order
            is kept because the first stage's argument is off by the local error ``O(h^(p+1))``
            of the embedded solution and it enters the step multiplied by ``h``.
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...] | None = None
    b_err2: tuple[float, ...] | None = None
    error_order: int | None = None
    interp: tuple[tuple[float, ...], ...] | None = None
    extra_c: tuple[float, ...] = ()
    extra_a: tuple[tuple[float, ...], ...] = ()
    reuse_last_stage: bool = False

    def __post_init__(self) -> None:
        s = len(self.b)
        if len(self.c) != s or len(self.a) != s - 1:
            raise ValueError(f"tableau {self.name}: c has {len(self.c)}, b {s}, "
                             f"a {len(self.a)} rows")
        for i, row in enumerate(self.a):
            if len(row) != i + 1:
                raise ValueError(f"tableau {self.name}: row {i + 1} of a must have {i + 1} entries")
        for nm in ("b_err", "b_err2"):
            v = getattr(self, nm)
            if v is not None and len(v) != s:
                raise ValueError(f"tableau {self.name}: {nm} must have {s} entries, got {len(v)}")
        n_int = s + len(self.extra_c)
        if self.interp is not None and len(self.interp) != n_int:
            raise ValueError(f"tableau {self.name}: interp must have {n_int} rows")
        if len(self.extra_a) != len(self.extra_c):
            raise ValueError(f"tableau {self.name}: extra_a and extra_c differ in length")

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def fsal(self) -> bool:
        """True when the last stage is ``f(t1, x1)`` (so it is the next step's first stage)."""
        return (
            self.stages > 1
            and self.c[-1] == 1.0
            and self.b[-1] == 0.0
            and tuple(self.a[-1]) == tuple(self.b[:-1])
        )


@dataclass
class RKState:
    """What a step leaves behind: ``f``, the derivative at the step's end point when the next step
    can reuse it as its first stage (FSAL, or ``f(t0, x0)`` shared with the initial step
    selection); and, for dense output, the step's start ``x0``, stages ``ks``, size ``h`` and start
    time ``t0``."""

    f: Tensor | None = None
    x0: Tensor | None = None
    ks: tuple[Tensor, ...] | None = None
    h: float | Tensor | None = None
    t0: float | Tensor | None = None


def bcast(h: float | Tensor, x: Tensor) -> float | Tensor:
    """A per-sample ``(B,)`` tensor of step sizes reshaped to broadcast against ``x``."""
    if isinstance(h, Tensor) and h.ndim == 1:
        return h.reshape((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)
    return h


def weighted_sum(x: Tensor | None, h: float | Tensor, ws, ks) -> Tensor | None:
    """``x + h * sum(w_i k_i)`` skipping zero weights (``x=None`` starts from zero)."""
    out = x
    scalar = not isinstance(h, Tensor)
    for w, k in zip(ws, ks):
        if w != 0.0:
            if out is None:
                out = (h * w) * k
            elif scalar:
                out = add_scaled(out, k, h * w)  # one fused op per stage
            else:
                out = out + (h * w) * k
    return out


def _combine_errors(e5: Tensor, e3: Tensor) -> Tensor:
    """DOP853's combination of its 5th- and 3rd-order error estimates (elementwise)."""
    denom = torch.sqrt(e5 * e5 + 0.01 * e3 * e3)
    return torch.where(denom > 0, e5 * e5 / torch.where(denom > 0, denom, 1.0), 0.0)


_PER_SAMPLE_DTYPES = (torch.float32, torch.float64)
# Stages with at least this many terms (x included) are formed as stack-multiply-cumsum.
_STACK_FROM = 4


class ExplicitRK(Solver):
    """Generic explicit Runge–Kutta step (Hairer, Nørsett & Wanner, Solving ODEs I, II.1).

    Advances any :class:`~timestepper.core.terms.VectorFieldTerm`. ``t0``/``t1`` may be floats or,
    in per-sample mode, ``(B,)`` tensors (then ``x`` has a leading batch dimension). Each
    registered method (``"dopri5"``, ``"tsit5"``, ...) is this class with its tableau fixed.

    Args:
        tableau: the method.
    """

    family = "ode"
    term_type = VectorFieldTerm
    provides_first_derivative = True
    per_sample = True

    def __init__(self, tableau: ButcherTableau) -> None:
        if not isinstance(tableau, ButcherTableau):
            raise TypeError(f"tableau must be a ButcherTableau, got {type(tableau).__name__}")
        self.tableau = tableau
        bt = tableau
        self.order = bt.order
        self.error_order = None if bt.b_err is None else (bt.error_order or bt.order)
        self.has_dense_output = bt.interp is not None
        self._fsal = bt.fsal
        self._carry = bt.fsal or bt.reuse_last_stage
        self.carries_state = bt.reuse_last_stage
        self.nfe_per_step = bt.stages - (1 if self._carry else 0)
        self._err_w = None if bt.b_err is None else tuple(b - e for b, e in zip(bt.b, bt.b_err))
        self._err_w2 = None if bt.b_err2 is None else tuple(b - e for b, e in zip(bt.b, bt.b_err2))
        self._build_flat_weights()
        self._c = tuple(bt.c[1:])
        self._consts: dict = {}

    def _build_flat_weights(self) -> None:
        """Per-sample steps: the nonzero weights of all rows in one flat list (stage rows, then b
        unless FSAL, then the error weights), so that all products h * w are one tensor op. A row
        that starts from x gets a leading entry whose product is exactly 1."""
        bt = self.tableau
        rows = [(r, True) for r in bt.a] + ([] if self._fsal else [(bt.b, True)])
        rows += [(w, False) for w in (self._err_w, self._err_w2) if w is not None]
        self._rows: list[tuple[int, ...]] = []  # the stages j with a nonzero weight, per row
        self._sizes: list[int] = []  # entries of each row in the flat list
        flat: list[float] = []
        ones: list[float] = []
        for row, from_x in rows:
            js = tuple(j for j, w in enumerate(row) if w != 0.0)
            self._rows.append(js)
            self._sizes.append(len(js) + from_x)
            flat += [0.0] * from_x + [row[j] for j in js]
            ones += [1.0] * from_x + [0.0] * len(js)
        self._flat_w, self._flat_ones = tuple(flat), tuple(ones)

    @property
    def display_name(self) -> str:
        return self.registry_name or self.tableau.name

    def init(self, term, grid, x0):
        return RKState(), None

    def first_derivative(self, term, t0, x0, state):
        f0 = term.vf(t0, x0)
        return f0, RKState(f=f0)

    def merge(self, accept, new, old):
        f = None
        if new.f is not None and old.f is not None:
            f = torch.where(accept, new.f, old.f)
        return RKState(f=f)

    def step(self, term, t0, t1, x, state, row):
        h = t1 - t0
        reused = state.f is not None
        nfe = self.tableau.stages - (1 if reused else 0)
        if (isinstance(h, Tensor) and h.ndim == 1 and x.dtype in _PER_SAMPLE_DTYPES
                and h.dtype in _PER_SAMPLE_DTYPES):
            x1, new, err = self._step_per_sample(term, t0, h, x, state)
            return x1, new, err, nfe
        bt = self.tableau
        hb = bcast(h, x)
        ks: list[Tensor] = [state.f if reused else term.vf(t0, x)]
        x1 = x
        for i in range(1, bt.stages):
            xi = weighted_sum(x, hb, bt.a[i - 1], ks)
            if self._fsal and i == bt.stages - 1:
                x1 = xi
            ks.append(term.vf(t0 + bt.c[i] * h, xi))
        if not self._fsal:
            x1 = weighted_sum(x, hb, bt.b, ks)
        err = None
        if self._err_w is not None:
            err = weighted_sum(None, hb, self._err_w, ks)
            if self._err_w2 is not None:
                err = _combine_errors(err, weighted_sum(None, hb, self._err_w2, ks))  # type: ignore[arg-type]
        f1 = ks[-1] if self._carry else None
        return x1, RKState(f=f1, x0=x, ks=tuple(ks), h=h, t0=t0), err, nfe

    def _step_per_sample(self, term, t0: Tensor, h: Tensor, x: Tensor, state: RKState):
        """:meth:`step` with ``(B,)`` times, in few tensor ops: the products ``h * w`` of all
        nonzero weights and the stage times ``t0 + c h`` are one op each per step (see
        :meth:`_combine` for the stage sums)."""
        hw, tc = self._step_weights(t0, h, x)
        ks: list[Tensor] = [state.f if state.f is not None else term.vf(t0, x)]
        s = self.tableau.stages
        xi = x
        for i in range(1, s):
            xi = self._combine(hw, i - 1, x, ks)
            ks.append(term.vf(tc[i - 1], xi))
        r = s - 1
        if self._fsal:
            x1 = xi
        else:
            x1, r = self._combine(hw, r, x, ks), r + 1
        err = None
        if self._err_w is not None:
            err = self._combine(hw, r, None, ks)
            if self._err_w2 is not None:
                err = _combine_errors(err, self._combine(hw, r + 1, None, ks))
        f1 = ks[-1] if self._carry else None
        return x1, RKState(f=f1, x0=x, ks=tuple(ks), h=h, t0=t0), err

    def prepare(self, x0: Tensor, time_dtype: torch.dtype) -> None:
        self._constants(x0, time_dtype)

    def _constants(self, x: Tensor, time_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """The flat weights, the leading ones of their rows and the nodes as tensors (cached per
        dtype, device and rank of the state, see :meth:`prepare`)."""
        key = (x.dtype, time_dtype, x.device, x.ndim)
        if key not in self._consts:
            shape = (-1,) + (1,) * x.ndim
            w, ones = (torch.tensor(v, dtype=x.dtype, device=x.device).reshape(shape)
                       for v in (self._flat_w, self._flat_ones))
            self._consts[key] = (w, ones, torch.tensor(self._c, dtype=time_dtype, device=x.device).reshape(-1, 1))
        return self._consts[key]

    def _step_weights(self, t0: Tensor, h: Tensor, x: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """The products ``h * w`` of every row's weights (one op) and the stage times (one op)."""
        w, ones, c = self._constants(x, h.dtype)
        hb = h.reshape((-1,) + (1,) * (x.ndim - 1))
        if hb.dtype != x.dtype:
            hb = hb.to(x.dtype)
        # ones + w * h is exactly w * h, and exactly 1 at the leading entries of the rows.
        return torch.addcmul(ones, w, hb).split(self._sizes), (c * h + t0).unbind(0)

    def _combine(self, hw: tuple[Tensor, ...], r: int, out: Tensor | None, ks: list[Tensor]) -> Tensor:
        """Row ``r`` of the flat weights applied to ``[out,] k_j...``. The terms are added one by one
        (as :func:`weighted_sum`), except that a long sum in float64 on the CPU is three ops:
        stack ``[x, k_j...]``, multiply by ``[1, h a_ij...]`` and a cumulative sum over the stack;
        the CPU ``cumsum`` accumulates sequentially in float64, so its last entry is the same sum
        to the last bit. Compiled, the terms are added one by one (the compiler fuses them into
        one loop; ``cumsum`` would be a separate kernel), on flat views with the per-sample weights
        expanded to the state's entries: the generated loop then runs over the whole state in
        full vector lanes, where a per-sample weight broadcast over a few trailing entries made
        it a loop over samples with mostly empty lanes (the stages of a per-sample Van der Pol
        solve, 2 entries per sample, took a third of its time that way)."""
        js = self._rows[r]
        if not js:
            assert out is not None  # a row without weights only occurs for stages from x
            return out
        terms = [ks[j] for j in js] if out is None else [out] + [ks[j] for j in js]
        x = terms[0]
        if x.dtype == torch.float64 and x.device.type == "cpu" and len(terms) >= _STACK_FROM \
                and not compiling():
            try:
                return (hw[r] * torch.stack(terms)).cumsum_(0).select(0, -1)
            except RuntimeError:  # f broadcast its output against the state
                pass
        wr = hw[r]
        shape = terms[0].shape
        flat = compiling() and wr.dim() > 1 and wr.shape[1:] != shape  # per-sample weights
        if flat:
            wr = wr.expand(-1, *shape).reshape(wr.shape[0], -1)
            terms = [t.reshape(-1) for t in terms]
            out = None if out is None else out.reshape(-1)
        total = out
        for i in range(len(terms) - len(js), len(terms)):
            p = wr[i] * terms[i]
            total = p if total is None else total + p
        assert total is not None
        return total.view(shape) if flat else total

    def prepare_dense(self, term, state: RKState) -> tuple[RKState, int]:
        """Evaluate the interpolant's extra stages (DOP853's three), once per step."""
        bt = self.tableau
        if bt.interp is None or state.ks is None or len(state.ks) >= len(bt.interp):
            return state, 0
        assert state.x0 is not None and state.h is not None and state.t0 is not None
        x0, hb = state.x0, bcast(state.h, state.x0)
        ks = list(state.ks)
        for c, row in zip(bt.extra_c, bt.extra_a):
            ks.append(term.vf(state.t0 + c * state.h, weighted_sum(x0, hb, row, ks)))
        return RKState(state.f, x0, tuple(ks), state.h, state.t0), len(bt.extra_c)

    def interpolate(self, state: RKState, theta: float | Tensor) -> Tensor:
        """Dense output inside the last step: ``x(t0 + theta * h)``, ``0 <= theta <= 1`` (after
        :meth:`prepare_dense`)."""
        P = self.tableau.interp
        if P is None:
            raise ValueError(f"solver {self.tableau.name!r} has no dense output")
        if state.ks is None or len(state.ks) < len(P) or state.x0 is None or state.h is None:
            raise ValueError("interpolate needs the step's stages: call prepare_dense first")
        x0 = state.x0
        hb = bcast(state.h, x0)
        th = bcast(theta, x0)
        out = x0
        for coeffs, k in zip(P, state.ks):
            w: float | Tensor = 0.0
            for j in reversed(range(len(coeffs))):
                w = (w + coeffs[j]) * th
            if isinstance(w, Tensor) or w != 0.0:
                out = out + (hb * w) * k
        return out


__all__ = ["ButcherTableau", "ExplicitRK", "RKState", "bcast", "weighted_sum"]

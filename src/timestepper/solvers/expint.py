"""Shared coefficient machinery of the exponential-integrator and multistep diffusion solvers.

Every solver of the DPM-Solver / DEIS / UniPC / PNDM / LMS family takes steps that are *linear*
in the state and in model outputs: ``x_{t} = cx * x_s + sum_j w_j m_j``. Only the float64
coefficients ``cx, w_j`` differ between methods; they are computed here, once per grid, and the
steps apply them with :func:`~timestepper.solvers.base.lincomb`.

With ``h = lambda_t - lambda_s`` the exact solution of the probability-flow ODE is
(Lu et al. 2022b, DPM-Solver++, eq. 8; Lu et al. 2022a, DPM-Solver, eq. 3.4)

* data prediction:  ``x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^l x0(l) dl``
* noise prediction: ``x_t = (alpha_t / alpha_s) x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-l} eps(l) dl``.

Expanding the prediction in ``u = (l - lambda_s) / h`` as a polynomial ``sum_k a_k u^k`` gives
the weights :func:`taylor_weights` on the coefficients ``a_k``:
``alpha_t h phi_{k+1}(-h) k!`` (data) and ``-sigma_t h phi_{k+1}(h) k!`` (noise), with the phi
functions of :mod:`timestepper.core.phi` (Hochbruck & Ostermann 2010). ``a_k`` are obtained from
model outputs at known offsets by :func:`polynomial_basis` (inverse Vandermonde matrix).

A grid whose fields are 2-D, ``(points, C)``, is ``C`` grids at once (:class:`GridFloats` then
holds one float64 tensor per point): the coefficient functions here and the solvers' weight rules
built on them return ``(C,)`` tensors, computed with the same formulas. The Time-Shift Sampler
tabulates its per-candidate multistep weights this way, once per grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..core.phi import phi, phi_rows
from ..diffusion.grids import SamplingGrid

PREDICTIONS = ("data", "noise")


class GridFloats:
    """A grid's ``log_snr``, ``alpha``, ``sigma`` and ``rho = sigma / alpha`` as Python float lists,
    converted once per grid (coefficient code indexes them many times); for a batch of grids
    (2-D fields, module docstring) lists of one ``(C,)`` tensor per point."""

    def __init__(self, grid: SamplingGrid) -> None:
        self.lam = _per_point(grid.log_snr)
        self.alpha = _per_point(grid.alpha)
        self.sigma = _per_point(grid.sigma)
        self.rho = _per_point(grid.sigma / grid.alpha)


def _per_point(values: Tensor) -> list:
    return list(values.unbind(0)) if values.ndim == 2 else values.tolist()


def _exp(v):
    return torch.exp(v) if isinstance(v, Tensor) else math.exp(v)


def expm1_any(v):
    """``expm1`` of a float or, elementwise, of a tensor (a batch of grids)."""
    return torch.expm1(v) if isinstance(v, Tensor) else math.expm1(v)


def grid_floats(grid: SamplingGrid) -> GridFloats:
    """The :class:`GridFloats` of ``grid`` (cached on the grid object)."""
    f = grid.__dict__.get("_floats")
    if f is None:
        f = grid.__dict__["_floats"] = GridFloats(grid)
    return f


def solve_small(a: Sequence[Sequence[float]], b: Sequence[float]) -> list[float]:
    """Solve the small dense system ``a x = b`` (Gaussian elimination with partial pivoting, float64
    Python floats: the systems here are at most 4 x 4, where a tensor call costs more than the work).
    Entries that are ``(C,)`` tensors (a batch of grids, module docstring) solve the ``C`` systems
    at once and return ``(C,)`` tensors."""
    if any(isinstance(v, Tensor) for v in [*b, *(e for row in a for e in row)]):
        return _solve_batched(a, b)
    n = len(b)
    m = [list(map(float, row)) + [float(v)] for row, v in zip(a, b)]
    for c in range(n):
        p = c  # the first row of largest |m[r][c]| (partial pivoting)
        for r in range(c + 1, n):
            if abs(m[r][c]) > abs(m[p][c]):
                p = r
        if m[p][c] == 0.0:
            raise ZeroDivisionError("singular system (repeated nodes)")
        m[c], m[p] = m[p], m[c]
        for r in range(c + 1, n):
            f = m[r][c] / m[c][c]
            if f != 0.0:
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    x = [0.0] * n
    for r in reversed(range(n)):
        x[r] = (m[r][n] - sum(m[r][j] * x[j] for j in range(r + 1, n))) / m[r][r]
    return x


def _solve_batched(a: Sequence[Sequence], b: Sequence) -> list:
    values = [*b, *(e for r in a for e in r)]
    entries = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64) for v in values))
    n = len(b)
    rhs = torch.stack(entries[:n], dim=-1)
    mat = torch.stack(entries[n:], dim=-1).reshape(*rhs.shape[:-1], n, n)
    return list(torch.linalg.solve(mat, rhs).unbind(-1))


def polynomial_basis(nodes: Sequence[float]) -> list[list[float]]:
    """``B`` with ``a_k = sum_j B[k][j] m_j`` the coefficients of the polynomial through
    ``(nodes[j], m_j)``: ``p(u) = sum_k a_k u^k`` (the inverse Vandermonde matrix, float64).
    Column ``j`` holds the monomial coefficients of the Lagrange basis polynomial ``L_j``."""
    n = len(nodes)
    if n == 2:  # the common cases, written out (the same arithmetic as the loop below)
        u0, u1 = nodes
        d0, d1 = u0 - u1, u1 - u0
        return [[-u1 / d0, -u0 / d1], [1.0 / d0, 1.0 / d1]]
    if n == 3:
        u0, u1, u2 = nodes
        cols = [_quadratic_column(u0, u1, u2), _quadratic_column(u1, u0, u2), _quadratic_column(u2, u0, u1)]
        return [list(row) for row in zip(*cols)]
    cols = []
    for j, uj in enumerate(nodes):
        poly, denom = [1.0], 1.0
        for m, um in enumerate(nodes):
            if m != j:  # poly * (u - um), highest coefficient last
                poly = [-um * poly[0], *[poly[k - 1] - um * poly[k] for k in range(1, len(poly))], poly[-1]]
                denom *= uj - um
        cols.append([c / denom for c in poly])
    return [list(row) for row in zip(*cols)]


def _quadratic_column(uj, p, q):
    """The monomial coefficients of ``(u - p)(u - q) / ((uj - p)(uj - q))``."""
    d = (uj - p) * (uj - q)
    return [p * q / d, (-p - q) / d, 1.0 / d]


class PhiTable:
    """``phi_k(z)`` (:func:`timestepper.core.phi.phi`) for all the arguments one grid needs,
    evaluated in one vectorized float64 pass for every ``k`` (:func:`~timestepper.core.phi.phi_rows`,
    bit-identical to :func:`~timestepper.core.phi.phi`) when first read, so a coefficient rule
    that needs no phi value pays nothing; non-finite arguments are skipped."""

    def __init__(self, zs: Sequence[float], kmax: int) -> None:
        self._zs, self._kmax = zs, kmax
        self._values: dict[int, dict[float, float]] | None = None

    def _evaluate(self) -> dict[int, dict[float, float]]:
        keys = sorted({float(z) for z in self._zs if math.isfinite(z)})
        rows = phi_rows(self._kmax, keys).tolist() if keys and self._kmax > 0 else []
        self._values = {k: dict(zip(keys, row)) for k, row in enumerate(rows, 1)}
        return self._values

    def __call__(self, k: int, z):
        if isinstance(z, Tensor):  # a batch of grids: evaluated directly
            return phi(k, z)
        table = (self._values if self._values is not None else self._evaluate()).get(k)
        if table is None or z not in table:
            return float(phi(k, z))  # an argument outside the table (not on the fast path)
        return table[z]


def step_phis(grid: SamplingGrid, pairs: Sequence[tuple[int, int]], kmax: int,
              scale: float = 1.0) -> PhiTable:
    """The :class:`PhiTable` of ``+-scale h`` for the steps ``(s, t)`` of a grid (``scale = 1 +
    eta`` for the SDE steps of :func:`taylor_weights`)."""
    lam = grid_floats(grid).lam
    hs = [scale * (lam[t] - lam[s]) for s, t in pairs]
    return PhiTable(hs + [-h for h in hs], kmax)


def combine(coeffs: Sequence[float], basis: Sequence[Sequence[float]]) -> list[float]:
    """Weights on model outputs of ``sum_k coeffs[k] a_k`` with ``a_k = sum_j basis[k][j] m_j``."""
    c0 = coeffs[0]
    out = [c0 * b for b in basis[0]]
    for k in range(1, len(coeffs)):
        c, row = coeffs[k], basis[k]
        for j in range(len(out)):
            out[j] = out[j] + c * row[j]
    return out


def taylor_weights(  # noqa: PLR0913
    grid: SamplingGrid, s: int, t: int, prediction: str, terms: int, phis: PhiTable | None = None,
    eta: float = 0.0,
) -> tuple[float, list[float]]:
    """``(cx, E)`` for the exponential-integrator step from grid point ``s`` to ``t``.

    ``x_t = cx x_s + sum_k E[k] a_k`` is exact when the prediction (``"data"`` or ``"noise"``)
    is the polynomial ``sum_k a_k u^k`` in ``u = (lambda - lambda_s) / h``. ``E[0]`` is finite on
    a step to zero noise (``h = inf``); the higher terms are not (``nan``): methods take a first
    order step there. ``phis`` holds the phi values of the grid's steps (:func:`step_phis`).

    ``eta > 0`` (data prediction) gives the deterministic part of the SDE step of Lu et al.
    (2022b, SDE-DPM-Solver++; k-diffusion's ``eta``): ``cx = (sigma_t / sigma_s) e^{-eta h}`` and
    the same weights with ``h`` replaced by ``H = (1 + eta) h`` (the data integral then runs over
    ``e^{-(H - v)}``, ``v = (1 + eta)(lambda - lambda_s)``, and ``v / H = u``); the step adds
    ``sigma_t sqrt(-expm1(-2 eta h)) z``. ``eta = 0`` is the ODE step.
    """
    phis = phis or PhiTable([], 0)
    f = grid_floats(grid)
    h = f.lam[t] - f.lam[s]
    a_s, a_t, s_s, s_t = f.alpha[s], f.alpha[t], f.sigma[s], f.sigma[t]
    if eta != 0.0 and prediction != "data":
        raise ValueError("the SDE step (eta > 0) is defined for the data prediction")
    if prediction == "data":
        cx = s_t / s_s * (_exp(-eta * h) if eta != 0.0 else 1.0)
        h = (1.0 + eta) * h
        e0 = -a_t * expm1_any(-h)
    else:
        cx = a_t / a_s
        e0 = -a_t * (s_s / a_s) * -expm1_any(-h)  # = -sigma_t expm1(h), finite at h = inf
    out = [e0]
    for k in range(1, terms):
        if not isinstance(h, Tensor) and not math.isfinite(h):  # (tensors: nan from inf * 0)
            out.append(math.nan)
        elif prediction == "data":
            out.append(a_t * h * phis(k + 1, -h) * math.factorial(k))
        else:
            out.append(-s_t * h * phis(k + 1, h) * math.factorial(k))
    return cx, out


def lambda_offsets(grid: SamplingGrid, s: int, t: int, points: Sequence[int]) -> list[float]:
    """``(lambda_p - lambda_s) / (lambda_t - lambda_s)`` for each grid point ``p``."""
    lam = grid_floats(grid).lam
    h = lam[t] - lam[s]
    return [(lam[p] - lam[s]) / h for p in points]


def first_order_at(grid: SamplingGrid, i: int) -> bool:
    """Whether step ``i`` ends at zero noise (``h = inf``): every method is first order there."""
    return not math.isfinite(grid_floats(grid).lam[i + 1])


def multistep_orders(
    steps: int,
    order: int,
    lower_order_final: bool,
    final_zero_first: bool = True,
    min_steps_for_full: int = 15,
) -> list[int]:
    """The order used at each step of a multistep method (diffusers' rules).

    Step ``i`` can use at most ``i + 1`` model outputs (warm-up). With ``lower_order_final`` and
    fewer than ``min_steps_for_full`` steps the last step is first order and the one before at
    most second order (this stabilises very short grids).
    """
    orders = []
    for i in range(steps):
        k = min(order, i + 1)
        if lower_order_final and steps < min_steps_for_full:
            if i == steps - 1:
                k = 1
            elif i == steps - 2:
                k = min(k, 2)
        orders.append(k)
    return orders


def lagrange_integral_weights(
    values: Sequence[float], start: float, end: float, log: bool, phis: PhiTable | None = None
) -> list[float]:
    """``int_{start}^{end} L_j(v(r)) dr`` for the Lagrange basis ``L_j`` through the nodes
    ``r_j = values[j]``, in the variable ``v = r`` (``log=False``; k-diffusion's and diffusers'
    LMS) or ``v = log r`` (``log=True``; DEIS' log-rho tAB, Zhang & Chen 2022, eq. 15).

    The integrals are closed form: with ``v = log r`` and ``u = v - log(start)``,
    ``int e^v (v - v_0)^k dv = start * k! d^{k+1} e^d phi_{k+1}(-d)`` with ``d = log(end / start)``
    (``-(-1)^k k! start`` when ``end = 0``).
    """
    n = len(values)
    if not log:
        basis = polynomial_basis([v - start for v in values])
        d = end - start
        moments = [d ** (k + 1) / (k + 1) for k in range(n)]
        return combine(moments, basis)
    v0 = math.log(start)
    basis = polynomial_basis([math.log(v) - v0 for v in values])
    if end == 0.0:
        moments = [-((-1.0) ** k) * math.factorial(k) * start for k in range(n)]
    else:
        d = math.log(end) - v0
        moments = [
            start * math.factorial(k) * d ** (k + 1) * math.exp(d) * (phis or PhiTable([], 0))(k + 1, -d)
            for k in range(n)
        ]
    return combine(moments, basis)

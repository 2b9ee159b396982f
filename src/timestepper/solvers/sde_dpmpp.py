"""SDE-DPM-Solver++ multistep, 2M and 3M (Lu et al. 2022b, DPM-Solver++, Section 5 and Appendix).

The reverse SDE in data prediction, solved exactly in its linear part, gives the first-order step
(Lu et al. 2022b, eq. for SDE-DPM-Solver-1 in data prediction)
``x_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x_i + alpha_{i+1} (1 - e^{-(1+eta) h}) x0_i
+ sigma_{i+1} sqrt(1 - e^{-2 eta h}) z`` with ``h = lambda_{i+1} - lambda_i``; ``eta = 1`` is the
SDE, ``eta = 0`` the probability-flow ODE (DPM-Solver++), intermediate values interpolate as in
k-diffusion's ``sample_dpmpp_2m_sde(eta=...)``. The multistep corrections use divided differences
of past data predictions with ``H = (1 + eta) h`` and ``r_k = h_{i-k} / h_i``:

* 2M, ``solver_type="midpoint"``: ``+ 0.5 alpha_{i+1} (1 - e^{-H}) (x0_i - x0_{i-1}) / r_1``
  (diffusers' ``sde-dpmsolver++`` and k-diffusion's default); ``"heun"``:
  ``+ alpha_{i+1} (1 + expm1(-H)/H) (x0_i - x0_{i-1}) / r_1``.
* 3M: with the divided differences of the last three predictions (``d1 ~ h x0'`` and
  ``d2 ~ h^2 x0'' / 2``, Lu et al. 2022b, Appendix, DPM-Solver++(3M)),
  ``+ alpha_{i+1} (phi_2 d1 - 2 phi_3 d2)``, ``phi_2 = 1 + expm1(-H)/H``,
  ``phi_3 = phi_2 / H - 1/2``: the integral of the quadratic interpolant, exact when
  ``x0(lambda)`` is quadratic. k-diffusion's ``sample_dpmpp_3m_sde`` and diffusers' third-order
  DPM-Solver++ use ``- phi_3 d2`` (half of the second-derivative term), which leaves an
  ``O(h^3 x0'')`` local error: their 3M is a second-order method (measured slope ~2.2 on refined
  log-SNR grids, 3.0 with the full term).
  ``variant="k-diffusion"`` reproduces it for parity.

A step to zero noise (``h = inf``) is first order (it returns ``alpha x0``). All coefficients are
float64, once per grid; the step is a few fused adds and one noise draw.
"""

from __future__ import annotations

import math

import torch

from ..core.solver import register
from .base import lincomb, step_sizes
from .noise import StochasticDiffusionSolver


def sde_first_order(grid, eta: float) -> dict[str, list]:
    """``cx, cd, cn`` of the first-order SDE-DPM-Solver++ step and ``a1 = alpha_{i+1}``,
    ``H = (1 + eta) h``, ``h`` (float64 -> floats)."""
    h = step_sizes(grid)
    eta_h = eta * h if eta > 0 else torch.zeros_like(h)
    big_h = h + eta_h
    cx = grid.sigma[1:] / grid.sigma[:-1] * torch.exp(-eta_h)
    cd = -grid.alpha[1:] * torch.expm1(-big_h)
    cn = grid.sigma[1:] * torch.sqrt(-torch.expm1(-2.0 * eta_h))
    return {"cx": cx.tolist(), "cd": cd.tolist(), "cn": cn.tolist(), "a1": grid.alpha[1:].tolist(),
            "H": big_h.tolist(), "h": h.tolist()}


def _lowered(i: int, n: int, lower_order_final: bool, drop: int) -> bool:
    """Whether step ``i`` of ``n`` is lowered by ``drop`` orders (diffusers' rule, < 15 steps)."""
    return lower_order_final and n < 15 and i >= n - drop


class _SDEMultistep(StochasticDiffusionSolver):
    nfe_per_step = 1
    history_length = 1

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, noise: str = "normal",
                 lower_order_final: bool = True) -> None:
        super().__init__(eta, s_noise, noise)
        self.lower_order_final = bool(lower_order_final)

    @staticmethod
    def validate_eta(eta: float) -> float:
        if not eta >= 0.0:
            raise ValueError(
                f"eta must be >= 0 (1: the reverse SDE, 0: the probability-flow ODE), got {eta}")
        return eta

    def coefficients(self, grid):
        c = sde_first_order(grid, self.eta)
        weights = [self.weights(i, grid.steps, c) for i in range(grid.steps)]
        return {"cx": c["cx"], "cn": [self.s_noise * v for v in c["cn"]], "w": weights}

    def weights(self, i: int, n: int, c: dict[str, list]) -> list[float]:  # pragma: no cover
        raise NotImplementedError

    def step(self, term, t0, t1, x, state):
        i, c = state.i, state.coeffs
        d = term.data_prediction(x, i)
        w = c["w"][i]
        terms = [(w[0], d)] + [(wk, dk) for wk, dk in zip(w[1:], reversed(state.history))]
        x1 = self.add_noise(lincomb(x, c["cx"][i], terms), x, state)
        history = (state.history + (d,))[-self.history_length:]
        return x1, state.advance(history), None


@register("sde-dpmpp-2m")
class SDEDPMSolverPP2M(_SDEMultistep):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b; diffusers ``algorithm_type="sde-dpmsolver++"``,
    k-diffusion ``sample_dpmpp_2m_sde``). One model call per step; order 2 at ``eta = 0``.

    Args:
        eta: 1 (default) the reverse SDE, 0 the ODE (DPM-Solver++ 2M), in between k-diffusion's
            interpolation.
        s_noise: multiplier of the added noise.
        noise: ``"normal"`` or ``"brownian"``.
        lower_order_final: first order on the last step when there are fewer than 15 steps.
        solver_type: ``"midpoint"`` (default) or ``"heun"``.
    """

    order = 2

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, noise: str = "normal",
                 lower_order_final: bool = True, solver_type: str = "midpoint") -> None:
        super().__init__(eta, s_noise, noise, lower_order_final)
        if solver_type not in ("midpoint", "heun"):
            raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
        self.solver_type = solver_type

    def weights(self, i, n, c):
        cd, h, big_h = c["cd"][i], c["h"], c["H"][i]
        if i == 0 or not math.isfinite(h[i]) or _lowered(i, n, self.lower_order_final, 1):
            return [cd]
        inv_r = h[i] / h[i - 1]
        if self.solver_type == "midpoint":
            c2 = 0.5 * cd
        else:
            c2 = c["a1"][i] * (1.0 + math.expm1(-big_h) / big_h)
        return [cd + c2 * inv_r, -c2 * inv_r]


@register("sde-dpmpp-3m")
class SDEDPMSolverPP3M(_SDEMultistep):
    """SDE-DPM-Solver++(3M) (k-diffusion ``sample_dpmpp_3m_sde``). One model call per step; order 3
    at ``eta = 0``.

    Args:
        eta, s_noise, noise: as for ``sde-dpmpp-2m``.
        lower_order_final: with fewer than 15 steps, first order on the last step and second
            order on the one before (diffusers' rule).
        variant: ``"taylor"`` (default, third order) or ``"k-diffusion"`` (the peers' halved
            second-derivative term; see the module docstring).
    """

    order = 3
    history_length = 2

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, noise: str = "normal",
                 lower_order_final: bool = True, variant: str = "taylor") -> None:
        super().__init__(eta, s_noise, noise, lower_order_final)
        if variant not in ("taylor", "k-diffusion"):
            raise ValueError(f"variant must be 'taylor' or 'k-diffusion', got {variant!r}")
        self.variant = variant
        self._d2 = 2.0 if variant == "taylor" else 1.0

    def weights(self, i, n, c):
        cd, h, a1, big_h = c["cd"][i], c["h"], c["a1"][i], c["H"][i]
        if i == 0 or not math.isfinite(h[i]) or _lowered(i, n, self.lower_order_final, 1):
            return [cd]
        phi2 = 1.0 + math.expm1(-big_h) / big_h
        if i == 1 or _lowered(i, n, self.lower_order_final, 2):
            inv_r = h[i] / h[i - 1]
            return [cd + a1 * phi2 * inv_r, -a1 * phi2 * inv_r]
        phi3 = self._d2 * (phi2 / big_h - 0.5)
        r0, r1 = h[i - 1] / h[i], h[i - 2] / h[i]
        k, m = r0 / (r0 + r1), 1.0 / (r0 + r1)
        a = phi2 * (1.0 + k) - phi3 * m  # weight of d1_0 = (x0_i - x0_{i-1}) / r0
        b = -phi2 * k + phi3 * m  # weight of d1_1 = (x0_{i-1} - x0_{i-2}) / r1
        return [cd + a1 * a / r0, a1 * (-a / r0 + b / r1), -a1 * b / r1]

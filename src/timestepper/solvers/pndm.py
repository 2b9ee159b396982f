"""Pseudo numerical methods (Liu et al. 2022, PNDM): PLMS and PRK on the DDIM transfer.

The transfer ``phi(x, eps, s -> t)`` of eq. 9 moves the state with a fixed noise prediction; it is
algebraically DDIM, ``x_t = (alpha_t / alpha_s) x_s - alpha_t (rho_s - rho_t) eps`` with
``rho = sigma / alpha``. PNDM replaces ``eps`` by a higher-order combination:

* PLMS (eq. 12): ``eps' = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24``, with the
  Adams-Bashforth ramp ``e_i``, ``(3 e_i - e_{i-1}) / 2``, ``(23 e_i - 16 e_{i-1} + 5 e_{i-2}) / 12`` on
  the first steps. The weights assume equal steps; as a method on the probability-flow ODE the
  result converges at order 2 (the transfer's implicit quadrature in ``rho`` meets the constant
  weights only to second order; measured in ``tests/solvers/test_convergence.py``).
* Warm-up ``plms`` (``skip_prk_steps=True`` in diffusers, crowsonkb's PLMS): the first step is a
  pseudo improved-Euler step: transfer with ``e_0``, evaluate at the result, transfer again from
  ``x_0`` with the average (two model calls).
* Warm-up ``pndm`` (eq. 13, PRK): the first three steps are pseudo Runge-Kutta-4 steps with stages
  at the step's midpoint in time (four model calls each); their first-stage predictions seed PLMS.

NFE: ``steps + 1`` (``plms``), ``steps + 9`` (``pndm``, steps >= 4). A warm-up step that would
need the model at zero noise (a grid of at most three steps ending at ``sigma = 0``) is a PLMS
step instead.
"""

from __future__ import annotations

from ..core.solver import register
from ..diffusion.grids import SamplingGrid
from .base import lincomb, ve_sigmas
from .expint import PhiTable, first_order_at, grid_floats
from .multistep import LinearMultistep

ADAMS_BASHFORTH = (
    (1.0,),
    (1.5, -0.5),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
PRK_STEPS = 3


def transfer_table(grid: SamplingGrid) -> tuple[list, list]:
    """Per step ``(alpha_{i+1} / alpha_i, -alpha_{i+1} (rho_i - rho_{i+1}))``: the DDIM transfer."""
    rho = ve_sigmas(grid)
    return (grid.alpha[1:] / grid.alpha[:-1]).tolist(), (
        -grid.alpha[1:] * (rho[:-1] - rho[1:])
    ).tolist()


class _PseudoLinearMultistep(LinearMultistep):
    """PLMS after a warm-up of ``warmup_steps`` special steps (implemented by subclasses).

    A PLMS step is the transfer of the Adams-Bashforth combination, i.e. the linear multistep step
    ``x_{i+1} = cx_i x_i + sum_j ce_i ab_j e_{i-j}`` of :class:`LinearMultistep`; step ``i`` combines
    ``min(i + 1, 4)`` predictions (the warm-up steps leave one prediction each in the history).
    """

    order = 2
    prediction = "noise"
    max_order = 4
    first_order_to_zero = False  # the transfer to rho = 0 is finite at every order
    warmup_steps = 1

    def orders(self, grid):
        return [4] * grid.steps

    def phi_table(self, grid):
        return PhiTable([], 0)  # Adams-Bashforth weights on the noise: no phi functions

    def weights(self, grid, i, k, phis):
        f = grid_floats(grid)
        a0, a1 = f.alpha[i], f.alpha[i + 1]
        ce = -a1 * (f.rho[i] - f.rho[i + 1])
        return a1 / a0, [ce * w for w in ADAMS_BASHFORTH[k - 1]]

    def coefficients(self, grid):
        c = super().coefficients(grid)
        c["cx1"], c["ce1"] = transfer_table(grid)
        # a warm-up step needs the model at its end point: not on a step to zero noise
        c["warm"] = [i < self.warmup_steps and not first_order_at(grid, i) for i in range(grid.steps)]
        return c

    def step(self, term, t0, t1, x, state):
        if state.coeffs["warm"][state.i]:
            return self.warmup_step(term, x, state)
        return super().step(term, t0, t1, x, state)


@register("plms")
class PLMS(_PseudoLinearMultistep):
    """PLMS with the pseudo improved-Euler first step (diffusers' ``PNDMScheduler`` with
    ``skip_prk_steps=True``). Order 2; ``steps + 1`` model calls."""

    def warmup_step(self, term, x, state):
        i, c = state.i, state.coeffs
        e0 = term.noise_prediction(x, i)
        x1 = lincomb(x, c["cx1"][i], [(c["ce1"][i], e0)])
        e1 = term.noise_prediction(x1, i + 1)
        eps = lincomb(e0, 0.5, [(0.5, e1)])
        return lincomb(x, c["cx1"][i], [(c["ce1"][i], eps)]), state.advance((e0,)), None


@register("pndm")
class PNDM(_PseudoLinearMultistep):
    """PNDM: three pseudo Runge-Kutta steps (PRK, eq. 13), then PLMS (diffusers' ``PNDMScheduler``,
    ``skip_prk_steps=False``). Order 2; four model calls on each of the first three steps."""

    warmup_steps = PRK_STEPS

    def init(self, term, grid, x0):
        state = super().init(term, grid, x0)
        mids = SamplingGrid.from_times(term.schedule, 0.5 * (grid.t[:-1] + grid.t[1:]))
        state.coeffs["stage"] = term.add_points(mids)
        rho, rho_m = ve_sigmas(grid), ve_sigmas(mids)
        am = mids.alpha
        state.coeffs["cx_mid"] = (am / grid.alpha[:-1]).tolist()
        state.coeffs["ce_mid"] = (-am * (rho[:-1] - rho_m)).tolist()
        return state

    def warmup_step(self, term, x, state):
        i, c = state.i, state.coeffs
        j = c["stage"] + i
        cm, em, cx, ce = c["cx_mid"][i], c["ce_mid"][i], c["cx1"][i], c["ce1"][i]
        k1 = term.noise_prediction(x, i)
        k2 = term.noise_prediction(lincomb(x, cm, [(em, k1)]), j)
        k3 = term.noise_prediction(lincomb(x, cm, [(em, k2)]), j)
        k4 = term.noise_prediction(lincomb(x, cx, [(ce, k3)]), i + 1)
        eps = lincomb(k1, 1 / 6, [(1 / 3, k2), (1 / 3, k3), (1 / 6, k4)])
        return lincomb(x, cx, [(ce, eps)]), state.advance(((k1,) + state.history)[:3]), None

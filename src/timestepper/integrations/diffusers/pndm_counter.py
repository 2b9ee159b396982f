"""diffusers' ``PNDMScheduler`` in a loop that does not start at ``timesteps[0]`` (img2img).

``PNDMScheduler`` keeps no step index: each ``step`` call is placed by an internal call
counter (reset by ``set_timesteps``) and by the ``timestep`` the pipeline passes. In the full loop
the two agree and the result is PNDM (Liu et al. 2022), which :class:`~timestepper.solvers.pndm.PLMS`
/ :class:`~timestepper.solvers.pndm.PNDM` reproduce. A pipeline that slices
``timesteps[t_start:]`` (img2img, inpainting; ``PNDMScheduler.order`` is 1) restarts the counter
on a later timestep, and the two disagree. Observed behaviour of diffusers 0.42 (each call
transfers a base sample with a noise prediction ``eps`` from a label ``s`` to a label ``t``,
with the DDIM transfer of PNDM's eq. 9; labels below 0 mean the final ``alpha``):

* PLMS (``skip_prk_steps=True``), call ``c`` with passed timestep ``tau`` and model output
  ``m``; ``r = T // N``:

  - ``c = 0``: ``eps = m``, the sample is remembered, transfer ``tau -> tau - r``;
  - ``c = 1``: ``eps`` is the mean of ``m`` and the first output, the *remembered* sample is
    transferred ``tau + r -> tau`` (the pseudo improved-Euler step; in a sliced loop the model ran
    at ``tau``, which is the sample's level only when the loop started at ``timesteps[k]``,
    ``k >= 2`` or ``k = 0``);
  - ``c >= 2``: ``m`` joins the history (the last four outputs, the second call's excluded) and
    ``eps`` is the Adams-Bashforth combination of the history (PNDM's eq. 12, with the ramp),
    transfer ``tau -> tau - r``. From the third call of a sliced loop on, ``tau`` is one step
    below the level the previous calls reached: the labels lag, and the model is evaluated there.

* PRK (``skip_prk_steps=False``), the first ``len(prk_timesteps)`` calls: stage ``c % 4`` of
  the Runge-Kutta step ``c // 4``: the base sample (remembered at stage 0) is transferred from
  the *full* schedule's label ``prk_timesteps[4 (c // 4)]`` to ``tau - h`` (stages 0 and 2,
  ``h = T // N // 2``) or ``tau`` (stages 1 and 3) with ``eps = m`` (stages 0-2; stage 0's ``m``
  joins the history) or ``eps = (k1 + 2 k2 + 2 k3 + k4) / 6`` (stage 3); PLMS afterwards.

This class reproduces that, call by call, with float64 coefficients on our schedule; the
Adams-Bashforth weights are :data:`~timestepper.solvers.pndm.ADAMS_BASHFORTH`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...diffusion.schedules import NoiseSchedule
from ...solvers.base import lincomb
from ...solvers.pndm import ADAMS_BASHFORTH

PLMS_HISTORY = 4
RK_STAGES = 4
RK_WEIGHTS = (1 / 6, 1 / 3, 1 / 3)


class PndmCounterLoop:
    """diffusers' ``PNDMScheduler.step`` placed by its call counter (module docstring).

    Args:
        schedule: the model's discrete schedule (times are training steps).
        num_train_timesteps, num_inference_steps: ``T`` and ``N``.
        prk_labels: the full schedule's ``prk_timesteps`` (empty with ``skip_prk_steps``).
        final_time: our time for labels below 0 (``t_data`` with ``set_alpha_to_one``, else 0).
    """

    def __init__(self, schedule: NoiseSchedule, num_train_timesteps: int,  # noqa: PLR0913 - the class's state
                 num_inference_steps: int, prk_labels: list[int], final_time: float) -> None:
        self.schedule, self.final_time = schedule, final_time
        self.r = num_train_timesteps // num_inference_steps
        self.prk_labels = prk_labels
        self.counter = 0
        self.history: list[Tensor] = []
        self.remembered: Tensor | None = None
        self.rk_sum: Tensor | None = None

    def _transfer(self, x: Tensor, eps: Tensor, s: float, t: float) -> Tensor:
        """PNDM's transfer (eq. 9, algebraically DDIM) from label ``s`` to label ``t``."""
        times = torch.tensor([s, t if t >= 0 else self.final_time], dtype=torch.float64)
        a, sig = self.schedule.alpha_sigma(times)
        rho = sig / a
        cx, ce = float(a[1] / a[0]), float(-a[1] * (rho[0] - rho[1]))
        return lincomb(x, cx, ((ce, eps),))

    def step(self, m: Tensor, tau: float, x: Tensor) -> Tensor:
        """The sample after the call with model output ``m`` at passed timestep ``tau``."""
        c = self.counter
        self.counter += 1
        if c < len(self.prk_labels):
            return self._rk_stage(c, m, tau, x)
        return self._plms(c, m, tau, x)

    def _rk_stage(self, c: int, m: Tensor, tau: float, x: Tensor) -> Tensor:
        stage = c % RK_STAGES
        s = float(self.prk_labels[c // RK_STAGES * RK_STAGES])
        t = tau - (self.r // 2 if stage % 2 == 0 else 0)
        if stage == 0:
            self.history.append(m)
            self.remembered, self.rk_sum = x, m * RK_WEIGHTS[0]
        assert self.remembered is not None and self.rk_sum is not None
        eps = m
        if stage in (1, 2):
            self.rk_sum = self.rk_sum + m * RK_WEIGHTS[stage]
        elif stage == RK_STAGES - 1:
            eps = self.rk_sum + m / 6
        return self._transfer(self.remembered, eps, s, t)

    def _plms(self, c: int, m: Tensor, tau: float, x: Tensor) -> Tensor:
        if c == 1 and self.remembered is not None:  # the second half of the improved-Euler step
            eps = (m + self.history[-1]) / 2
            base, self.remembered = self.remembered, None
            return self._transfer(base, eps, tau + self.r, tau)
        self.history = [*self.history[-(PLMS_HISTORY - 1):], m]
        if c == 0:
            self.remembered = x
        weights = ADAMS_BASHFORTH[len(self.history) - 1]
        newest_first = self.history[::-1]
        eps = lincomb(newest_first[0], weights[0], tuple(zip(weights[1:], newest_first[1:])))
        return self._transfer(x, eps, tau, tau - self.r)

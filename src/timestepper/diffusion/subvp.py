"""The sub-VP SDE's schedule (Song et al. 2021, Score SDE, eq. 12 and Appendix B).

``dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - e^{-2 int_0^t beta})) dw`` with the linear
``beta(t) = beta_min + t (beta_max - beta_min)`` has marginals ``x_t = alpha x0 + sigma eps`` with
``alpha = e^{-int beta / 2}`` (as VP) and ``sigma = 1 - alpha^2`` (below VP's
``sqrt(1 - alpha^2)``).
"""

from __future__ import annotations

import torch

from .schedules import NoiseSchedule, VPLinearSchedule, _f64


class SubVPSchedule(NoiseSchedule):
    """Sub-VP schedule with linear beta (Song et al. 2021, eq. 12).

    Args:
        beta_min, beta_max, t_min, t_max: as :class:`~timestepper.VPLinearSchedule`.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3,
                 t_max: float = 1.0) -> None:
        self._vp = VPLinearSchedule(beta_min, beta_max, t_min, t_max)
        self.beta_min, self.beta_max = self._vp.beta_min, self._vp.beta_max
        self.t_min, self.t_max = self._vp.t_min, self._vp.t_max

    def alpha(self, t):
        return torch.exp(self._vp.log_alpha(_f64(t)))

    def sigma(self, t):
        return -torch.expm1(2.0 * self._vp.log_alpha(_f64(t)))

    def log_snr(self, t):
        la = self._vp.log_alpha(_f64(t))
        return la - torch.log(-torch.expm1(2.0 * la))

    def t_from_log_snr(self, lam):
        # alpha / (1 - alpha^2) = e^lam  =>  alpha = 2 e^lam / (1 + sqrt(1 + 4 e^{2 lam}))
        lam = _f64(lam)
        e = torch.exp(lam)
        la = torch.where(torch.isinf(lam) & (lam > 0), torch.zeros_like(lam),
                         torch.log(2.0 * e) - torch.log1p(torch.sqrt(1.0 + 4.0 * e * e)))
        return self._vp.t_from_log_alpha(la)

    def dalpha(self, t):
        t = _f64(t)
        return self.alpha(t) * self._vp.dlog_alpha(t)

    def dsigma(self, t):
        t = _f64(t)
        a = self.alpha(t)
        return -2.0 * a * self.dalpha(t)

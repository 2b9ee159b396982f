"""Linear multistep on the sigma ODE (k-diffusion's ``sample_lms``; diffusers'
``LMSDiscreteScheduler``).

In the scaled state ``y = x / alpha`` with ``rho = sigma / alpha`` (k-diffusion's sigma) the
probability-flow ODE is ``dy/drho = (y - x0) / rho = eps`` (Karras et al. 2022, eq. 4). The last
``k`` derivatives are interpolated by the Lagrange polynomial in ``rho`` and integrated exactly
over the step (a variable-step Adams-Bashforth method, Hairer, Norsett & Wanner 1993, III.5);
the peers integrate the same polynomials with ``scipy.integrate.quad``. Order ``k`` (default 4),
with warm-up: step ``i`` uses at most ``i + 1`` derivatives. The step to ``rho = 0`` keeps its
order (the polynomial integral is finite), as in the peers.
"""

from __future__ import annotations

from ..core.validation import check_order
from .deis import NoiseLevelMultistep
from .registry import register


@register("lms")
class LMS(NoiseLevelMultistep):
    """Linear multistep in ``rho`` of order 1-4 (default 4; k-diffusion's ``sample_lms``).

    Args:
        order: 1, 2, 3 or 4.
    """

    log_variable = False
    first_order_to_zero = False  # the polynomial integral to rho = 0 is finite

    def __init__(self, order: int = 4) -> None:
        self.order = self.max_order = check_order(order, (1, 2, 3, 4))

    def orders(self, grid):
        return [self.order] * grid.steps

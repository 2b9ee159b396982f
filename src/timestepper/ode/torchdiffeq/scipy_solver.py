"""``method="scipy_solver"``: ``scipy.integrate.solve_ivp`` with the ``solver`` option naming its
method (default ``"LSODA"``, as torchdiffeq). The solve runs in NumPy without gradients."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .inputs import Field, State
from .options import SCIPY, check_keys


def solve_with_scipy(func, state: State, t: Tensor, rtol: Any, atol: Any, options: dict) -> Tensor:  # noqa: PLR0913
    """The states at ``t`` (stacked, flat), from scipy's ``solve_ivp``."""
    try:
        from scipy.integrate import solve_ivp
    except ImportError as exc:  # pragma: no cover - scipy is a test extra
        raise ImportError("method='scipy_solver' needs scipy: pip install scipy") from exc
    check_keys(options, SCIPY, "scipy_solver")
    if "norm" in options:
        raise ValueError("options['norm'] is not available with scipy_solver (scipy has its own)")
    field = Field(func, state)
    x0 = state.x0
    shape = x0.shape

    def rhs(s: float, y):
        with torch.no_grad():
            x = torch.as_tensor(y, dtype=x0.dtype, device=x0.device).reshape(shape)
            return field(s, x).reshape(-1).cpu().numpy()

    tl = t.detach().to(torch.float64).cpu().numpy()
    kw: dict[str, Any] = dict(method=options.get("solver", "LSODA"), rtol=_np(rtol), atol=_np(atol),
                              max_step=options.get("max_step", math.inf))
    if "min_step" in options:
        kw["min_step"] = options["min_step"]
    if "first_step" in options:
        kw["first_step"] = options["first_step"]
    sol = solve_ivp(rhs, (tl[0], tl[-1]), x0.detach().reshape(-1).cpu().numpy(), t_eval=tl, **kw)
    if not sol.success:
        raise RuntimeError(f"scipy's solve_ivp failed: {sol.message}")
    return torch.as_tensor(sol.y.T, dtype=x0.dtype).to(x0.device).reshape(len(tl), *shape)


def _np(v: Any) -> Any:
    return v.detach().cpu().numpy() if isinstance(v, Tensor) else v


__all__ = ["solve_with_scipy"]

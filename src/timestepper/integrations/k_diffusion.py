"""Interop with k-diffusion: its denoisers ``D(x; sigma)`` as :class:`Denoiser` s.

k-diffusion's model abstraction is the denoiser of Karras et al. (2022, eq. 2/7): called as
``model(x, sigma, **kw)`` with ``x = x0 + sigma eps`` it returns an estimate of ``x0``. That is a
``sample`` prediction on :class:`~timestepper.diffusion.schedules.EDMSchedule` (``alpha = 1``,
time = sigma), so every solver here runs it unchanged. k-diffusion itself is not imported.
"""

from __future__ import annotations

from typing import Any

import torch

from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import EDMSchedule


def _attr_float(model: Any, name: str) -> float | None:
    v = getattr(model, name, None)
    if v is None or isinstance(v, (int, float)):
        return v if v is None else float(v)
    return float(torch.as_tensor(v, dtype=torch.float64).detach().cpu())


def denoiser_from_k_diffusion(
    model: Any,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> Denoiser:
    """Wrap a k-diffusion denoiser ``model(x, sigma, **kw) -> x0`` (Karras et al. 2022's
    ``D(x; sigma)``) as a data-predicting :class:`Denoiser` on :class:`EDMSchedule`; the noise
    range defaults to the model's ``sigma_min`` / ``sigma_max`` attributes."""
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, sigma), got {type(model).__name__}")
    lo = sigma_min if sigma_min is not None else _attr_float(model, "sigma_min")
    hi = sigma_max if sigma_max is not None else _attr_float(model, "sigma_max")
    if lo is None or hi is None:
        raise ValueError(
            "the model has no sigma_min/sigma_max attributes; pass sigma_min= and "
            "sigma_max= (the noise range it was trained on)"
        )
    return Denoiser(model, EDMSchedule(lo, hi), "sample", model_kwargs=model_kwargs)

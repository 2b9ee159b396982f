"""diffusers models as :class:`~timestepper.diffusion.denoiser.Denoiser` s."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ...diffusion.denoiser import Denoiser
from .config import prediction_from_config, schedule_from_config


class DiffusersModel:
    """``unet(x, t, **kw)`` -> tensor; keeps the first ``C`` channels of learned-variance models."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        out = self.unet(x, t, **kwargs)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim == x.ndim and out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]  # variance_type="learned"/"learned_range": mean part
        return out


def denoiser_from_diffusers(
    unet: Any, scheduler_or_config: Any, model_kwargs: dict[str, Any] | None = None
) -> Denoiser:
    """A :class:`Denoiser` over a diffusers UNet with the schedule and prediction type of a
    scheduler (or its config). ``t`` reaches the UNet in diffusers' timestep units."""
    if not callable(unet):
        raise TypeError(f"unet must be callable, got {type(unet).__name__}")
    return Denoiser(
        DiffusersModel(unet),
        schedule_from_config(scheduler_or_config),
        prediction_from_config(scheduler_or_config),
        model_kwargs=model_kwargs,
    )

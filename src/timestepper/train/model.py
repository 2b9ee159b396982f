"""The trainable model: a network plus the map from the schedule's time to its inputs.

:class:`DenoisingModel` is what a :class:`~timestepper.diffusion.denoiser.Denoiser` wraps: it is
called as ``model(x, t, labels=None)`` with ``t`` in the schedule's own time and returns the
network output (interpreted as the prediction type of the checkpoint). It applies the input
preconditioning of Karras et al. (2022, Table 1, ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` in
the scaled space; here ``1 / sqrt(alpha^2 sigma_data^2 + sigma^2)`` for a general schedule), which
is 1 for variance-preserving schedules with unit-variance data and keeps the network's input at
unit scale for VE/EDM/flow schedules, and it maps time to the network's noise input ``c_noise``
(``time_scale * t`` or ``time_scale * log t``; EDM uses ``ln(sigma) / 4``, here scaled by 1000 for
the sinusoidal embedding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..diffusion.schedules import (
    EDMSchedule,
    NoiseSchedule,
    VPCosineSchedule,
    VPDiscreteSchedule,
    VPLinearSchedule,
)

TIME_TRANSFORMS = ("linear", "log")


def default_time_input(schedule: NoiseSchedule) -> tuple[str, float]:
    """``(transform, scale)`` for ``c_noise``: integer steps as they are for discrete VP,
    ``250 ln(sigma)`` for EDM, ``1000 t`` for the continuous schedules on ``[0, 1]``."""
    if isinstance(schedule, VPDiscreteSchedule):
        return "linear", 1.0
    if isinstance(schedule, EDMSchedule):
        return "log", 250.0
    return "linear", 1000.0


class DenoisingModel(nn.Module):
    """``net(c_in x, c_noise(t), labels)`` for a schedule.

    Args:
        net: a network taking ``(x, c_noise, labels=None)``.
        schedule: the noise schedule the model is trained on.
        time_transform: ``"linear"`` or ``"log"`` (default from the schedule).
        time_scale: factor on the transformed time (default from the schedule).
        sigma_data: data standard deviation used in ``c_in`` (non-VP schedules only).
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        time_transform: str | None = None,
        time_scale: float | None = None,
        sigma_data: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        dt, ds = default_time_input(schedule)
        self.time_transform = dt if time_transform is None else time_transform
        if self.time_transform not in TIME_TRANSFORMS:
            raise ValueError(
                f"unknown time_transform {self.time_transform!r}; choose from {TIME_TRANSFORMS}"
            )
        self.time_scale = float(ds if time_scale is None else time_scale)
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.sigma_data = float(sigma_data)
        self.net = net
        self.schedule = schedule
        self._vp = isinstance(schedule, (VPDiscreteSchedule, VPLinearSchedule, VPCosineSchedule))

    def c_noise(self, t: Tensor) -> Tensor:
        """The network's time input: ``time_scale * t`` or ``time_scale * log(t)`` (float32)."""
        t = t.to(torch.float32)
        if self.time_transform == "log":
            return self.time_scale * torch.log(t)
        return self.time_scale * t

    def c_in(self, t: Tensor) -> Tensor | None:
        """Input scale per sample, or ``None`` for VP schedules (where it is 1)."""
        if self._vp:
            return None
        td = t.to(torch.float64)
        a, s = self.schedule.alpha(td), self.schedule.sigma(td)
        return torch.rsqrt(a * a * self.sigma_data**2 + s * s)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """The network output at ``x`` and time ``t`` (scalar or per sample), input scaled by
        :meth:`c_in`."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        cin = self.c_in(t)
        if cin is not None:
            x = x * cin.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return self.net(x, self.c_noise(t), labels)

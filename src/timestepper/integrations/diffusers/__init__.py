"""Interop with diffusers: its models as :class:`Denoiser` s, and our solvers as a scheduler.

* :class:`Scheduler` speaks diffusers' scheduler protocol. ``Scheduler.from_config(cfg)``
  reproduces the config's own class (DDPM, DDIM, PNDM, LMS, Euler, Euler-ancestral, Heun,
  KDPM2, KDPM2-ancestral, DPM-Solver multistep and singlestep, DEIS, UniPC, FlowMatch Euler and Heun), in full
  loops and in loops started mid-schedule (``mid_schedule="restart"``: the method started
  afresh there instead); ``Scheduler.from_config(cfg,
  solver="dpmpp-3m", grid="logsnr")`` runs one of our solvers instead::

      pipe.scheduler = Scheduler.from_config(pipe.scheduler.config)                # same images
      pipe.scheduler = Scheduler.from_config(pipe.scheduler.config, solver="dpmpp-3m")  # ours

* :func:`schedule_from_config` reads a config's training schedule into a
  :class:`~timestepper.diffusion.schedules.VPDiscreteSchedule`;
  :func:`denoiser_from_diffusers` wraps a diffusers UNet as a :class:`Denoiser`.

diffusers is not imported by this package; it is only needed to run a pipeline.
"""

import importlib.util
from typing import Any

from ...diffusion.denoiser import Denoiser
from .config import prediction_from_config, schedule_from_config
from .model import denoiser_from_diffusers
from .scheduler import SchedulerOutput, scheduler_solvers

Denoiser._diffusers_builder = staticmethod(denoiser_from_diffusers)  # Denoiser.from_diffusers


def __getattr__(name: str) -> Any:
    """``Scheduler``: the diffusers ``SchedulerMixin`` subclass when diffusers is installed
    (:mod:`.mixin`, imported on first use so that ``import timestepper`` stays fast), the plain
    class otherwise."""
    if name != "Scheduler":
        raise AttributeError(name)
    if importlib.util.find_spec("diffusers") is not None:
        from . import mixin as chosen
    else:
        from . import scheduler as chosen  # type: ignore[no-redef]
    globals()["Scheduler"] = chosen.Scheduler
    return chosen.Scheduler


__all__ = [
    "Scheduler",
    "SchedulerOutput",
    "denoiser_from_diffusers",
    "prediction_from_config",
    "schedule_from_config",
    "scheduler_solvers",
]

"""Diffusion and flow models below the solvers: noise schedules, prediction types, sampling grids,
the denoiser and the diffusion term. The fronts that sample them (``sample``, ``inpaint``,
``likelihood``) live in :mod:`timestepper.sampling`."""

from .denoiser import Denoiser
from .grids import SamplingGrid, make_grid
from .predictions import PREDICTIONS, convert
from .schedules import (
    EDMSchedule,
    NoiseSchedule,
    RectifiedFlowSchedule,
    VESchedule,
    VPCosineSchedule,
    VPDiscreteSchedule,
    VPLinearSchedule,
)
from .subvp import SubVPSchedule
from .term import DiffusionTerm, EvalPoint

__all__ = [
    "PREDICTIONS",
    "Denoiser",
    "DiffusionTerm",
    "EDMSchedule",
    "EvalPoint",
    "NoiseSchedule",
    "RectifiedFlowSchedule",
    "SamplingGrid",
    "SubVPSchedule",
    "VESchedule",
    "VPCosineSchedule",
    "VPDiscreteSchedule",
    "VPLinearSchedule",
    "convert",
    "make_grid",
]

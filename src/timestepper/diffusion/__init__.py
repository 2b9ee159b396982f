"""Diffusion and flow models: schedules, prediction types, grids, the denoiser and ``sample``."""

from .denoiser import Denoiser
from .grids import SamplingGrid, make_grid
from .predictions import PREDICTIONS, convert
from .sample import sample
from .schedules import (
    EDMSchedule,
    NoiseSchedule,
    RectifiedFlowSchedule,
    VESchedule,
    VPCosineSchedule,
    VPDiscreteSchedule,
    VPLinearSchedule,
)
from .term import DiffusionTerm

__all__ = [
    "PREDICTIONS",
    "Denoiser",
    "DiffusionTerm",
    "EDMSchedule",
    "NoiseSchedule",
    "RectifiedFlowSchedule",
    "SamplingGrid",
    "VESchedule",
    "VPCosineSchedule",
    "VPDiscreteSchedule",
    "VPLinearSchedule",
    "convert",
    "make_grid",
    "sample",
]

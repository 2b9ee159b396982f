"""Diffusion and flow models: schedules, prediction types, grids, the denoiser and ``sample``."""

from .denoiser import Denoiser
from .grids import SamplingGrid, make_grid
from .inpaint import Inpaint, inpaint
from .likelihood import LikelihoodResult, likelihood
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
from .smc import SMCInpaint
from .subvp import SubVPSchedule
from .term import DiffusionTerm

__all__ = [
    "PREDICTIONS",
    "Denoiser",
    "DiffusionTerm",
    "EDMSchedule",
    "Inpaint",
    "LikelihoodResult",
    "NoiseSchedule",
    "RectifiedFlowSchedule",
    "SMCInpaint",
    "SamplingGrid",
    "SubVPSchedule",
    "VESchedule",
    "VPCosineSchedule",
    "VPDiscreteSchedule",
    "VPLinearSchedule",
    "convert",
    "inpaint",
    "likelihood",
    "make_grid",
    "sample",
]

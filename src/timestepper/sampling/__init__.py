"""The fronts for diffusion and flow models, above the loop: ``sample``, ``inpaint``,
``invert`` and ``likelihood``."""

from .inpaint import inpaint
from .invert import InversionResult, invert
from .likelihood import LikelihoodResult, likelihood
from .sample import sample

__all__ = ["InversionResult", "LikelihoodResult", "inpaint", "invert", "likelihood", "sample"]

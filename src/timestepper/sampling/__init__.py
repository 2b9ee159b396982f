"""The fronts for diffusion and flow models, above the loop: ``sample``, ``inpaint`` and
``likelihood``."""

from .inpaint import inpaint
from .likelihood import LikelihoodResult, likelihood
from .sample import sample

__all__ = ["LikelihoodResult", "inpaint", "likelihood", "sample"]

"""Neural controlled differential equations for irregular time series (Kidger et al. 2020).

* :mod:`~timestepper.cde.interpolation`: coefficients of linear, rectilinear, natural cubic and
  Hermite cubic (backward differences) paths through partially observed series;
* :mod:`~timestepper.cde.paths`: the paths (``evaluate``, ``derivative``, ``knots``) and
  :func:`control_path` (time and observational-intensity channels);
* :mod:`~timestepper.cde.term`: :class:`CDETerm` and the knot-clipping controller;
* :func:`cdeint`: the CDE solved by :func:`timestepper.solve`, every gradient mode.
"""

from .interpolation import hermite_cubic_coeffs, linear_knots, natural_cubic_coeffs, rectilinear_knots
from .paths import KINDS, ControlPath, CubicPath, LinearPath, control_path
from .solve import cdeint
from .term import CDETerm, KnotController

__all__ = ["KINDS", "CDETerm", "ControlPath", "CubicPath", "KnotController", "LinearPath", "cdeint",
           "control_path", "hermite_cubic_coeffs", "linear_knots", "natural_cubic_coeffs",
           "rectilinear_knots"]

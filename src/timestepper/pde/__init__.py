"""Time-dependent PDEs: spectral ETD solvers, datasets, neural surrogates and PDE-Refiner.

Equations build a :class:`~timestepper.core.terms.SemilinearTerm` in Fourier space and call the one
:func:`~timestepper.core.integrate` loop::

    ks = ts.pde.KuramotoSivashinsky(length=64.0, n=256)
    u = ks.simulate(u0, t_end=10.0, dt=0.2, solver="etdrk4", save_every=4)
"""

from .equation import SpectralEquation, uniform_grid
from .equations1d import Burgers, Heat, KdV, KuramotoSivashinsky, QuadraticFluxEquation1D
from .navier_stokes import NavierStokes2D

__all__ = [
    "Burgers",
    "Heat",
    "KdV",
    "KuramotoSivashinsky",
    "NavierStokes2D",
    "QuadraticFluxEquation1D",
    "SpectralEquation",
    "uniform_grid",
]

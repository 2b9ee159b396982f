"""Time-dependent PDEs: spectral ETD solvers, datasets, neural surrogates and PDE-Refiner.

Equations build a :class:`~timestepper.core.terms.SemilinearTerm` in Fourier space and call the one
:func:`timestepper.integrate` loop::

    ks = ts.pde.KuramotoSivashinsky(length=64.0, n=256)
    u = ks.simulate(u0, t_end=10.0, dt=0.2, solver="etdrk4", save_every=4)

Surrogates (:mod:`.models`: FNO, U-Net, SineNet, T1, the spatiotemporal FNO; wrapped as
:class:`OneStepSurrogate`, :class:`BlockSurrogate` or :class:`PDERefiner`) are trained with
:func:`train_surrogate`, rolled out with :func:`rollout` (also through ``integrate``) and scored
with :mod:`.metrics`.
"""

from . import losses, metrics, models
from .data import GenerationConfig, generate, read_hdf5, write_hdf5
from .equation import SpectralEquation, uniform_grid
from .equations1d import Burgers, Heat, KdV, KuramotoSivashinsky, QuadraticFluxEquation1D
from .losses import NegativeSobolevLoss, negative_sobolev_norm_sq
from .metrics import high_correlation_time, pearson_per_step
from .navier_stokes import NavierStokes2D
from .refiner import PDERefiner
from .rollout import SurrogateTerm, rollout
from .surrogate import BlockSurrogate, OneStepSurrogate, frame_blocks, unblock
from .train import TrainConfig, train_surrogate

__all__ = [
    "BlockSurrogate",
    "Burgers",
    "GenerationConfig",
    "Heat",
    "KdV",
    "KuramotoSivashinsky",
    "NavierStokes2D",
    "NegativeSobolevLoss",
    "OneStepSurrogate",
    "PDERefiner",
    "QuadraticFluxEquation1D",
    "SpectralEquation",
    "SurrogateTerm",
    "TrainConfig",
    "frame_blocks",
    "generate",
    "high_correlation_time",
    "losses",
    "metrics",
    "models",
    "negative_sobolev_norm_sq",
    "pearson_per_step",
    "read_hdf5",
    "rollout",
    "train_surrogate",
    "unblock",
    "uniform_grid",
    "write_hdf5",
]

"""Time-dependent PDEs: spectral ETD solvers, datasets, neural surrogates and PDE-Refiner.

Equations build a :class:`~timestepper.core.terms.SemilinearTerm` in Fourier space and call the one
:func:`timestepper.integrate` loop::

    ks = ts.pde.KuramotoSivashinsky(length=64.0, n=256)
    u = ks.simulate(u0, t_end=10.0, dt=0.2, solver="etdrk4", save_every=4)

Surrogates (:mod:`.models`: FNO, U-Net, SineNet, T1, the spatiotemporal FNO; wrapped as
:class:`OneStepSurrogate`, :class:`BlockSurrogate` or :class:`PDERefiner`) are trained with
:func:`train_surrogate`, rolled out with :func:`rollout` (also through ``integrate``) and scored
with :mod:`.metrics`. :func:`train_online` trains from solvers running on Ray (no data set on disk);
:func:`generate_shards` writes a resumable sharded data set read back by :class:`ShardedTrajectories`.
"""

from . import losses, metrics, models
from .data import GenerationConfig, generate, read_hdf5, write_hdf5
from .equation import SpectralEquation, uniform_grid
from .equations1d import Burgers, Heat, KdV, KuramotoSivashinsky, QuadraticFluxEquation1D
from .losses import NegativeSobolevLoss, negative_sobolev_norm_sq
from .metrics import high_correlation_time, pearson_per_step
from .navier_stokes import NavierStokes2D
from .online import OnlineConfig, OnlineResult, train_online
from .refiner import PDERefiner
from .rollout import SurrogateTerm, rollout
from .shards import ShardedTrajectories, generate_shards, read_shards
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
    "OnlineConfig",
    "OnlineResult",
    "PDERefiner",
    "QuadraticFluxEquation1D",
    "ShardedTrajectories",
    "SpectralEquation",
    "SurrogateTerm",
    "TrainConfig",
    "frame_blocks",
    "generate",
    "generate_shards",
    "high_correlation_time",
    "losses",
    "metrics",
    "models",
    "negative_sobolev_norm_sq",
    "pearson_per_step",
    "read_hdf5",
    "read_shards",
    "rollout",
    "train_online",
    "train_surrogate",
    "unblock",
    "uniform_grid",
    "write_hdf5",
]

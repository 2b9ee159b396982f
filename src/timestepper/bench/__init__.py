"""Benchmark problems with exact answers, metrics, and the benchmark runner."""

from .gmm import GaussianMixture
from .metrics import sliced_wasserstein, trajectory_error

__all__ = ["GaussianMixture", "sliced_wasserstein", "trajectory_error"]

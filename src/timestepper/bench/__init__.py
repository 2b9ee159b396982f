"""Benchmark problems with exact answers, metrics, and the benchmark runner."""

from .conditional import ConditionalMixture
from .gmm import GaussianMixture
from .metrics import sliced_wasserstein, trajectory_error

__all__ = ["ConditionalMixture", "GaussianMixture", "sliced_wasserstein", "trajectory_error"]

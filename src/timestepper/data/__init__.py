"""Datasets for irregular time series: :func:`load_uea` reads the UEA sets that sktime ships
inside its package (``pip install 'timestepper[data]'``) into padded values, observation times
and masks, with seeded missing-data simulation."""

from .uea import DATASETS, IrregularDataset, drop_observations, load_uea

__all__ = ["DATASETS", "IrregularDataset", "drop_observations", "load_uea"]

"""Cheaper denoisers by 8-bit post-training quantization (``torch.ao``, CPU int8 inference):
PTQ4DM (NDTC calibration, static W8A8), weight-only int8, TFMQ-DM (temporal information block:
TIAR and FSC, outputs cached per time step) and Temporal Feature Matters (full-precision temporal
features cached for the sampler's grid, disturbance-aware selection). See ``docs/quantize.md``."""

from .calibration import Calibration, calibration_set, evaluation_times, ndtc_positions, record_trajectory
from .checkpoint import load_quantized, save_quantized
from .quantize import METHODS, add_grid, add_times, cached_temporal_features, quantize

__all__ = [
    "METHODS",
    "Calibration",
    "add_grid",
    "add_times",
    "cached_temporal_features",
    "calibration_set",
    "evaluation_times",
    "load_quantized",
    "ndtc_positions",
    "quantize",
    "record_trajectory",
    "save_quantized",
]

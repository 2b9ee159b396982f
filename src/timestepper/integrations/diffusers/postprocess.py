"""Data-prediction post-processing of diffusers' DDPM-family schedulers, applied to ``x0``.

* ``clip_sample``: ``x0`` clamped to ``[-r, r]``.
* dynamic thresholding (Saharia et al. 2022, Imagen, Section 2.3): per sample, ``s`` is the
  ``ratio`` quantile of ``|x0|``, clamped to ``[1, max_value]``; ``x0`` is clamped to
  ``[-s, s]`` and divided by ``s``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def clip(x0: Tensor, limit: float) -> Tensor:
    """``x0`` clamped to ``[-limit, limit]``."""
    return x0.clamp(-limit, limit)


def dynamic_threshold(x0: Tensor, ratio: float, max_value: float) -> Tensor:
    """Imagen's dynamic thresholding of ``x0`` (module docstring); float32 at least."""
    dtype = x0.dtype
    flat = x0.reshape(x0.shape[0], -1)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0, max=max_value)[:, None]
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(dtype)

"""Data sets that ship inside installed packages (no downloads): scikit-learn's handwritten
digits and its 2-D toy sets, returned as tensors.

Digits (Alpaydin & Kaynak 1998, the UCI "optdigits" test set as packaged by scikit-learn): 1797
grey images of 8x8 pixels with values 0..16 and labels 0..9. Here they are scaled to ``[-1, 1]``
(``x / 8 - 1``) and shaped ``(N, 1, 8, 8)``. The split is fixed (stratified, 70/30, seed 0), so
the generative models, the metric's classifier and the benchmark all see the same test images.
"""

from __future__ import annotations

import functools
import numbers

import torch
from torch import Tensor

SPLITS = ("train", "test", "all")
TOY_SETS = ("moons", "circles", "swiss_roll")


def _sklearn():
    try:
        import sklearn.datasets
        import sklearn.model_selection
    except ImportError as e:  # pragma: no cover - optional dependency
        raise ImportError(
            "the shipped data sets need scikit-learn: pip install scikit-learn"
        ) from e
    return sklearn


def digits(split: str = "train", dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """The 8x8 digits as ``(images, labels)``: images ``(N, 1, 8, 8)`` in ``[-1, 1]``, labels
    ``(N,)`` int64.

    Args:
        split: ``"train"`` (1257 images), ``"test"`` (540) or ``"all"`` (1797).
        dtype: floating dtype of the images.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    x, y = _digits(split)
    return x.to(dtype), y.clone()


@functools.cache
def _digits(split: str) -> tuple[Tensor, Tensor]:
    sk = _sklearn()
    d = sk.datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float64) / 8.0 - 1.0
    y = torch.tensor(d.target, dtype=torch.int64)
    if split != "all":
        idx = torch.arange(len(y)).numpy()
        tr, te = sk.model_selection.train_test_split(
            idx, test_size=0.3, random_state=0, stratify=d.target
        )
        sel = torch.as_tensor(tr if split == "train" else te)
        x, y = x[sel], y[sel]
    return x.unsqueeze(1), y


def digits_to_unit(x: Tensor) -> Tensor:
    """Map model-space digits (``[-1, 1]``) to ``[0, 1]`` for display, clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def toy_2d(
    name: str, n: int, seed: int = 0, noise: float | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``n`` points of a 2-D toy set, standardised to zero mean and unit variance per axis.

    Args:
        name: ``"moons"``, ``"circles"`` or ``"swiss_roll"`` (the roll's x-z plane).
        n: number of points.
        seed: random seed of scikit-learn's generator.
        noise: Gaussian noise added by scikit-learn (default 0.05 for moons/circles, 0.5 for
            the swiss roll).
    """
    if name not in TOY_SETS:
        raise ValueError(f"unknown toy set {name!r}; choose from {', '.join(TOY_SETS)}")
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    n = int(n)
    sk = _sklearn()
    if name == "moons":
        pts, _ = sk.datasets.make_moons(
            n, noise=0.05 if noise is None else noise, random_state=seed
        )
    elif name == "circles":
        pts, _ = sk.datasets.make_circles(
            n, noise=0.05 if noise is None else noise, factor=0.5, random_state=seed
        )
    else:
        pts3, _ = sk.datasets.make_swiss_roll(
            n, noise=0.5 if noise is None else noise, random_state=seed
        )
        pts = pts3[:, [0, 2]]
    x = torch.tensor(pts, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    return x.to(dtype)

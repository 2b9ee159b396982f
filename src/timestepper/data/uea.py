"""Multivariate time series classification sets that ship inside an installable package.

sktime bundles a few of the UEA archive's sets with the package itself (no download):
``BasicMotions`` (6 channels, length 100, 4 classes, 40 + 40 series, 10 s at 10 Hz) and
``JapaneseVowels`` (12 channels, variable length 7-29, 9 classes, 270 + 370 series). This module
turns them into the layout irregular-series models want: padded values, observation times,
an observation mask, lengths and integer labels, with the official train/test split.

Missing data is simulated as in Kidger et al. (2020, "Neural Controlled Differential Equations
for Irregular Time Series", sec. 4.1) and Oh et al. (2024, "Stable Neural SDEs", sec. 5): for
every series a fraction ``drop_rate`` of its observation times is removed at random (seeded), or
of its single values with ``drop="values"``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

DATASETS = ("BasicMotions", "JapaneseVowels")
SPLITS = ("train", "test")
DROPS = ("times", "values")
INSTALL = "pip install 'timestepper[data]'  (or: pip install sktime)"


@dataclass(frozen=True)
class IrregularDataset:
    """A batch of partially observed multivariate series on a shared time axis.

    Attributes:
        times: ``(L,)`` float64 observation times (increasing), shared by every series.
        values: ``(N, L, C)`` values; 0 where not observed (read them through ``mask``).
        mask: ``(N, L, C)`` bool, True where a value was observed.
        lengths: ``(N,)`` the number of time points of each series before padding.
        labels: ``(N,)`` int64 class indices into ``classes``.
        classes: the class names.
    """

    times: Tensor
    values: Tensor
    mask: Tensor
    lengths: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def channels(self) -> int:
        return int(self.values.shape[-1])

    def subset(self, index: Tensor | slice) -> IrregularDataset:
        """The series at ``index`` (a slice, an index tensor or a bool tensor)."""
        return replace(self, values=self.values[index], mask=self.mask[index],
                       lengths=self.lengths[index], labels=self.labels[index])


def _sktime_loader(name: str):
    try:
        from sktime import datasets
    except ImportError as exc:
        raise ImportError(f"timestepper.data needs sktime for the bundled {name!r} set: {INSTALL}") from exc
    return {"BasicMotions": datasets.load_basic_motions,
            "JapaneseVowels": datasets.load_japanese_vowels}[name]


def _raw(name: str, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The series of ``split`` as a list of ``(length, C)`` arrays, and the label strings."""
    X, y = _sktime_loader(name)(split=split, return_X_y=True)
    series = [np.stack([np.asarray(X.iloc[i, c], dtype=np.float64) for c in range(X.shape[1])], -1)
              for i in range(X.shape[0])]
    return series, np.asarray(y).astype(str)


def _pad(series: list[np.ndarray], length: int) -> tuple[Tensor, Tensor, Tensor]:
    n, c = len(series), series[0].shape[1]
    values = torch.zeros(n, length, c, dtype=torch.float64)
    mask = torch.zeros(n, length, c, dtype=torch.bool)
    lengths = torch.tensor([s.shape[0] for s in series], dtype=torch.int64)
    for i, s in enumerate(series):
        values[i, : s.shape[0]] = torch.from_numpy(s)
        mask[i, : s.shape[0]] = torch.from_numpy(np.isfinite(s))
    return values.nan_to_num(0.0), mask, lengths


def drop_observations(mask: Tensor, lengths: Tensor, rate: float, seed: int = 0,
                      drop: str = "times") -> Tensor:
    """A copy of ``mask`` with a fraction ``rate`` of every series' observations removed at
    random: whole time points (``drop="times"``, Kidger et al. 2020) or single values
    (``drop="values"``). Seeded: the same ``seed`` removes the same points."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {rate}")
    if drop not in DROPS:
        raise ValueError(f"drop must be one of {DROPS}, got {drop!r}")
    gen = torch.Generator().manual_seed(seed)
    out = mask.clone()
    for i, n in enumerate(lengths.tolist()):
        if drop == "times":
            gone = torch.randperm(n, generator=gen)[: int(n * rate)]
            out[i, gone] = False
        else:
            c = mask.shape[-1]
            gone = torch.randperm(n * c, generator=gen)[: int(n * c * rate)]
            flat = out[i, :n].reshape(-1)
            flat[gone] = False
            out[i, :n] = flat.reshape(n, c)
    return out


def load_uea(name: str = "BasicMotions", *, drop_rate: float = 0.0, seed: int = 0,  # noqa: PLR0913
             drop: str = "times", normalise: bool = True,
             dtype: torch.dtype = torch.float32) -> tuple[IrregularDataset, IrregularDataset]:
    """The official train and test splits of a UEA set bundled with sktime.

    Args:
        name: ``"BasicMotions"`` or ``"JapaneseVowels"``.
        drop_rate: fraction of each series' observations removed at random (0.3, 0.5, 0.7 in
            the papers), independently in train and test.
        seed: seed of the removal.
        drop: ``"times"`` (whole time points) or ``"values"`` (single values).
        normalise: standardise every channel with the mean and std of the observed training
            values (applied to both splits).
        dtype: dtype of ``values`` (times stay float64).

    Returns:
        ``(train, test)`` :class:`IrregularDataset`; both padded to the longest series of the two,
        times ``0, 1, ..., L - 1`` (sample index; BasicMotions is sampled at 10 Hz).
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    raw = {split: _raw(name, split) for split in SPLITS}
    classes = tuple(sorted({str(v) for split in SPLITS for v in raw[split][1]}, key=_class_key))
    length = max(s.shape[0] for split in SPLITS for s in raw[split][0])
    out = []
    for k, split in enumerate(SPLITS):
        series, y = raw[split]
        values, mask, lengths = _pad(series, length)
        mask = drop_observations(mask, lengths, drop_rate, seed + 7919 * k, drop) if drop_rate else mask
        labels = torch.tensor([classes.index(str(v)) for v in y], dtype=torch.int64)
        out.append(IrregularDataset(torch.arange(length, dtype=torch.float64), values, mask,
                                    lengths, labels, classes))
    train, test = out
    if normalise:
        train, test = _standardise(train, test)
    return (replace(train, values=train.values.to(dtype)), replace(test, values=test.values.to(dtype)))


def _class_key(name: str) -> tuple[int, float | str]:
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)


def _standardise(train: IrregularDataset, test: IrregularDataset) -> tuple[IrregularDataset, IrregularDataset]:
    m = train.mask.to(train.values.dtype)
    count = m.sum((0, 1)).clamp(min=1)
    mean = (train.values * m).sum((0, 1)) / count
    std = (((train.values - mean) * m) ** 2).sum((0, 1)).div(count).sqrt().clamp(min=1e-8)
    return tuple(replace(d, values=torch.where(d.mask, (d.values - mean) / std, 0.0))  # type: ignore[return-value]
                 for d in (train, test))


__all__ = ["DATASETS", "IrregularDataset", "drop_observations", "load_uea"]

"""Surrogate checkpoints: which equation and resolution a surrogate was trained on, how to rebuild
it, its weights and the state to resume training.

A checkpoint directory is written with the crash-safe layout of :mod:`timestepper.train.store`
(a ``step-NNNNNNNN`` folder published by replacing ``config.json``, each file's size and SHA-256
recorded and checked on reading). ``config.json`` holds

* ``equation``: the class name and parameters of the equation (as ``pde generate`` records them
  in its data file), the spatial ``shape`` of the fields and the data's frame step ``dt_frame``;
* ``surrogate``: a name of :data:`SURROGATES`, its keyword arguments and the spatial dimension,
  enough to rebuild the untrained module with :func:`build_surrogate`;
* ``model_dt`` and ``frames_per_step`` (saved frames per model step) and the ``training``
  settings.

The folder holds ``model.safetensors`` and ``train_state.pt`` (optimiser, generator, iteration,
losses: what :func:`timestepper.pde.train_surrogate` resumes from; read with
:func:`load_train_state`). Writing and reading are those of the diffusion checkpoints
(:mod:`timestepper.train.checkpoint`); only the config differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..train.checkpoint import CONFIG, WEIGHTS, load_tensors, load_weights, save_checkpoint
from ..train.checkpoint import load_train_state as load_train_state
from ..train.store import CheckpointError, read_json
from .models import FNO, SineNet, UNet
from .refiner import PDERefiner
from .surrogate import OneStepSurrogate

FORMAT = "timestepper-pde-surrogate"
VERSION = 1


def _unet(dim: int, hidden: int = 32, channel_mults: tuple[int, ...] = (1, 2, 2),
          residual: bool = False) -> nn.Module:
    return OneStepSurrogate(UNet(1, 1, hidden=hidden, channel_mults=tuple(channel_mults), dim=dim),
                            residual=residual)


def _fno(dim: int, width: int = 32, modes: int = 16, layers: int = 4, residual: bool = False) -> nn.Module:
    return OneStepSurrogate(FNO(1, 1, width=width, modes=modes, layers=layers, dim=dim), residual=residual)


def _refiner(dim: int, hidden: int = 32, channel_mults: tuple[int, ...] = (1, 2, 2), num_steps: int = 3,
             min_noise_std: float = 4e-7) -> nn.Module:
    net = UNet(2, 1, hidden=hidden, channel_mults=tuple(channel_mults), dim=dim, conditioned=True)
    return PDERefiner(net, num_steps=num_steps, min_noise_std=min_noise_std)


def _sinenet(dim: int, hidden: int = 16, waves: int = 4, levels: int = 3, residual: bool = False) -> nn.Module:
    return OneStepSurrogate(SineNet(1, 1, hidden=hidden, waves=waves, levels=levels, dim=dim), residual=residual)


SURROGATES: dict[str, Callable[..., nn.Module]] = {
    "unet": _unet,  # one-step MSE U-Net (Gupta & Brandstetter 2022)
    "fno": _fno,  # one-step MSE Fourier Neural Operator (Li et al. 2021)
    "refiner": _refiner,  # PDE-Refiner around a conditioned U-Net (Lippe et al. 2023)
    "sinenet": _sinenet,  # one-step MSE SineNet, sequential multi-wave U-Net (Zhang et al. 2024)
}
"""Surrogates by name: ``builder(dim, **kwargs)`` returns the untrained module. New architectures
register here (with keyword arguments that JSON can hold) to be trained by ``pde train``."""


def build_surrogate(name: str, dim: int, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The untrained surrogate ``name`` for fields of ``dim`` spatial dimensions."""
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose from {', '.join(sorted(SURROGATES))}")
    return SURROGATES[name](dim, **(kwargs or {}))


@dataclass(frozen=True)
class DataRecord:
    """What a data file says about its trajectories: the equation, its parameters, the spatial
    shape of the fields and the time between saved frames."""

    equation: str
    params: dict[str, Any]
    shape: tuple[int, ...]
    dt_frame: float
    source: str

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], shape: tuple[int, ...], source: str) -> DataRecord:
        """The record of a file read by :func:`~timestepper.pde.read_hdf5` (its attributes and
        the spatial shape of ``u``)."""
        try:
            params = json.loads(attrs["equation_params"])
            return cls(str(attrs["equation"]), params, tuple(shape), float(attrs["dt_frame"]), source)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{source} does not record its equation ({type(e).__name__}: {e}); write data files "
                f"with `timestepper pde generate` or timestepper.pde.write_hdf5"
            ) from e

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str) -> DataRecord:
        eq = config["equation"]
        return cls(eq["name"], dict(eq["params"]), tuple(eq["shape"]), float(eq["dt_frame"]), source)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.equation, "params": self.params, "shape": list(self.shape),
                "dt_frame": self.dt_frame}

    def describe(self) -> str:
        res = "x".join(str(s) for s in self.shape)
        return f"{self.equation} at resolution {res}"

    def check_same_equation(self, other: DataRecord) -> None:
        """Raise naming both sources when ``other`` is another equation, another resolution or
        other equation parameters (the frame step may differ: the model step is checked to be a
        multiple of it)."""
        if (self.equation, self.shape) != (other.equation, other.shape):
            raise ValueError(
                f"{other.source} holds {other.describe()}, but {self.source} is {self.describe()}: "
                f"a surrogate runs on one equation and grid"
            )
        diffs = [f"{k}={self.params.get(k)!r} vs {other.params.get(k)!r}"
                 for k in sorted(set(self.params) | set(other.params))
                 if self.params.get(k) != other.params.get(k)]
        if diffs:
            raise ValueError(
                f"{other.source} and {self.source} hold {self.equation} with other parameters "
                f"({'; '.join(diffs)})"
            )


def save_surrogate(directory: str | os.PathLike, surrogate: nn.Module, config: dict[str, Any],
                   train_state: dict[str, Any] | None = None) -> Path:
    """Write ``surrogate``'s weights, ``config`` (see the module docstring) and the resume state of
    :func:`~timestepper.pde.train_surrogate` atomically to ``directory``; returns the new
    ``step-*`` folder (named after the iterations trained)."""
    state = None if train_state is None else {**train_state, "step": int(train_state["iteration"])}
    return save_checkpoint(directory, {"format": FORMAT, "version": VERSION, **config}, surrogate,
                           train_state=state)


def read_surrogate_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a surrogate checkpoint, checked for format and version.

    Raises:
        FileNotFoundError: ``directory`` holds no ``config.json``.
        CheckpointError: it is corrupt or not a surrogate checkpoint of a known version.
    """
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG} in {directory}: not a surrogate checkpoint")
    cfg = read_json(path)
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a PDE surrogate checkpoint (format={cfg.get('format')!r})")
    if not isinstance(cfg.get("version"), int) or cfg["version"] > VERSION:
        raise CheckpointError(f"{path} has version {cfg.get('version')!r}; this library reads up to {VERSION}")
    return cfg


def load_surrogate(directory: str | os.PathLike, map_location: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """``(surrogate, config)`` of a checkpoint; the surrogate is in eval mode on ``map_location``.

    Raises:
        FileNotFoundError: ``directory`` holds no ``config.json``.
        CheckpointError: a file is corrupt, truncated, missing or does not fit the surrogate.
    """
    cfg = read_surrogate_config(directory)
    spec = cfg["surrogate"]
    surrogate = build_surrogate(spec["name"], int(spec["dim"]), spec.get("kwargs"))
    tensors = load_tensors(directory, cfg, WEIGHTS, device=str(map_location))
    load_weights(surrogate, tensors, f"{directory} ({WEIGHTS})")
    return surrogate.to(map_location).eval(), cfg


__all__ = [
    "SURROGATES",
    "DataRecord",
    "build_surrogate",
    "load_surrogate",
    "load_train_state",
    "read_surrogate_config",
    "save_surrogate",
]

"""Checkpoints: safetensors weights plus a JSON config, loadable without the training code.

A checkpoint directory holds

* ``config.json``: network name and hyper-parameters, schedule name and parameters, prediction
  type, the time-input map of :class:`~timestepper.train.model.DenoisingModel`, data shape,
  number of classes and fingerprint, the objective and training settings, and (entry
  ``checkpoint``) the folder holding the files below with the size and SHA-256 of each;
* a folder ``step-NNNNNNNN`` (the step of the save) with

  * ``model.safetensors``: the weights to sample with (the EMA weights when EMA was used);
  * ``raw.safetensors`` and ``train_state.pt`` (optimiser, EMA counters, random state, step):
    only needed to resume training;
  * a copy of ``config.json`` without the ``checkpoint`` entry (the folder loads on its own).

A save is atomic (:mod:`timestepper.train.store`): a process killed during a save leaves the
previous checkpoint intact, and a file that does not match its recorded checksum is refused.
Version-1 checkpoints (the files beside ``config.json``, no checksums) are still read.
:func:`load_model` / :func:`load_denoiser` read ``config.json`` and ``model.safetensors`` only.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import (
    SCHEDULES,
    EDMSchedule,
    NoiseSchedule,
    RectifiedFlowSchedule,
    VESchedule,
    VPCosineSchedule,
    VPDiscreteSchedule,
    VPLinearSchedule,
)
from .model import DenoisingModel
from .networks import build_network
from .store import CheckpointError, checkpoint_file, read_json, save_folder

FORMAT = "timestepper-checkpoint"
VERSION = 2
CONFIG, WEIGHTS, RAW, TRAIN_STATE = (
    "config.json",
    "model.safetensors",
    "raw.safetensors",
    "train_state.pt",
)

_SCHEDULE_FIELDS = {
    VPLinearSchedule: ("beta_min", "beta_max", "t_min", "t_max"),
    VPCosineSchedule: ("s", "t_min", "t_max"),
    VESchedule: ("sigma_min", "sigma_max", "t_min", "t_max"),
    EDMSchedule: ("sigma_min", "sigma_max"),
    RectifiedFlowSchedule: ("t_min", "t_max"),
}


def schedule_to_config(schedule: NoiseSchedule) -> dict[str, Any]:
    """``{"name": ..., "kwargs": {...}}`` rebuilding ``schedule`` exactly (float64 reprs)."""
    names = {cls: name for name, cls in SCHEDULES.items()}
    cls = type(schedule)
    if cls not in names:
        raise ValueError(
            f"cannot serialise schedule of type {cls.__name__}; supported: "
            f"{', '.join(c.__name__ for c in names)}"
        )
    if cls is VPDiscreteSchedule:
        kwargs = {"alphas_cumprod": schedule.alphas_cumprod.tolist()}
    else:
        kwargs = {f: getattr(schedule, f) for f in _SCHEDULE_FIELDS[cls]}
    return {"name": names[cls], "kwargs": kwargs}


def schedule_from_config(cfg: dict[str, Any]) -> NoiseSchedule:
    """The schedule described by ``cfg`` (the inverse of :func:`schedule_to_config`)."""
    name = cfg["name"]
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    kwargs = dict(cfg.get("kwargs", {}))
    if name == "vp-discrete":
        return VPDiscreteSchedule(torch.tensor(kwargs["alphas_cumprod"], dtype=torch.float64))
    return SCHEDULES[name](**kwargs)


def model_config(model: DenoisingModel, prediction: str, **extra: Any) -> dict[str, Any]:
    """The config dict of a :class:`DenoisingModel` built by :func:`make_model`."""
    network = getattr(model, "network_spec", None)
    if network is None:
        raise ValueError("the model has no network_spec; build it with make_model(...)")
    cfg = {
        "format": FORMAT,
        "version": VERSION,
        "network": {"name": network["name"], "kwargs": dict(network.get("kwargs", {}))},
        "schedule": schedule_to_config(model.schedule),
        "prediction": prediction,
        "model": {
            "time_transform": model.time_transform,
            "time_scale": model.time_scale,
            "sigma_data": model.sigma_data,
        },
    }
    cfg.update(extra)
    return cfg


def save_checkpoint(
    directory: str | os.PathLike,
    config: dict[str, Any],
    weights: nn.Module,
    raw: nn.Module | None = None,
    train_state: dict | None = None,
) -> Path:
    """Write a checkpoint atomically: ``model.safetensors`` (and the resume files when given) in a
    new ``step-*`` folder, published by replacing ``config.json``; returns that folder.

    The step of the folder's name is ``train_state["step"]`` (else ``config["training"]["step"]``).
    A crash at any moment leaves either the previous checkpoint or the new one, never a mix.
    """
    from safetensors.torch import save

    files = {WEIGHTS: save(_cpu_tensors(weights))}
    if raw is not None:
        files[RAW] = save(_cpu_tensors(raw))
    if train_state is not None:
        buffer = io.BytesIO()
        torch.save(train_state, buffer)
        files[TRAIN_STATE] = buffer.getvalue()
    config = {k: v for k, v in config.items() if k != "checkpoint"}
    return save_folder(Path(directory), _folder_label(config, train_state), files, config)


def _cpu_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def _folder_label(config: dict[str, Any], train_state: dict | None) -> str:
    step = (train_state or {}).get("step", config.get("training", {}).get("step"))
    return f"step-{int(step):08d}" if step is not None else "weights"


def has_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a checkpoint (a ``config.json``)."""
    return (Path(directory) / CONFIG).is_file()


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint directory, checked for format and version.

    Raises:
        FileNotFoundError: there is no ``config.json``.
        CheckpointError: it is corrupt, truncated, of another format or of a newer version.
    """
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG} in {directory}: not a timestepper checkpoint")
    cfg = read_json(path)
    if cfg.get("format") == "timestepper-quantized":
        raise CheckpointError(f"{path} holds a quantized model; load it with timestepper.quantize.load_quantized")
    if cfg.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a timestepper checkpoint (format={cfg.get('format')!r})"
        )
    version = cfg.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path} has version {version!r}, newer than this library's {VERSION}"
        )
    return cfg


def load_tensors(
    directory: str | os.PathLike, cfg: dict[str, Any], name: str, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors of safetensors file ``name`` of a checkpoint, verified against its checksum."""
    from safetensors.torch import load_file

    path = checkpoint_file(Path(directory), cfg, name)
    try:
        return load_file(str(path), device=device)
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e


def load_train_state(directory: str | os.PathLike, cfg: dict[str, Any]) -> dict[str, Any]:
    """The resume state (``train_state.pt``) of a checkpoint, verified against its checksum."""
    path = checkpoint_file(Path(directory), cfg, TRAIN_STATE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt zip or pickle: several exception types
        raise CheckpointError(f"{path} is not a readable training state: {e}") from e
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} does not hold a training state (no 'step' entry)")
    return state


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(tensors)``, a mismatch reported as :class:`CheckpointError`."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"the weights of {what} do not fit the network its config.json describes: {first}"
        ) from e


def build_model(cfg: dict[str, Any]) -> DenoisingModel:
    """An untrained :class:`DenoisingModel` as described by a config."""
    return make_model(
        cfg["network"]["name"],
        cfg["network"].get("kwargs", {}),
        schedule_from_config(cfg["schedule"]),
        **cfg.get("model", {}),
    )


def make_model(
    network: str, network_kwargs: dict[str, Any], schedule: NoiseSchedule, **model_options: Any
) -> DenoisingModel:
    """Build network ``network`` (``mlp``, ``unet``) wrapped in a :class:`DenoisingModel`; the
    model remembers its spec (``model.network_spec``) so checkpoints can describe it."""
    net = build_network(network, **network_kwargs)
    model = DenoisingModel(net, schedule, **model_options)
    model.network_spec = {"name": network, "kwargs": dict(network_kwargs)}
    return model


def load_model(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu", weights: str = WEIGHTS
) -> tuple[DenoisingModel, dict[str, Any]]:
    """``(model, config)`` from a checkpoint directory; the model is in eval mode.

    Raises:
        FileNotFoundError: ``directory`` holds no ``config.json``.
        CheckpointError: a file is corrupt, truncated, missing, or does not match its checksum
            (the message names the file).
    """
    cfg = read_config(directory)
    try:
        model = build_model(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{Path(directory) / CONFIG} does not describe a model ({type(e).__name__}: {e})"
        ) from e
    tensors = load_tensors(directory, cfg, weights, device=str(map_location))
    load_weights(model, tensors, f"{directory} ({weights})")
    return model.to(map_location).eval(), cfg


def load_denoiser(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu", **model_kwargs: Any
) -> Denoiser:
    """A :class:`Denoiser` ready for :func:`timestepper.sample` from a checkpoint directory.

    ``model_kwargs`` (e.g. ``labels=``) are passed to every model call.
    """
    model, cfg = load_model(directory, map_location)
    return Denoiser(model, model.schedule, cfg["prediction"], model_kwargs=model_kwargs)

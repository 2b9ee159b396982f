"""Trajectory data sets: generation with a spectral solver, and HDF5 files in PDEArena's layout.

A file has one group per split (``train``, ``test``) holding ``u`` (``(trajectories, times,
*space)``, float32), ``t`` (the saved times after burn-in, float64) and ``x`` (grid coordinates),
and the generation parameters as attributes of the file (equation, its parameters, ``dt``,
``save_every``, ``t_burn_in``, ``seed``, ``solver``). Generation is deterministic per seed: sample
``i`` of a split starts from its own generator (:func:`~timestepper.pde.initial.sample_generator`).
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from .equation import SpectralEquation
from .initial import random_vorticity, sample_generator, sum_of_sines

SPLITS = {"train": 0, "test": 1, "valid": 2}


@dataclass(frozen=True)
class GenerationConfig:
    """How trajectories are made.

    Attributes:
        dt: solver step.
        save_every: solver steps between saved frames.
        t_burn_in: time simulated and discarded before the first saved frame.
        duration: time covered by the saved frames (a multiple of ``dt * save_every``).
        solver: registry name of the solver.
        seed: base seed; sample ``i`` of split ``s`` uses ``(seed, s, i)``.
        batch_size: trajectories integrated together.
        dtype: ``"float64"`` (default) or ``"float32"`` for the integration; files store float32.
    """

    dt: float
    save_every: int
    duration: float
    t_burn_in: float = 0.0
    solver: str = "etdrk4"
    seed: int = 0
    batch_size: int = 32
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if not (isinstance(self.save_every, int) and self.save_every >= 1):
            raise ValueError(f"save_every must be a positive integer, got {self.save_every!r}")
        if self.t_burn_in < 0:
            raise ValueError(f"t_burn_in must be >= 0, got {self.t_burn_in!r}")
        frame = self.dt * self.save_every
        if (
            self.duration <= 0
            or abs(round(self.duration / frame) * frame - self.duration) > 1e-9 * self.duration
        ):
            raise ValueError(
                f"duration={self.duration!r} must be a positive multiple of dt*save_every={frame!r}"
            )
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")

    @property
    def frames(self) -> int:
        return round(self.duration / (self.dt * self.save_every)) + 1


def initial_conditions(eq: SpectralEquation, indices: range, seed: int, stream: int) -> Tensor:
    """Random initial fields (float64) for the given sample indices."""
    out = []
    for i in indices:
        g = sample_generator(seed, stream, i)
        if eq.space_dims == 1:
            out.append(sum_of_sines(eq.x, eq.length, g))
        else:
            out.append(random_vorticity(eq.n, g))
    return torch.stack(out)


def _simulate_batch(
    eq: SpectralEquation, cfg: GenerationConfig, indices: range, stream: int
) -> Tensor:
    torch.set_num_threads(1)
    u = initial_conditions(eq, indices, cfg.seed, stream).to(getattr(torch, cfg.dtype))
    if cfg.t_burn_in > 0:
        u = eq.simulate(u, t_end=cfg.t_burn_in, dt=cfg.dt, solver=cfg.solver)
    traj = eq.simulate(
        u, t_end=cfg.duration, dt=cfg.dt, solver=cfg.solver, save_every=cfg.save_every
    )
    return traj.to(torch.float32)


def generate(
    eq: SpectralEquation,
    n_samples: int,
    cfg: GenerationConfig,
    *,
    split: str = "train",
    workers: int = 0,
    progress: bool = False,
) -> Tensor:
    """``n_samples`` trajectories of ``eq``: a float32 tensor ``(n_samples, cfg.frames, *space)``.

    Args:
        workers: ``0`` integrates in this process; ``k > 0`` spreads batches over ``k`` processes
            (the result is the same, up to floating-point reassociation inside batched FFTs).
        progress: a tqdm bar over trajectories.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples!r}")
    stream = SPLITS[split]
    batches = [
        range(s, min(s + cfg.batch_size, n_samples)) for s in range(0, n_samples, cfg.batch_size)
    ]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_samples, desc=f"generate {split}", unit="traj")
    parts: list[Tensor] = []
    if workers > 0:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_simulate_batch, eq, cfg, b, stream) for b in batches]
            for b, fut in zip(batches, futures):
                parts.append(fut.result())
                if bar is not None:
                    bar.update(len(b))
    else:
        for b in batches:
            parts.append(_simulate_batch(eq, cfg, b, stream))
            if bar is not None:
                bar.update(len(b))
    if bar is not None:
        bar.close()
    return torch.cat(parts)


def equation_attributes(eq: SpectralEquation) -> dict:
    params = {k: v for k, v in vars(eq).items() if isinstance(v, (int, float, bool, str))}
    return {"equation": type(eq).__name__, "equation_params": json.dumps(params, sort_keys=True)}


def write_hdf5(
    path: str | Path, eq: SpectralEquation, cfg: GenerationConfig, splits: dict[str, Tensor]
) -> None:
    """Write trajectories (``{"train": u, "test": u}``) and the parameters to an HDF5 file."""
    import h5py

    from .._version import __version__

    dt_frame = cfg.dt * cfg.save_every
    with h5py.File(path, "w") as f:
        attrs = {**equation_attributes(eq), **asdict(cfg)}
        attrs.pop("duration")  # per split, below
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["dt_frame"] = dt_frame
        f.attrs["generator"] = f"timestepper {__version__}"
        for name, u in splits.items():
            g = f.create_group(name)
            g.attrs["duration"] = dt_frame * (u.shape[1] - 1)
            g.create_dataset("u", data=u.numpy(), compression="gzip", compression_opts=4)
            g.create_dataset(
                "t",
                data=(
                    cfg.t_burn_in + dt_frame * torch.arange(u.shape[1], dtype=torch.float64)
                ).numpy(),
            )
            if eq.space_dims == 1:
                g.create_dataset("x", data=eq.x.numpy())
            else:
                g.create_dataset("x", data=torch.stack(eq.xy).numpy())


def read_hdf5(path: str | Path, split: str = "train") -> tuple[Tensor, dict]:
    """Trajectories of one split (float32 tensor) and the file's attributes."""
    import h5py

    with h5py.File(path, "r") as f:
        if split not in f:
            raise KeyError(f"split {split!r} not in {path}; present: {sorted(f.keys())}")
        u = torch.from_numpy(f[split]["u"][...])
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        attrs["duration"] = float(f[split].attrs["duration"])
    return u, attrs


def frames_per_model_step(attrs: dict, model_dt: float) -> int:
    """How many saved frames make one model step of ``model_dt`` (must divide exactly)."""
    k = model_dt / attrs["dt_frame"]
    if round(k) < 1 or not math.isclose(k, round(k), rel_tol=1e-9):
        raise ValueError(
            f"model_dt={model_dt!r} must be a multiple of the frame step {attrs['dt_frame']!r}"
        )
    return round(k)


__all__ = [
    "GenerationConfig",
    "frames_per_model_step",
    "generate",
    "initial_conditions",
    "read_hdf5",
    "write_hdf5",
]

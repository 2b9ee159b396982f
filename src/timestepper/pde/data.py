"""Trajectory data sets: generation with a spectral solver, and HDF5 files in PDEArena's layout.

A file has one group per split (``train``, ``test``) holding ``u`` (``(trajectories, times,
*space)``, float32 unless ``store_dtype`` says otherwise), ``t`` (the saved times after burn-in,
float64) and ``x`` (grid coordinates),
and the generation parameters as attributes of the file (equation, its parameters, ``dt``,
``save_every``, ``t_burn_in``, ``seed``, ``solver``). Generation is deterministic per seed: sample
``i`` of a split starts from its own generator (:func:`~timestepper.pde.initial.sample_generator`).

Files are written safely: the values are checked finite in the dtype they are stored in (a
float16 overflow is an error, not a file of ``inf``), and the file is written under a temporary
name in the destination folder and renamed over ``path`` only when complete, so an interrupted
run never leaves a partial file at ``path`` nor destroys the file already there.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.status import NonFiniteError
from .equation import SpectralEquation
from .initial import random_vorticity, sample_generator, sum_of_sines

SPLITS = {"train": 0, "test": 1, "valid": 2}
STORE_DTYPES = ("float16", "float32", "float64")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


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
        dtype: ``"float64"`` (default) or ``"float32"`` for the integration.
        store_dtype: dtype of the trajectories returned and stored: ``"float32"`` (default),
            ``"float16"`` or ``"float64"``; values that are not finite in it are an error.

    Integer fields accept any integer type (``numpy.int64`` too) and are stored as ``int``.
    """

    dt: float
    save_every: int
    duration: float
    t_burn_in: float = 0.0
    solver: str = "etdrk4"
    seed: int = 0
    batch_size: int = 32
    dtype: str = "float64"
    store_dtype: str = "float32"

    def __post_init__(self) -> None:
        for name, low in (("save_every", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))
        self._check_times()
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.store_dtype not in STORE_DTYPES:
            raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, got {self.store_dtype!r}")

    def _check_times(self) -> None:
        if not (_is_real(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be a finite number > 0, got {self.dt!r}")
        if not (_is_real(self.t_burn_in) and self.t_burn_in >= 0):
            raise ValueError(f"t_burn_in must be a finite number >= 0, got {self.t_burn_in!r}")
        if not _is_real(self.duration):
            raise ValueError(f"duration must be a finite number, got {self.duration!r}")
        frame = self.dt * self.save_every
        if (
            self.duration <= 0
            or abs(round(self.duration / frame) * frame - self.duration) > 1e-9 * self.duration
        ):
            raise ValueError(
                f"duration={self.duration!r} must be a positive multiple of dt*save_every={frame!r}"
            )

    @property
    def frames(self) -> int:
        return round(self.duration / (self.dt * self.save_every)) + 1


# Largest wavenumber of the random initial fields, by spatial dimension (:mod:`.initial`).
INITIAL_MAX_WAVENUMBER = {1: 3, 2: 4}


def check_resolution(eq: SpectralEquation) -> None:
    """Refuse a grid too coarse for the random initial fields: their wavenumbers must lie in the
    band the 2/3 de-aliasing rule keeps (``|k| <= n/3``; ``< n/2`` without de-aliasing)."""
    k_max, n = INITIAL_MAX_WAVENUMBER[eq.space_dims], eq.shape[-1]
    dealias = getattr(eq, "dealias", True)
    kept = n // 3 if dealias else (n - 1) // 2
    if k_max > kept:
        need = 3 * k_max if dealias else 2 * k_max + 1
        need += need % 2
        band = "the 2/3 de-aliasing band |k| <= n/3" if dealias else "the grid's modes |k| < n/2"
        raise ValueError(
            f"n={n} is too small: the random initial fields have wavenumbers up to {k_max}, "
            f"which must lie in {band} = {kept}; use n >= {need}"
        )


def initial_conditions(eq: SpectralEquation, indices: range, seed: int, stream: int) -> Tensor:
    """Random initial fields (float64) for the given sample indices."""
    out = []
    k_max = INITIAL_MAX_WAVENUMBER[eq.space_dims]
    for i in indices:
        g = sample_generator(seed, stream, i)
        if eq.space_dims == 1:
            out.append(sum_of_sines(eq.x, eq.length, g, max_wavenumber=k_max))
        else:
            out.append(random_vorticity(eq.n, g, max_wavenumber=k_max))
    return torch.stack(out)


def _simulate_batch(
    eq: SpectralEquation, cfg: GenerationConfig, indices: range, stream: int
) -> Tensor:
    torch.set_num_threads(1)
    names = {v: k for k, v in SPLITS.items()}
    what = f"trajectories {indices.start}..{indices.stop - 1} of split {names[stream]!r}"
    u = initial_conditions(eq, indices, cfg.seed, stream).to(getattr(torch, cfg.dtype))
    phase = "the burn-in"
    try:
        if cfg.t_burn_in > 0:
            u = eq.simulate(u, t_end=cfg.t_burn_in, dt=cfg.dt, solver=cfg.solver)
        phase = "the saved part"
        traj = eq.simulate(
            u, t_end=cfg.duration, dt=cfg.dt, solver=cfg.solver, save_every=cfg.save_every
        )
    except NonFiniteError as exc:  # name the trajectories; the message names the step and dt
        raise NonFiniteError(f"{what} blew up in {phase}: {exc}") from exc
    return to_store_dtype(traj, cfg.store_dtype, what)


def to_store_dtype(u: Tensor, store_dtype: str, what: str) -> Tensor:
    """``u`` converted to ``store_dtype``, checked finite in that dtype.

    Raises:
        NonFiniteError: naming ``what``, the dtype and the largest magnitude when a value is NaN
            or infinite after the conversion (e.g. above float16's 65504).
    """
    stored = u.to(getattr(torch, store_dtype))
    if not bool(torch.isfinite(stored).all()):
        finite_before = bool(torch.isfinite(u).all())
        biggest = float(u.detach().abs().double().nan_to_num(math.inf).max())
        why = (
            f"the largest |u| = {biggest:.4g} exceeds {store_dtype}'s maximum "
            f"{torch.finfo(stored.dtype).max:.6g}; store them in a wider dtype"
            if finite_before
            else "the simulation produced NaN or infinite values (a smaller dt?)"
        )
        raise NonFiniteError(f"{what} are not finite in {store_dtype}: {why}")
    return stored


def generate(
    eq: SpectralEquation,
    n_samples: int,
    cfg: GenerationConfig,
    *,
    split: str = "train",
    workers: int = 0,
    progress: bool = False,
) -> Tensor:
    """``n_samples`` trajectories of ``eq``: a tensor ``(n_samples, cfg.frames, *space)`` of
    ``cfg.store_dtype`` (float32 by default), checked finite in that dtype.

    Args:
        workers: ``0`` integrates in this process; ``k > 0`` spreads batches over ``k`` processes
            (the result is the same, up to floating-point reassociation inside batched FFTs).
        progress: a tqdm bar over trajectories.
    """
    n_samples, workers = _check_generate_options(split, n_samples, workers)
    check_resolution(eq)
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


def _check_generate_options(split: str, n_samples: int, workers: int) -> tuple[int, int]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if not _is_int(n_samples) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if not _is_int(workers) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    return int(n_samples), int(workers)


def equation_attributes(eq: SpectralEquation) -> dict:
    params = {k: v for k, v in vars(eq).items() if isinstance(v, (int, float, bool, str))}
    return {"equation": type(eq).__name__, "equation_params": json.dumps(params, sort_keys=True)}


def recipe_from_attrs(attrs: dict[str, Any]) -> tuple[SpectralEquation, GenerationConfig]:
    """The equation and generation settings a data file's attributes (:func:`read_hdf5`) record:
    what ``generate`` needs to make more trajectories like the file's (online training).

    Raises:
        ValueError: the file names an equation this library does not define, or its parameters
            do not build it.
    """
    import inspect

    from . import equations1d, navier_stokes

    name = str(attrs.get("equation"))
    cls = getattr(equations1d, name, None) or getattr(navier_stokes, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SpectralEquation)):
        raise ValueError(f"the data file's equation {name!r} is not one of timestepper.pde's equations")
    params = json.loads(attrs["equation_params"])
    accepted = inspect.signature(cls).parameters
    try:
        eq = cls(**{k: v for k, v in params.items() if k in accepted})
    except (TypeError, ValueError) as e:
        raise ValueError(f"the data file's parameters {params} do not build {name}: {e}") from e
    fields = GenerationConfig.__dataclass_fields__
    return eq, GenerationConfig(**{k: attrs[k] for k in fields if k in attrs})


def write_hdf5(
    path: str | Path, eq: SpectralEquation, cfg: GenerationConfig, splits: dict[str, Tensor]
) -> None:
    """Write trajectories (``{"train": u, "test": u}``) and the parameters to an HDF5 file.

    The trajectories are stored in ``cfg.store_dtype`` and must be finite in it
    (:class:`~timestepper.NonFiniteError` otherwise, before anything is written). The file is
    written under a temporary name in the folder of ``path`` and renamed to ``path`` when complete:
    an interrupted write leaves the previous ``path`` (if any) as it was.
    """
    import h5py

    path = Path(path)
    stored = {
        name: to_store_dtype(u, cfg.store_dtype, f"the {name!r} trajectories")
        for name, u in splits.items()
    }
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
    try:
        with h5py.File(tmp, "w") as f:
            _write_groups(f, eq, cfg, stored)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_groups(f: Any, eq: SpectralEquation, cfg: GenerationConfig, splits: dict[str, Tensor]) -> None:
    """The attributes and one group per split of an open HDF5 file."""
    from .._version import __version__

    dt_frame = cfg.dt * cfg.save_every
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
        times = cfg.t_burn_in + dt_frame * torch.arange(u.shape[1], dtype=torch.float64)
        g.create_dataset("t", data=times.numpy())
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
    "check_resolution",
    "frames_per_model_step",
    "generate",
    "initial_conditions",
    "read_hdf5",
    "to_store_dtype",
    "recipe_from_attrs",
    "write_hdf5",
]

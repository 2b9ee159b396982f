"""Sharded data sets: generation split into shards across Ray workers or processes, one HDF5 file
per shard plus a JSON index, and a reader that presents the shards as one data set.

Layout of a folder::

    index.json                     # the shards of each split, their counts and the attributes
    train-000000-000016.h5         # trajectories 0..15 of split "train" (PDEArena layout, data.py)
    train-000016-000032.h5
    ...

A shard's file name is its trajectory range, and trajectory ``i`` is seeded by ``(seed, split, i)``
(:func:`~timestepper.pde.data.initial_conditions`), so a shard's content depends only on the
equation, the generation settings and its range: a shard regenerated after a deletion is
bit-identical to the one a full run makes. Each shard is written under a temporary name and renamed
when complete (:func:`~timestepper.pde.data.write_hdf5`), so a file with a shard's name is always
complete; rerunning :func:`generate_shards` skips the shards whose files exist (after checking they
were made with the same equation and settings) and makes only the missing ones. The index is
written last, the same way.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..train.store import read_json, write_json_atomically
from .data import SPLITS, GenerationConfig, _simulate_batch, equation_attributes, write_hdf5
from .equation import SpectralEquation

INDEX = "index.json"
FORMAT = "timestepper-shards/1"
# attributes that must agree across the shards of one data set
IDENTITY = ("equation", "equation_params", "dt_frame", "store_dtype", "space")


@dataclass(frozen=True)
class Shard:
    """One shard: trajectories ``start .. stop-1`` of ``split`` in ``file`` (relative name)."""

    split: str
    start: int
    stop: int

    @property
    def file(self) -> str:
        return f"{self.split}-{self.start:06d}-{self.stop:06d}.h5"

    @property
    def count(self) -> int:
        return self.stop - self.start


def plan_shards(n_samples: int, shards: int, split: str = "train") -> list[Shard]:
    """``shards`` contiguous ranges covering ``0 .. n_samples-1``, sizes differing by at most one."""
    for name, value in (("n_samples", n_samples), ("shards", shards)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if shards > n_samples:
        raise ValueError(f"shards={shards} must not exceed n_samples={n_samples}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    edges = [round(k * n_samples / shards) for k in range(shards + 1)]
    return [Shard(split, a, b) for a, b in zip(edges[:-1], edges[1:])]


def make_shard(eq: SpectralEquation, cfg: GenerationConfig, shard: Shard, folder: str) -> int:
    """Integrate one shard (in batches of ``cfg.batch_size``) and write its file atomically."""
    parts = [
        _simulate_batch(eq, cfg, range(s, min(s + cfg.batch_size, shard.stop)), SPLITS[shard.split])
        for s in range(shard.start, shard.stop, cfg.batch_size)
    ]
    write_hdf5(Path(folder) / shard.file, eq, cfg, {shard.split: torch.cat(parts)})
    return shard.count


def _expected_attributes(eq: SpectralEquation, cfg: GenerationConfig) -> dict:
    attrs: dict[str, Any] = {**equation_attributes(eq), **asdict(cfg)}
    attrs["dt_frame"] = cfg.dt * cfg.save_every
    return attrs


def _file_attributes(path: Path, split: str) -> dict:
    """A shard file's attributes, its split's duration and the spatial shape of its fields."""
    import h5py

    with h5py.File(path, "r") as f:
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        if split not in f:
            raise ValueError(f"shard {path} has no split {split!r}; present: {sorted(f.keys())}")
        attrs["duration"] = float(f[split].attrs["duration"])
        attrs["space"] = list(f[split]["u"].shape[2:])
        attrs["trajectories"] = int(f[split]["u"].shape[0])
    return attrs


def _check_finished(path: Path, shard: Shard, expected: dict) -> None:
    """A shard file found on disk must have been made with the settings of this run."""
    found = _file_attributes(path, shard.split)
    differ = {
        k: (found.get(k), v)
        for k, v in expected.items()
        if k != "duration" and found.get(k) != v and not _close(found.get(k), v)
    }
    if not _close(found["duration"], expected["duration"]) or found["trajectories"] != shard.count:
        differ["duration/trajectories"] = (
            (found["duration"], found["trajectories"]),
            (expected["duration"], shard.count),
        )
    if differ:
        detail = "; ".join(f"{k}: file {a!r} vs now {b!r}" for k, (a, b) in differ.items())
        raise ValueError(
            f"shard {path} exists but was made with other settings ({detail}); delete it or "
            "generate into another folder"
        )


def _close(a: object, b: object) -> bool:
    return isinstance(a, float) and isinstance(b, (int, float)) and abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1.0)


def generate_shards(  # noqa: PLR0913 - mirrors generate(): equation, count, config, folder, then options
    eq: SpectralEquation,
    n_samples: int,
    cfg: GenerationConfig,
    folder: str | Path,
    *,
    shards: int,
    split: str = "train",
    workers: int = 0,
    ray_address: str | None = None,
    use_ray: bool = False,
    progress: bool = False,
) -> dict:
    """Generate ``n_samples`` trajectories of ``split`` into ``shards`` HDF5 files in ``folder``
    and record them in ``folder/index.json``; returns the index.

    Shards already in ``folder`` (same name, same settings) are skipped: an interrupted run resumes.

    Args:
        workers: processes for the shards when Ray is not used (``0``: in this process); with Ray,
            a local instance gets ``max(workers, 1) + 1`` CPUs.
        ray_address: run the shards as Ray tasks on this cluster (its workers must see ``folder``).
        use_ray: run the shards as Ray tasks on a local Ray (or the one already initialised).
        progress: a tqdm bar over shards.

    Raises:
        ValueError: a shard file in ``folder`` was made with other settings, or the index already
            lists this split with other settings.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plan = plan_shards(n_samples, shards, split)
    expected = _expected_attributes(eq, cfg)
    todo = []
    for shard in plan:
        path = folder / shard.file
        if path.exists():
            _check_finished(path, shard, expected)
        else:
            todo.append(shard)
    if todo:
        runner = _run_on_ray if (use_ray or ray_address is not None) else _run_in_processes
        runner(eq, cfg, todo, folder, workers, ray_address, progress)
    return _write_index(folder, eq, cfg, plan)


def _bar(total: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="shards", unit="shard")


def _run_in_processes(  # noqa: PLR0913 - the same signature as _run_on_ray
    eq: SpectralEquation,
    cfg: GenerationConfig,
    todo: list[Shard],
    folder: Path,
    workers: int,
    _address: Any,
    progress: bool,
) -> None:
    bar = _bar(len(todo), progress)
    if workers > 0:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(make_shard, eq, cfg, s, str(folder)) for s in todo]
            for fut in futures:
                fut.result()
                if bar is not None:
                    bar.update(1)
    else:
        for s in todo:
            make_shard(eq, cfg, s, str(folder))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()


def _run_on_ray(  # noqa: PLR0913 - one runner signature for Ray and processes
    eq: SpectralEquation,
    cfg: GenerationConfig,
    todo: list[Shard],
    folder: Path,
    workers: int,
    address: str | None,
    progress: bool,
) -> None:
    from .online import connect_ray, require_ray

    ray = require_ray()
    owns = connect_ray(max(workers, 1), address)
    try:
        task = ray.remote(num_cpus=1)(make_shard)
        eq_ref = ray.put(eq)
        pending = [task.remote(eq_ref, cfg, s, str(folder.resolve())) for s in todo]
        bar = _bar(len(todo), progress)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        if owns:
            ray.shutdown()


def _write_index(folder: Path, eq: SpectralEquation, cfg: GenerationConfig, plan: list[Shard]) -> dict:
    """Add (or replace) this split's entry in ``index.json``, written atomically."""
    path = folder / INDEX
    index = read_json(path) if path.exists() else {"format": FORMAT, "splits": {}}
    attrs = _file_attributes(folder / plan[0].file, plan[0].split)
    identity = {k: attrs[k] for k in IDENTITY}
    for other, entry in index["splits"].items():
        mismatch = {k: (entry["attributes"].get(k), v) for k, v in identity.items() if entry["attributes"].get(k) != v}
        if other != plan[0].split and mismatch:
            raise ValueError(
                f"{path} lists split {other!r} of another data set ({mismatch}); generate into another folder"
            )
    index["splits"][plan[0].split] = {
        "trajectories": plan[-1].stop,
        "attributes": {**identity, "duration": attrs["duration"], "config": asdict(cfg)},
        "shards": [{"file": s.file, "start": s.start, "stop": s.stop, "count": s.count} for s in plan],
    }
    write_json_atomically(path, index)
    return index


class ShardedTrajectories:
    """The shards of one split of a sharded folder, presented as one data set.

    ``len(ds)`` trajectories; ``ds[i]`` reads trajectory ``i`` (``(T, *space)``) from its shard;
    :meth:`load` returns all of them as one tensor ``(N, T, *space)`` with the attributes, like
    :func:`~timestepper.pde.data.read_hdf5` (so ``train_surrogate(model, *ds.load()[:1], cfg)``).

    Every shard listed in the index is opened and checked on construction: a missing shard, or
    shards that differ in equation, its parameters, frame step, storage dtype or resolution, are
    refused with the shard named.

    Args:
        path: the folder or its ``index.json``.
        split: which split.
    """

    def __init__(self, path: str | Path, split: str = "train") -> None:
        path = Path(path)
        self.folder = path.parent if path.name == INDEX else path
        index_path = self.folder / INDEX
        if not index_path.exists():
            raise FileNotFoundError(
                f"{index_path} not found: not a sharded data set (timestepper pde generate --shards)"
            )
        index = read_json(index_path)
        if index.get("format") != FORMAT:
            raise ValueError(f"{index_path} has format {index.get('format')!r}, expected {FORMAT!r}")
        if split not in index["splits"]:
            raise KeyError(f"split {split!r} not in {index_path}; present: {sorted(index['splits'])}")
        self.split = split
        self.shards = [Shard(split, s["start"], s["stop"]) for s in index["splits"][split]["shards"]]
        self.attrs = self._check_shards()
        self._starts = [s.start for s in self.shards]

    def _check_shards(self) -> dict:
        first: dict | None = None
        for shard in self.shards:
            path = self.folder / shard.file
            if not path.exists():
                raise FileNotFoundError(f"shard {path} listed in the index is missing; rerun the generation to make it")
            attrs = _file_attributes(path, self.split)
            if first is None:
                first, first_file = attrs, shard.file
                continue
            mismatch = {k: (first[k], attrs[k]) for k in IDENTITY if first[k] != attrs[k]}
            if mismatch:
                detail = "; ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in mismatch.items())
                raise ValueError(
                    f"shards {first_file} and {shard.file} in {self.folder} are of different data sets "
                    f"(different equation or resolution: {detail}); they cannot be read as one"
                )
        assert first is not None
        return {k: v for k, v in first.items() if k != "trajectories"}

    def __len__(self) -> int:
        return self.shards[-1].stop

    def __getitem__(self, i: int) -> Tensor:
        import bisect

        import h5py

        if not -len(self) <= i < len(self):
            raise IndexError(f"trajectory {i} out of range for {len(self)}")
        i %= len(self)
        shard = self.shards[bisect.bisect_right(self._starts, i) - 1]
        with h5py.File(self.folder / shard.file, "r") as f:
            return torch.from_numpy(f[self.split]["u"][i - shard.start])

    def load(self) -> tuple[Tensor, dict]:
        """All trajectories ``(N, T, *space)`` in index order, and the attributes."""
        from .data import read_hdf5

        parts = [read_hdf5(self.folder / s.file, self.split)[0] for s in self.shards]
        return torch.cat(parts), dict(self.attrs)


def read_shards(path: str | Path, split: str = "train") -> tuple[Tensor, dict]:
    """All trajectories of a split of a sharded folder and its attributes (like ``read_hdf5``)."""
    return ShardedTrajectories(path, split).load()


__all__ = [
    "Shard",
    "ShardedTrajectories",
    "generate_shards",
    "make_shard",
    "plan_shards",
    "read_shards",
]

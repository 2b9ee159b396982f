"""``timestepper pde ...``: data generation from the command line.

Example (the Kuramoto–Sivashinsky setting of Lippe et al. 2023)::

    timestepper pde generate ks --n-train 512 --n-test 128 --out ks.h5

Everything is checked before the first trajectory is integrated (option values, h5py, the output
folder); the file is written under a temporary name and renamed to ``--out`` when complete, so
an interrupted run leaves no partial file and does not touch an existing ``--out``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..cli_args import (
    UsageError,
    nonnegative_float,
    nonnegative_int,
    output_file,
    output_path,
    positive_float,
    positive_int,
    require_modules,
    solver_name,
)
from .cli_train import add_train_commands
from .data import STORE_DTYPES, GenerationConfig, generate, write_hdf5
from .equations1d import Burgers, KdV, KuramotoSivashinsky
from .navier_stokes import NavierStokes2D

# Defaults per equation: grid, physics and time stepping.
PRESETS: dict[str, dict] = {
    "ks": dict(length=64.0, n=256, dt=0.2, save_every=1, duration_train=28.0, duration_test=128.0),
    "burgers": dict(
        length=2 * math.pi,
        n=256,
        nu=0.01,
        dt=0.01,
        save_every=10,
        duration_train=2.0,
        duration_test=4.0,
    ),
    "kdv": dict(length=32.0, n=256, dt=0.001, save_every=50, duration_train=2.0, duration_test=4.0),
    "ns2d": dict(
        length=2 * math.pi,
        n=64,
        nu=1e-3,
        dt=0.01,
        save_every=20,
        duration_train=4.0,
        duration_test=8.0,
    ),
}


def build_equation(name: str, length: float, n: int, nu: float | None):
    """The equation object for a preset name."""
    if name == "ks":
        return KuramotoSivashinsky(length, n)
    if name == "burgers":
        return Burgers(length, n, nu=nu)
    if name == "kdv":
        return KdV(length, n)
    if name == "ns2d":
        return NavierStokes2D(
            length, n, nu=nu, drag=0.1, forcing_amplitude=1.0, forcing_wavenumber=4
        )
    raise ValueError(f"equation must be one of {sorted(PRESETS)}, got {name!r}")


def _generate(args: argparse.Namespace) -> int:
    require_modules("timestepper pde generate", {"h5py": "h5py"})
    preset = PRESETS[args.equation]
    pick = {
        k: (getattr(args, k) if getattr(args, k) is not None else preset.get(k))
        for k in ("length", "n", "nu", "dt", "save_every", "duration_train", "duration_test")
    }
    eq = build_equation(args.equation, pick["length"], pick["n"], pick["nu"])
    plan = {
        split: (count, _config(args, pick, duration, f"--duration-{split}"))
        for split, count, duration in (
            ("train", args.n_train, pick["duration_train"]),
            ("test", args.n_test, pick["duration_test"]),
        )
        if count > 0
    }
    if not plan:
        raise UsageError("nothing to generate: --n-train and --n-test are both 0")
    if args.ray_address and not args.shards:
        raise UsageError("--ray-address runs shards on a Ray cluster: give --shards N too")
    if args.shards:
        return _generate_shards(args, eq, plan)
    _check_output(args.out)
    splits = {
        split: generate(
            eq, count, cfg, split=split, workers=args.workers, progress=not args.no_progress
        )
        for split, (count, cfg) in plan.items()
    }
    last_cfg = list(plan.values())[-1][1]  # the file's attributes: dt, save_every, burn-in, seed
    write_hdf5(args.out, eq, last_cfg, splits)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in splits.items())
    print(f"wrote {args.out}: {eq!r}; {shapes}; dt={pick['dt']} save_every={pick['save_every']}")
    return 0


def _check_output(out: Path) -> None:
    try:
        output_file(str(out))
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"--out: {e}") from e


def _generate_shards(args: argparse.Namespace, eq, plan: dict) -> int:
    """``--shards N``: one HDF5 file per shard plus index.json in the folder ``--out`` (resumable)."""
    from .shards import generate_shards

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out must be a folder with --shards: {str(args.out)!r} is a file")
    if args.ray_address:
        require_modules("timestepper pde generate --ray-address", {"ray": "'timestepper[ray]'"})
        from .online import check_reachable

        try:
            check_reachable(args.ray_address, 10.0)
        except (ConnectionError, ValueError) as e:
            raise UsageError(f"--ray-address: {e}") from e
    for split, (count, cfg) in plan.items():
        shards = min(args.shards, count)
        generate_shards(
            eq, count, cfg, args.out, shards=shards, split=split, workers=args.workers,
            ray_address=args.ray_address, progress=not args.no_progress,
        )
        print(f"{args.out}: {split} {count} trajectories in {shards} shards; {eq!r}")
    return 0


def _config(
    args: argparse.Namespace, pick: dict, duration: float, option: str
) -> GenerationConfig:
    """The generation settings of one split; a bad combination names the options."""
    try:
        return GenerationConfig(
            dt=pick["dt"],
            save_every=pick["save_every"],
            duration=duration,
            t_burn_in=args.t_burn_in,
            solver=args.solver,
            seed=args.seed,
            batch_size=args.batch_size,
            store_dtype=args.store_dtype,
        )
    except ValueError as e:
        raise UsageError(f"{option}/--dt/--save-every: {e}") from e


def add_commands(subparsers) -> None:
    """Register ``pde generate``, ``pde train`` and ``pde eval``."""
    pde = subparsers.add_parser("pde", help="spectral PDE solvers and data sets")
    sub = pde.add_subparsers(dest="pde_command", required=True)
    gen = sub.add_parser("generate", help="generate a trajectory data set (HDF5)")
    gen.add_argument("equation", choices=sorted(PRESETS))
    gen.add_argument("--n-train", type=nonnegative_int, default=64)
    gen.add_argument("--n-test", type=nonnegative_int, default=16)
    gen.add_argument(
        "--out",
        type=output_path,
        required=True,
        help="output .h5 file (replaced when complete); with --shards a folder (resumable)",
    )
    gen.add_argument(
        "--shards", type=positive_int, default=None, help="split each split into N shard files"
    )
    gen.add_argument("--ray-address", default=None, help="generate the shards on this Ray cluster")
    gen.add_argument(
        "--length", type=positive_float, default=None, help="domain length (preset default)"
    )
    gen.add_argument("--n", type=positive_int, default=None, help="grid points per dimension")
    gen.add_argument("--nu", type=positive_float, default=None, help="viscosity (burgers, ns2d)")
    gen.add_argument("--dt", type=positive_float, default=None, help="solver step")
    gen.add_argument(
        "--save-every", type=positive_int, default=None, help="solver steps per saved frame"
    )
    gen.add_argument("--duration-train", type=positive_float, default=None)
    gen.add_argument("--duration-test", type=positive_float, default=None)
    gen.add_argument(
        "--t-burn-in", type=nonnegative_float, default=0.0, help="discarded initial time"
    )
    gen.add_argument("--solver", type=solver_name, default="etdrk4")
    gen.add_argument("--seed", type=nonnegative_int, default=0)
    gen.add_argument("--batch-size", type=positive_int, default=32)
    gen.add_argument(
        "--workers", type=nonnegative_int, default=0, help="processes (0: in-process)"
    )
    gen.add_argument(
        "--store-dtype",
        choices=STORE_DTYPES,
        default="float32",
        help="dtype of the stored trajectories (checked finite in it)",
    )
    gen.add_argument("--no-progress", action="store_true")
    gen.set_defaults(func=_generate)
    add_train_commands(sub)  # pde train, pde eval


__all__ = ["PRESETS", "add_commands", "build_equation"]

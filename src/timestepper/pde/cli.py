"""``timestepper pde ...``: data generation from the command line.

Example (the Kuramoto–Sivashinsky setting of Lippe et al. 2023)::

    timestepper pde generate ks --n-train 512 --n-test 128 --out ks.h5
"""

from __future__ import annotations

import argparse
import math

from .data import GenerationConfig, generate, write_hdf5
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
    preset = PRESETS[args.equation]
    pick = {
        k: (getattr(args, k) if getattr(args, k) is not None else preset.get(k))
        for k in ("length", "n", "nu", "dt", "save_every", "duration_train", "duration_test")
    }
    eq = build_equation(args.equation, pick["length"], pick["n"], pick["nu"])
    splits = {}
    for split, count, duration in (
        ("train", args.n_train, pick["duration_train"]),
        ("test", args.n_test, pick["duration_test"]),
    ):
        if count <= 0:
            continue
        cfg = GenerationConfig(
            dt=pick["dt"],
            save_every=pick["save_every"],
            duration=duration,
            t_burn_in=args.t_burn_in,
            solver=args.solver,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        splits[split] = generate(
            eq, count, cfg, split=split, workers=args.workers, progress=not args.no_progress
        )
    if not splits:
        raise SystemExit("nothing to generate: --n-train and --n-test are both 0")
    write_hdf5(args.out, eq, cfg, splits)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in splits.items())
    print(f"wrote {args.out}: {eq!r}; {shapes}; dt={pick['dt']} save_every={pick['save_every']}")
    return 0


def add_commands(subparsers) -> None:
    """Register ``pde generate``."""
    pde = subparsers.add_parser("pde", help="spectral PDE solvers and data sets")
    sub = pde.add_subparsers(dest="pde_command", required=True)
    gen = sub.add_parser("generate", help="generate a trajectory data set (HDF5)")
    gen.add_argument("equation", choices=sorted(PRESETS))
    gen.add_argument("--n-train", type=int, default=64)
    gen.add_argument("--n-test", type=int, default=16)
    gen.add_argument("--out", required=True, help="output .h5 file")
    gen.add_argument("--length", type=float, default=None, help="domain length (preset default)")
    gen.add_argument("--n", type=int, default=None, help="grid points per dimension")
    gen.add_argument("--nu", type=float, default=None, help="viscosity (burgers, ns2d)")
    gen.add_argument("--dt", type=float, default=None, help="solver step")
    gen.add_argument("--save-every", type=int, default=None, help="solver steps per saved frame")
    gen.add_argument("--duration-train", type=float, default=None)
    gen.add_argument("--duration-test", type=float, default=None)
    gen.add_argument("--t-burn-in", type=float, default=0.0, help="discarded initial time")
    gen.add_argument("--solver", default="etdrk4")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=32)
    gen.add_argument("--workers", type=int, default=0, help="processes (0: in-process)")
    gen.add_argument("--no-progress", action="store_true")
    gen.set_defaults(func=_generate)


__all__ = ["PRESETS", "add_commands", "build_equation"]

"""``timestepper bench ...`` subcommands."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..cli_args import (
    grid_name,
    int_at_least,
    nonnegative_int,
    positive_ints,
    require_modules,
    solver_names,
)


def _out_folder(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; give a folder")
    return path


def add_commands(sub) -> None:
    bench = sub.add_parser("bench", help="run a benchmark")
    bsub = bench.add_subparsers(dest="bench", required=True)
    g = bsub.add_parser("gmm", help="every sampler vs the exact solution on Gaussian mixtures")
    g.add_argument("--dims", type=positive_ints, default=[2, 64], help="mixture dimensions (default 2,64)")
    g.add_argument("--nfe", type=positive_ints, default=[5, 6, 8, 10, 15, 20], help="NFE budgets")
    g.add_argument("--solvers", type=solver_names, default=None,
                   help="comma-separated registry names (default: all deterministic)")
    g.add_argument("--grid", type=grid_name, default="logsnr", help="time grid (default logsnr)")
    g.add_argument("--final", default="zero", choices=["zero", "sigma_min"])
    g.add_argument("--samples", type=int_at_least(2), default=2000, help="samples per mixture (default 2000)")
    g.add_argument("--seed", type=nonnegative_int, default=0)
    g.add_argument("--stochastic", action="store_true", help="add the stochastic samplers (sliced W2 only)")
    g.add_argument("--tuned", action="store_true",
                   help="add searched schedules (timestepper tune's default method vs the best fixed grid)")
    g.add_argument("--out", type=_out_folder, default=Path("bench-out"), help="output folder for JSON and PNG")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=run_gmm)


def run_gmm(args) -> int:
    import torch

    from . import runner

    require_modules("timestepper bench gmm", {"matplotlib": "matplotlib"})
    torch.set_num_threads(max(1, torch.get_num_threads()))
    solvers = list(args.solvers) if args.solvers else None
    t0 = time.perf_counter()
    result = runner.run_gmm_benchmark(dims=args.dims, nfes=args.nfe, solvers=solvers, grid=args.grid,
                                      final=args.final, n_samples=args.samples, seed=args.seed,
                                      progress=not args.no_progress)
    if args.stochastic:
        result["stochastic"] = runner.stochastic_results(args.dims, args.nfe, n_samples=min(args.samples, 1000),
                                                         seed=args.seed)
    for d in args.dims:
        print(f"\nGaussian mixture d={d}. Cells: mean L2 error vs the exact PF-ODE solution / sliced W2 to exact "
              f"samples / wall time (NFE used in parentheses when below the budget). Exact-vs-exact SW2 = "
              f"{result['baseline_sw2'][d]:.3f}")
        print(runner.format_table(result, d))
    if args.stochastic:
        for d, rows in result["stochastic"].items():
            print(f"\nStochastic samplers, d={d}: sliced W2 to exact samples (ratio to exact-vs-exact)")
            print(runner.format_stochastic(rows))
    if args.tuned:
        result["tuned"] = _tuned(args)
    runner.save(result, args.out)
    png = runner.plot(result, args.out / "gmm.png")
    print(f"\nwrote {args.out / 'gmm.json'} and {png} in {time.perf_counter() - t0:.1f} s")
    return 0


def _tuned(args) -> list[dict]:
    """Held-out error of the best fixed grid and of the default search at each NFE (>= 2)."""
    from ..tuning.bench import bench_mixtures, format_tuned, mixture_problem, tuned_rows
    from ..tuning.tune import DEFAULT_METHOD

    mixtures = bench_mixtures(tuple(args.dims), full_dim=None, seed=args.seed)
    problems = [mixture_problem(name, gmm, n_samples=min(args.samples, 256), seed=args.seed)
                for name, gmm in mixtures.items()]
    nfes = tuple(n for n in args.nfe if n >= 2)
    rows = tuned_rows(problems, nfes, ("fixed", DEFAULT_METHOD), progress=not args.no_progress)
    for p in problems:
        print(f"\nSearched schedules, {p.name}: mean L2 error on held-out noise (model calls of the search)")
        print(format_tuned(rows, p.name))
    return rows

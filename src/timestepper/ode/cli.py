"""``timestepper detest``: run the DETEST problem set with a solver and print NFE and errors."""

from __future__ import annotations

import argparse
import time

from ..cli_args import UsageError, positive_float, solver_name


def add_commands(sub) -> None:
    p = sub.add_parser("detest", help="solve the 25 DETEST problems and print NFE and error/tol")
    p.add_argument("--solver", type=solver_name, default="tsit5",
                   help="registry name (default: tsit5)")
    p.add_argument("--tol", type=positive_float, default=1e-6, help="rtol = atol (default: 1e-6)")
    p.add_argument("--controller", default="i", choices=["i", "pi", "pid"])
    p.add_argument("--problems", default=None, help="comma-separated names, e.g. A1,D5")
    p.add_argument("--error-control", default="local", choices=["local", "global"],
                   help="global: re-solve with tighter tolerances until the estimated end error "
                        "is within the tolerance (default: local)")
    p.set_defaults(func=run_detest)


def run_detest(args: argparse.Namespace) -> int:
    import torch

    from ..bench.detest import PROBLEMS, reference, scaled_error
    from .solve import solve

    torch.set_num_threads(1)
    names = [n for n in args.problems.split(",") if n] if args.problems else list(PROBLEMS)
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown or not names:
        raise UsageError(f"--problems: unknown problems {unknown}; available: {', '.join(PROBLEMS)}")
    print(f"{'problem':8} {'NFE':>7} {'accepted':>9} {'rejected':>9} {'err/tol':>9} {'s':>6}")
    total = 0
    for name in names:
        p = PROBLEMS[name]
        t0 = time.perf_counter()
        sol = solve(p.f, p.initial(), 0.0, p.t1, solver=args.solver, rtol=args.tol,
                    atol=args.tol, controller=args.controller, error_control=args.error_control)
        e = scaled_error(sol.x, reference(name), args.tol, args.tol)
        st = sol.stats
        total += st.nfe
        print(f"{name:8} {st.nfe:7d} {st.accepted:9d} {st.rejected:9d} {e:9.2f} "
              f"{time.perf_counter() - t0:6.2f}")
    print(f"{'total':8} {total:7d}")
    return 0

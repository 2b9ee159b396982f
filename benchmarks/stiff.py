"""Stiff benchmark: timestepper's implicit solvers against SciPy's Radau and BDF and torchdiffeq's
implicit solver, side by side on Robertson, Van der Pol (scaled form, mu = 1e3 and 1e6) and the
Allen–Cahn equation on 256 points.

For each solver: evaluations of the field (NFE), Jacobian evaluations, accepted/rejected steps,
wall time and the scaled error at the end time against SciPy's Radau at rtol = 1e-11 (float64).
SciPy gets the analytic Jacobian (its ``njev``); ours are autograd Jacobians (one evaluation and
``m`` reverse passes each) or Jacobian-vector products (Krylov; each counted in the NFE).
torchdiffeq 0.2.5's only implicit method is ``implicit_adams`` (fixed steps, fixed-point
corrector); it is run with 2000 steps.

Writes ``benchmarks/results/stiff.md`` (and ``stiff.json``). Run:
``PYTHONPATH=src:. python benchmarks/stiff.py`` (about two minutes on one CPU core).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import timestepper as ts
from benchmarks.ode import Counter
from tests.ode.test_stiff_implicit import TOLS, problems, reference, scaled_error

torch.set_num_threads(1)
OUT = Path(__file__).parent / "results"
F64 = torch.float64
OURS = {
    "robertson": [("kvaerno5", "dense"), ("radau-iia5", "dense"), ("rosenbrock23", None)],
    "vdp-mu1e3": [("kvaerno5", "dense"), ("radau-iia5", "dense"), ("rosenbrock23", None)],
    "vdp-mu1e6": [("kvaerno5", "dense"), ("radau-iia5", "dense"), ("rosenbrock23", None)],
    "allen-cahn-256": [("kvaerno5", "dense"), ("kvaerno5", "krylov"), ("radau-iia5", "dense"),
                       ("rosenbrock23", None)],
}


def run_ours(name: str, problem: str, solver: str, jacobian: str | None) -> dict:
    f, _, _, y0, t1 = problems()[problem]
    rtol, atol = TOLS[problem]
    s = ts.solvers.get(solver) if jacobian is None else ts.solvers.get(solver, jacobian=jacobian)
    field = Counter(f)
    t = time.perf_counter()
    sol = ts.solve(field, torch.tensor(y0, dtype=F64), 0.0, t1, solver=s, rtol=rtol, atol=atol,
                   max_steps=20_000, on_failure="return")
    wall = time.perf_counter() - t
    assert sol.stats.nfe == field.n
    st = s.stats if jacobian is not None else {"jacobians": sol.stats.steps}  # rosenbrock23: one per step
    label = f"timestepper {solver}" + (f" ({jacobian})" if jacobian else "")
    return {"solver": label, "nfe": sol.stats.nfe, "jac": st["jacobians"], "jvps": st.get("jvps", 0),
            "accepted": sol.stats.accepted, "rejected": sol.stats.rejected, "wall": wall,
            "error": scaled_error(sol.x, reference(problem), rtol, atol), "ok": sol.succeeded}


def run_scipy(problem: str, method: str) -> dict:
    from scipy.integrate import solve_ivp

    _, f_np, jac, y0, t1 = problems()[problem]
    rtol, atol = TOLS[problem]
    t = time.perf_counter()
    sol = solve_ivp(f_np, (0.0, t1), y0, method=method, jac=jac, rtol=rtol, atol=atol)
    wall = time.perf_counter() - t
    return {"solver": f"scipy {method}", "nfe": int(sol.nfev), "jac": int(sol.njev), "jvps": 0,
            "accepted": len(sol.t) - 1, "rejected": None, "wall": wall,
            "error": scaled_error(torch.as_tensor(sol.y[:, -1]), reference(problem), rtol, atol),
            "ok": bool(sol.success)}


def run_torchdiffeq(problem: str, steps: int = 2000) -> dict | None:
    try:
        import torchdiffeq
    except ImportError:  # pragma: no cover - optional peer
        return None
    f, _, _, y0, t1 = problems()[problem]
    rtol, atol = TOLS[problem]
    field = Counter(f)
    t = time.perf_counter()
    try:
        with torch.no_grad():
            y = torchdiffeq.odeint(field, torch.tensor(y0, dtype=F64), torch.tensor([0.0, t1], dtype=F64),
                                   method="implicit_adams", options={"step_size": t1 / steps})[-1]
        err = scaled_error(y, reference(problem), rtol, atol)
    except Exception as exc:  # noqa: BLE001 - report the peer's failure in the table
        err = f"failed: {type(exc).__name__}"
    wall = time.perf_counter() - t
    return {"solver": f"torchdiffeq implicit_adams ({steps} steps)", "nfe": field.n, "jac": 0, "jvps": 0,
            "accepted": steps, "rejected": 0, "wall": wall, "error": err,
            "ok": isinstance(err, float) and math.isfinite(err)}


def fmt_err(e) -> str:
    if isinstance(e, str):
        return e
    return "nan" if not math.isfinite(e) else f"{e:.2g}"


def section(problem: str, rows: list[dict]) -> str:
    rtol, atol = TOLS[problem]
    head = "| solver | NFE | Jacobians | JVPs | accepted | rejected | wall (s) | error / tol |"
    lines = [f"### {problem} (rtol={rtol:g}, atol={atol:g})", "", head, "|---" * 8 + "|"]
    for r in rows:
        rej = "" if r["rejected"] is None else r["rejected"]
        lines.append(f"| {r['solver']} | {r['nfe']} | {r['jac']} | {r['jvps']} | {r['accepted']} | {rej} | "
                     f"{r['wall']:.2f} | {fmt_err(r['error'])} |")
    return "\n".join(lines)


def main() -> None:
    results: dict[str, list[dict]] = {}
    for problem, ours in OURS.items():
        reference(problem)  # not timed
        rows = [run_ours(problem, problem, s, j) for s, j in ours]
        rows += [run_scipy(problem, m) for m in ("Radau", "BDF")]
        td = run_torchdiffeq(problem)
        if td is not None:
            rows.append(td)
        results[problem] = rows
        print(section(problem, rows), "\n", flush=True)
    OUT.mkdir(exist_ok=True)
    text = ["# Stiff solvers: timestepper vs SciPy and torchdiffeq", "",
            "Generated by `benchmarks/stiff.py` (one CPU thread, float64). Error: the maximum over "
            "components of |y - ref| / (atol + rtol |ref|) at the end time, ref = SciPy Radau at "
            "rtol = 1e-11 with the analytic Jacobian. SciPy's NFE excludes its Jacobians (analytic); "
            "ours count one evaluation per autograd Jacobian and per Jacobian-vector product.", ""]
    text += [section(p, rows) + "\n" for p, rows in results.items()]
    (OUT / "stiff.md").write_text("\n".join(text))
    (OUT / "stiff.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"numpy {np.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()

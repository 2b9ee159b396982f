"""torch.compile vs eager: per-step time -> benchmarks/results/compiled.md (+ compiled.json); with
``--device cuda``: compiled_cuda.md (+ .json).

Side by side in one process, ``ts.integrate(term, solver, grid, x0, compile=True)`` (the solver's
step fused with the loop's finiteness probe, through ``torch.compile(..., dynamic=True,
fullgraph=True)``, default inductor backend; see docs/performance.md) against the same call with
``compile=False``:

(a) fixed-grid diffusion sampling with dpmpp-2m and unipc-bh2 (VP linear-beta schedule, uniform
    log-SNR grid), float32 states (1, 4, 64, 64) and (16, 4, 64, 64). The "model" returns a
    precomputed tensor, so its cost is nil and what is measured is the solver's step (conversion
    of the model output, history, linear combinations) and the loop around it;
(b) ETDRK4 on Kuramoto-Sivashinsky (length 64, N = 256, batch 64, h = 0.2), float64 and float32.

Per case: one warm-up run of each path (the compiled one pays the compilation, with a fresh
inductor cache so that it is a cold compile), then ``--repeats`` timed runs alternating eager and
compiled. Reported: per-step time (median run / steps) of each path, the time ratio
compiled / eager, the compile time (first compiled run minus a timed one), the number of graphs
dynamo compiled, and the max abs difference between the compiled and the eager final state.

Run:  PYTHONPATH=src python benchmarks/compiled.py [--threads 1] [--repeats 7] [--steps 20] [--quick]
      [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from _heap import keep_freed_memory  # benchmarks/_heap.py, beside this script
from torch._dynamo.utils import counters

import timestepper as ts
from timestepper.diffusion.term import DiffusionTerm

HERE = Path(__file__).resolve().parent
SHAPES = ((1, 4, 64, 64), (16, 4, 64, 64))
SAMPLERS = ("dpmpp-2m", "unipc-bh2")
KS_DTYPES = (torch.float64, torch.float32)
KS_LENGTH, KS_N, KS_BATCH, KS_DT = 64.0, 256, 64, 0.2
DEVICE = torch.device("cpu")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Case:
    """One row: ``run(compile)`` integrates and returns the final state; ``compared`` maps it to
    the quantity compared between the two paths (the physical field for a spectral state)."""

    problem: str
    solver: str
    state: str
    dtype: str
    run: Callable[[bool], torch.Tensor]
    compared: Callable[[torch.Tensor], torch.Tensor] = _identity


def diffusion_cases(steps: int) -> Iterator[Case]:
    """(a): the model returns a fixed tensor, so a step costs only the solver's own work."""
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    grid = ts.make_grid(sched, steps, "logsnr")
    for name in SAMPLERS:
        solver = ts.solvers.get(name)  # one instance per solver: the compiled step is guarded on it
        for shape in SHAPES:
            g = torch.Generator().manual_seed(0)
            noise = torch.randn(shape, generator=g).to(DEVICE)
            out = (torch.randn(shape, generator=g) * 0.1).to(DEVICE)
            den = ts.Denoiser(lambda x, t, out=out: out, sched, "epsilon")

            def run(compile, den=den, solver=solver, noise=noise):
                return ts.integrate(DiffusionTerm(den), solver, grid, noise, compile=compile).x

            yield Case("diffusion sampling", name, str(shape), "float32", run)


def ks_cases(steps: int) -> Iterator[Case]:
    """(b): ETDRK4 in Fourier space; the compared quantity is the physical field."""
    eq = ts.pde.KuramotoSivashinsky(length=KS_LENGTH, n=KS_N)
    u0 = ts.pde.data.initial_conditions(eq, range(KS_BATCH), seed=0, stream=0)
    grid = KS_DT * torch.arange(steps + 1, dtype=torch.float64)
    solver = ts.solvers.get("etdrk4")
    for dtype in KS_DTYPES:
        term, x0 = eq.term(dtype, DEVICE), eq.to_spectral(u0.to(device=DEVICE, dtype=dtype))

        def run(compile, term=term, x0=x0):
            return ts.integrate(term, solver, grid, x0, compile=compile).x

        yield Case("Kuramoto-Sivashinsky", "etdrk4", f"({KS_BATCH}, {KS_N})",
                   str(dtype).removeprefix("torch."), run, eq.to_physical)


@contextlib.contextmanager
def fresh_compile_cache() -> Iterator[None]:
    """A fresh on-disk inductor cache, so the first compiled run is a cold compile."""
    from torch._inductor import utils

    fresh = getattr(utils, "fresh_cache", None) or getattr(utils, "fresh_inductor_cache", None)
    with fresh() if fresh is not None else contextlib.nullcontext():
        yield


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], object]) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def measure(case: Case, steps: int, repeats: int) -> dict:
    """Warm-up of each path, then ``repeats`` alternating timed runs (see the module doc)."""
    torch._dynamo.reset()  # no graphs or recompile budget carried over from another case
    counters.clear()
    with fresh_compile_cache(), torch.no_grad():
        eager_x = case.run(False)
        _sync()
        t0 = time.perf_counter()
        compiled_x = case.run(True)
        _sync()
        first_s = time.perf_counter() - t0
        graphs = counters["stats"]["unique_graphs"]
        eager, compiled = [], []
        for _ in range(repeats):
            eager.append(_seconds(lambda: case.run(False)))
            compiled.append(_seconds(lambda: case.run(True)))
    e, c = statistics.median(eager), statistics.median(compiled)
    ref = case.compared(eager_x)
    diff = float((case.compared(compiled_x) - ref).abs().max())
    return dict(problem=case.problem, solver=case.solver, state=case.state, dtype=case.dtype,
                eager_us=1e6 * e / steps, compiled_us=1e6 * c / steps, ratio=c / e,
                compile_s=first_s - c, graphs=graphs,
                graphs_in_timed_runs=counters["stats"]["unique_graphs"] - graphs,
                max_abs_diff=diff, max_abs_state=float(ref.abs().max()))


def run_all(steps: int, repeats: int) -> list[dict]:
    rows = []
    for case in (*diffusion_cases(steps), *ks_cases(steps)):
        r = measure(case, steps, repeats)
        rows.append(r)
        print(f"{r['solver']:10s} {r['state']:18s} {r['dtype']:8s} eager {r['eager_us']:9.1f} us  "
              f"compiled {r['compiled_us']:9.1f} us  ratio {r['ratio']:.2f}  compile {r['compile_s']:.1f} s  "
              f"graphs {r['graphs']} (+{r['graphs_in_timed_runs']})  diff {r['max_abs_diff']:.1e}", flush=True)
    return rows


def render(rows: list[dict], cfg: dict) -> str:
    limit = cfg["recompile_limit"]
    where = cfg["device_name"]
    out = [f"## torch.compile vs eager: per-step time on {'CPU' if where == 'cpu' else 'GPU'}", "",
           f"Machine: {platform.machine()} {platform.system()}, {where}, torch {torch.__version__}, "
           f"{cfg['threads']} CPU thread(s). `ts.integrate(..., compile=True)` (the solver's step through "
           "`torch.compile`, `dynamic=True`, default inductor backend) against the same call eager, "
           "alternating in one process; "
           f"{cfg['steps']} steps per run, per-step time = median of {cfg['repeats']} timed runs / steps, after "
           "one warm-up run of each path; `check_finite` at its default (on) for both. Diffusion sampling: VP "
           "linear-beta schedule, uniform log-SNR grid, float32, and a model that returns a precomputed tensor "
           "(its cost is nil: what is measured is the solver's step and the loop around it, not a network). "
           f"Kuramoto-Sivashinsky: length {KS_LENGTH:g}, N = {KS_N}, batch {KS_BATCH}, h = {KS_DT}. Compile "
           "time: the first compiled run (cold: a fresh inductor cache per row) minus a timed run. Graphs: "
           "graphs dynamo compiled in the warm-up (+ any more in the timed runs). Max abs diff: compiled vs eager "
           "final state (the physical field for KS), and in parentheses the largest entry of the eager state."
           + (" Freed memory stays in the process heap for both paths (glibc mallopt)." if cfg.get("heap") else ""),
           "",
           "| problem | solver | state | dtype | eager (us/step) | compiled (us/step) | ratio compiled/eager "
           "| compile (s) | graphs | max abs diff |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['problem']} | {r['solver']} | {r['state']} | {r['dtype']} | {r['eager_us']:.1f} | "
                   f"{r['compiled_us']:.1f} | {r['ratio']:.2f} | {r['compile_s']:.1f} | {r['graphs']} "
                   f"(+{r['graphs_in_timed_runs']}) | {r['max_abs_diff']:.1e} ({r['max_abs_state']:.1e}) |")
    at_limit = sorted({r["solver"] for r in rows if r["graphs"] >= limit})
    if at_limit:
        out += ["", f"At dynamo's recompile limit ({limit} graphs): {', '.join(at_limit)}. The step was "
                "recompiled for values that change from step to step until the limit, after which dynamo runs the "
                "remaining steps eagerly behind its guard checks; those compiled times are not those of one "
                "reused graph."]
    out += ["", "The Kuramoto-Sivashinsky steps share one table row, so the steps after the first run in one "
            "compiled `while_loop` graph (`loop/grid_device.py`; on CPU its wrapper is C++); its state is complex "
            "(Fourier space): inductor generates no code for complex operators, so the FFTs and complex products "
            "are library calls from the graph, and the real-view arithmetic between them is fused. The rows of "
            "dpmpp-2m and UniPC are stacked as tensors (`Solver.stacked_rows`: the warm-up's missing weights "
            "as zeros), so their sampling is one `while_loop` too.", "",
            f"Reproduce: `{cfg['command']}`"]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per path (default 7, --quick 2)")
    ap.add_argument("--steps", type=int, default=20, help="steps per run")
    ap.add_argument("--quick", action="store_true", help="2 timed runs per path (a smoke run)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    repeats = args.repeats or (2 if args.quick else 7)
    torch.set_num_threads(args.threads)
    heap = keep_freed_memory()
    name = "compiled" if DEVICE.type == "cpu" else f"compiled_{DEVICE.type}"
    cfg = dict(threads=args.threads, repeats=repeats, steps=args.steps, heap=heap,
               recompile_limit=torch._dynamo.config.recompile_limit,
               device_name="cpu" if DEVICE.type == "cpu" else torch.cuda.get_device_name(DEVICE),
               command=f"PYTHONPATH=src python benchmarks/compiled.py --threads {args.threads} "
                       f"--repeats {repeats} --steps {args.steps}"
                       + ("" if DEVICE.type == "cpu" else f" --device {DEVICE.type}"))
    rows = run_all(args.steps, repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps({"config": cfg, "rows": rows}, indent=1))
    (args.out / f"{name}.md").write_text(render(rows, cfg))
    print(f"wrote {args.out / f'{name}.md'}")


if __name__ == "__main__":
    main()

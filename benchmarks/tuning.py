"""Searched schedules against the best fixed grids -> benchmarks/results/tuning.md (+ tuning.json).

Problems: exact Gaussian mixtures (8 components; d = 2 and d = 64 diagonal, d = 8 full covariance)
under the linear-beta discrete VP schedule (1000 steps) with the exact epsilon denoiser; the
reference of a noise is the mixture's float64 Dormand-Prince PF-ODE solution from it. Every
configuration is chosen on 256 training noises and reported on 256 held-out noises: mean L2
distance at sigma = 0 to the reference. Rows, at NFE 4, 5, 6, 8, 10:

* diffusers (run live): DPMSolverMultistep orders 2 and 3, UniPC bh1/bh2, DEIS, each with its
  default spacing, ``trailing``, ``use_karras_sigmas``, ``use_exponential_sigmas`` (and
  ``use_lu_lambdas`` where the class has it); the best on the training noise;
* k-diffusion (run live): sample_euler, sample_lms, sample_dpmpp_2m (and sample_heun /
  sample_dpm_2 where 2 n - 1 = NFE) on Karras, exponential and polyexponential sigmas, plus
  sample_dpm_fast; the best on the training noise;
* ours, best fixed grid: every spacing x every deterministic solver (``ts.tune(method="fixed")``);
* each tuned method (``ts.tune``), with the model calls and seconds the search spent;
* overfitting: the default method tuned on one d = 64 mixture and evaluated on another of the
  same family (seed 1), against the fixed grid and the tuning on that mixture itself.

Run:  python benchmarks/tuning.py  [--quick] [--out DIR] [--digits CHECKPOINT [--digits-full]] [--render]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from _tuning_digits import SMALL, digits_rows, digits_section  # benchmarks/_tuning_digits.py, beside this script

from timestepper.bench.metrics import trajectory_error
from timestepper.tuning import DEFAULT_METHOD
from timestepper.tuning.bench import MixtureProblem, bench_mixtures, mixture_problem, tuned_row
from timestepper.tuning.objective import run_schedule

HERE = Path(__file__).resolve().parent
NFES = (4, 5, 6, 8, 10)
METHODS = ("autodiffusion", "s3", "ays", "ems", "dc", "timeshift")
F64 = torch.float64
BETAS = dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)
DIFFUSERS = [("DPMSolverMultistepScheduler", {}), ("DPMSolverMultistepScheduler", {"solver_order": 3}),
             ("UniPCMultistepScheduler", {"solver_type": "bh1"}), ("UniPCMultistepScheduler", {"solver_type": "bh2"}),
             ("DEISMultistepScheduler", {})]
DIFFUSERS_GRIDS = [{}, {"timestep_spacing": "trailing"}, {"use_karras_sigmas": True},
                   {"use_exponential_sigmas": True}, {"use_lu_lambdas": True}]
K_SAMPLERS = {"sample_euler": 1, "sample_lms": 1, "sample_dpmpp_2m": 1, "sample_heun": 2, "sample_dpm_2": 2}
K_SIGMAS = ("karras", "exponential", "polyexponential")


# -- peers ---------------------------------------------------------------------------------------
def _diffusers_run(cls: str, options: dict, den, noise: torch.Tensor, steps: int) -> torch.Tensor:
    import diffusers

    sched = getattr(diffusers, cls)(**BETAS, **options)
    sched.set_timesteps(steps)
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        m = den.model_fn(sched.scale_model_input(x, t), t.reshape(1).expand(x.shape[0]).to(F64))
        x = sched.step(m, t, x).prev_sample
    return x


def _k_sampling():
    sys.path.insert(0, str(HERE.parent))
    from tests.conftest import _load_k_diffusion_sampling

    return _load_k_diffusion_sampling()


def _k_run(ks, sampler: str, sigmas_kind: str, problem: MixtureProblem, noise: torch.Tensor, nfe: int):
    sch = problem.denoiser.schedule
    s_min = float(sch.sigma(sch.t_min) / sch.alpha(sch.t_min))
    s_max = float(sch.sigma(sch.t_max) / sch.alpha(sch.t_max))

    def model(x, sigma):
        return problem.gmm.posterior_mean(x, sigma)

    if sampler == "sample_dpm_fast":
        return ks.sample_dpm_fast(model, noise * s_max, s_min, s_max, nfe, disable=True)
    per = K_SAMPLERS[sampler]
    if (nfe + 1) % per:
        return None
    n = (nfe + 1) // per if per == 2 else nfe
    if sigmas_kind == "karras":
        sigmas = ks.get_sigmas_karras(n, s_min, s_max, rho=7.0)
    elif sigmas_kind == "exponential":
        sigmas = ks.get_sigmas_exponential(n, s_min, s_max)
    else:
        sigmas = ks.get_sigmas_polyexponential(n, s_min, s_max, rho=2.0)
    sigmas = sigmas.to(F64)
    return getattr(ks, sampler)(model, noise * sigmas[0], sigmas, disable=True)


def _best_peer(configs, problem: MixtureProblem, run) -> dict:
    """The configuration with the smallest training error; its held-out error."""
    best = {"label": None, "train": math.inf, "held_out": math.inf}
    for label, cfg in configs:
        try:
            x = run(cfg, problem.noise)
        except (ValueError, TypeError, NotImplementedError, RuntimeError):
            continue  # an option the class does not take
        if x is None:
            continue
        e = trajectory_error(x, problem.reference(problem.noise))
        if math.isfinite(e) and e < best["train"]:
            best = {"label": label, "train": e, "cfg": cfg}
    if best["label"] is not None:
        best["held_out"] = trajectory_error(run(best.pop("cfg"), problem.held_out), problem.reference(problem.held_out))
    return best


def peer_rows(problem: MixtureProblem, nfe: int, ks) -> dict[str, dict]:
    den = problem.denoiser
    dcfg = [(f"{cls.replace('Scheduler', '')} {o} {g}", (cls, {**o, **g}))
            for cls, o in DIFFUSERS for g in DIFFUSERS_GRIDS]
    out = {"diffusers": _best_peer(dcfg, problem, lambda c, n: _diffusers_run(c[0], c[1], den, n, nfe))}
    if ks is not None:
        kcfg = [(f"{s} {k}", (s, k)) for s in K_SAMPLERS for k in K_SIGMAS]
        kcfg.append(("sample_dpm_fast", ("sample_dpm_fast", "")))
        out["k-diffusion"] = _best_peer(kcfg, problem, lambda c, n: _k_run(ks, c[0], c[1], problem, n, nfe))
    return out


# -- ours ------------------------------------------------------------------------------------------
def our_rows(problem: MixtureProblem, nfe: int, methods: tuple[str, ...], budgets: dict) -> dict[str, dict]:
    out = {}
    for m in ("fixed", *methods):
        row, _ = tuned_row(problem, nfe, m, **budgets.get(m, {}))
        out[m] = {"label": row.config, "train": row.train, "held_out": row.held_out, "calls": row.model_calls,
                  "seconds": row.seconds}
    row, _ = tuned_row(problem, nfe, "ays", criterion="klub", **budgets.get("ays", {}))
    out["ays (KLUB)"] = {"label": row.config, "train": row.train, "held_out": row.held_out,
                         "calls": row.model_calls, "seconds": row.seconds}
    return out


def overfitting(nfe: int, n_samples: int, budgets: dict) -> dict:
    """Tuned on mixture seed 0, evaluated on mixture seed 1 (both d = 64), held-out noise."""
    src = mixture_problem("d=64 seed 0", bench_mixtures((64,), None, seed=0)["d=64"], n_samples)
    dst = mixture_problem("d=64 seed 1", bench_mixtures((64,), None, seed=1)["d=64"], n_samples)
    _, sched = tuned_row(src, nfe, DEFAULT_METHOD, **budgets.get(DEFAULT_METHOD, {}))
    transfer = trajectory_error(run_schedule(dst.denoiser, dst.held_out, sched), dst.reference(dst.held_out))
    own, _ = tuned_row(dst, nfe, DEFAULT_METHOD, **budgets.get(DEFAULT_METHOD, {}))
    fixed, _ = tuned_row(dst, nfe, "fixed")
    return {"nfe": nfe, "method": DEFAULT_METHOD, "transfer": transfer, "own": own.held_out, "fixed": fixed.held_out}


# -- report ----------------------------------------------------------------------------------------
def render(result: dict) -> str:
    cfg = result["config"]
    machine = f"{platform.machine()} {platform.system()}, torch {torch.__version__}, {torch.get_num_threads()} thread"
    intro = [f"Machine: {machine}.", "Linear-beta VP schedule (1000 steps), exact epsilon denoiser of each mixture;",
             f"{cfg['n_samples']} training and {cfg['n_samples']} held-out noises; run time {result['seconds']:.0f} s.",
             "Cells: mean L2 distance at sigma = 0 to the exact PF-ODE solution of the same held-out noise.",
             "Peers and our fixed grids: the configuration best on the training noise. Tuned rows:",
             "`ts.tune(den, nfe, method, noise=train)`; in brackets the search's model calls and seconds",
             "(the baseline search included). Reproduce: `python benchmarks/tuning.py`."]
    out = ["## Searched schedules (issue 15)", "", " ".join(intro), ""]
    for name, per_nfe in result["problems"].items():
        out += [f"### {name}", "", _table(per_nfe, cfg["nfes"]), "", _labels(per_nfe), ""]
    out += ["### Overfitting: tuned on one d = 64 mixture, evaluated on another (seed 1)", "",
            "| NFE | method | transferred | tuned on the target | best fixed on the target |", "|---|---|---|---|---|"]
    for r in result["overfitting"]:
        out.append(f"| {r['nfe']} | {r['method']} | {r['transfer']:.3e} | {r['own']:.3e} | {r['fixed']:.3e} |")
    out += ["", "### Goal check", "", *result["goal"], ""]
    out += digits_section(result.get("digits"))
    return "\n".join(out)


def _table(per_nfe: dict, nfes: list[int]) -> str:
    rows = list(next(iter(per_nfe.values())).keys())
    head = "| configuration | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    lines = [head, "|" + "---|" * (len(nfes) + 1)]
    for r in rows:
        cells = []
        for n in nfes:
            c = per_nfe[str(n)][r]
            cost = f" ({c['calls']} calls, {c['seconds']:.1f} s)" if "calls" in c else ""
            cells.append(f"{c['held_out']:.3e}{cost}" if math.isfinite(c["held_out"]) else "-")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _labels(per_nfe: dict) -> str:
    parts = []
    for n, rows in per_nfe.items():
        parts.append(f"NFE {n}: " + "; ".join(f"{k} = {v['label']}" for k, v in rows.items()
                                               if k in ("diffusers", "k-diffusion", "fixed")))
    return "Best configurations: " + " | ".join(parts)


def goal_lines(result: dict) -> list[str]:
    """Every tuned method below our best fixed grid; the best tuned <= 0.5x the best peer at NFE 5, 10."""
    out = []
    for name, per_nfe in result["problems"].items():
        for n, rows in per_nfe.items():
            peer = min(rows[k]["held_out"] for k in ("diffusers", "k-diffusion") if k in rows)
            tuned = {k: v["held_out"] for k, v in rows.items() if k in METHODS}
            best = min(tuned.values())
            beaten = [k for k, v in tuned.items() if v < rows["fixed"]["held_out"]]
            out.append(f"- {name}, NFE {n}: best tuned / best peer = {best / peer:.2f}; tuned methods below our "
                       f"best fixed grid: {', '.join(beaten) or 'none'} (of {', '.join(tuned)})")
    out += ["", "Geometric mean over the mixture rows of held-out error / our best fixed grid's: " + ", ".join(
        f"{m} {r:.2f}" for m, r in mean_ratios(result).items())]
    digits = digits_ratios(result)
    if digits:
        out += ["", "Geometric mean over the digits NFEs of Fréchet distance / the best fixed grid's: " + ", ".join(
            f"{m} {r:.2f}" for m, r in digits.items()),
            ""]
    guarded = digits_ratios(result, "frechet_guarded")
    if guarded:
        out += ["The same with the distribution guard on the digits model: " + ", ".join(
            f"{m} {r:.2f}" for m, r in guarded.items()) + "; worst ratio over every row, mixtures unguarded: "
            + ", ".join(f"{m} {r:.2f}" for m, r in worst_ratios(result, "frechet_guarded").items()), ""]
    guarded_data = digits_ratios(result, "frechet_guarded_data")
    if guarded_data:
        out += ["The same with the guard against data (the digits training split): " + ", ".join(
            f"{m} {r:.2f}" for m, r in guarded_data.items()) + "; worst ratio over every row, mixtures unguarded: "
            + ", ".join(f"{m} {r:.2f}" for m, r in worst_ratios(result, "frechet_guarded_data").items()), ""]
    worst = worst_ratios(result)
    out += ["Worst ratio over every row (mixture error and digits Fréchet distance, each / our best fixed grid's): "
            + ", ".join(f"{m} {r:.2f}" for m, r in worst.items()),
            "", f"The default method of `ts.tune` is `{DEFAULT_METHOD}`; the smallest worst case here: "
            f"{', '.join(m for m, r in worst.items() if r == min(worst.values()))}."]
    return out


def worst_ratios(result: dict, key: str = "frechet") -> dict[str, float]:
    """Per method, its largest ratio to our best fixed grid over the mixture rows and the digits NFEs
    (the digits rows' ``key``: ``"frechet"`` searched, ``"frechet_guarded"`` with the guard,
    ``"frechet_guarded_data"`` with the guard against data)."""
    worst = {m: 0.0 for m in METHODS}
    for per_nfe in result["problems"].values():
        for rows in per_nfe.values():
            for m in METHODS:
                worst[m] = max(worst[m], rows[m]["held_out"] / rows["fixed"]["held_out"])
    digits = result.get("digits") or {}
    for name, row in digits.get("rows", {}).items():
        m, n = name.split(" NFE ")
        fixed = digits["rows"].get(f"fixed NFE {n}")
        if m in worst and fixed and key in row:
            worst[m] = max(worst[m], row[key] / fixed["frechet"])
    return {m: round(v, 3) for m, v in worst.items()}


def digits_ratios(result: dict, key: str = "frechet") -> dict[str, float]:
    """Per method, the geometric mean over the digits NFEs of its Fréchet distance (``key``, as in
    :func:`worst_ratios`) / the fixed grid's."""
    digits = result.get("digits")
    if not digits:
        return {}
    rows, logs = digits["rows"], {}
    for m in digits["config"]["methods"]:
        vals = [math.log(rows[f"{m} NFE {n}"][key] / rows[f"fixed NFE {n}"]["frechet"])
                for n in digits["config"]["nfes"]
                if key in rows.get(f"{m} NFE {n}", {}) and f"fixed NFE {n}" in rows]
        if vals:
            logs[m] = math.exp(sum(vals) / len(vals))
    return logs


def mean_ratios(result: dict) -> dict[str, float]:
    logs: dict[str, list[float]] = {m: [] for m in METHODS}
    for per_nfe in result["problems"].values():
        for rows in per_nfe.values():
            for m in METHODS:
                logs[m].append(math.log(rows[m]["held_out"] / rows["fixed"]["held_out"]))
    return {m: math.exp(sum(v) / len(v)) for m, v in logs.items() if v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--quick", action="store_true", help="d = 2 only, NFE 5 and 10, 128 samples")
    ap.add_argument("--digits", type=Path, default=None,
                    help="a digits checkpoint of `timestepper train`: adds the digits row (NFE 5 and 10, fixed, "
                         "ays and dc; a few minutes, estimate printed first)")
    ap.add_argument("--digits-full", action="store_true",
                    help="the digits row at every NFE, with every method and 8000 samples (much longer)")
    ap.add_argument("--render", action="store_true", help="only render OUT/tuning.md again from OUT/tuning.json")
    args = ap.parse_args()
    torch.set_num_threads(1)  # before --render too: the report names the thread count
    if args.render:
        result = json.loads((args.out / "tuning.json").read_text())
        result["goal"] = goal_lines(result)
        (args.out / "tuning.json").write_text(json.dumps(result, indent=1, default=str))
        (args.out / "tuning.md").write_text(render(result))
        print(f"rendered {args.out / 'tuning.md'}")
        return
    t0 = time.perf_counter()
    n_samples = 128 if args.quick else 256
    nfes = (5, 10) if args.quick else NFES
    mixtures = bench_mixtures((2,), None) if args.quick else bench_mixtures((2, 64), 8)
    problems = [mixture_problem(name, gmm, n_samples) for name, gmm in mixtures.items()]
    budgets: dict = {}
    ks = _k_sampling()
    result: dict = {"config": {"nfes": list(nfes), "n_samples": n_samples, "budgets": budgets}, "problems": {}}
    for p in problems:
        result["problems"][p.name] = {}
        for n in nfes:
            rows = {**peer_rows(p, n, ks), **our_rows(p, n, METHODS, budgets)}
            result["problems"][p.name][str(n)] = rows
            print(p.name, n, {k: f"{v['held_out']:.3e}" for k, v in rows.items()}, flush=True)
    result["overfitting"] = [overfitting(n, n_samples, budgets) for n in ((5,) if args.quick else (5, 10))]
    if args.digits is not None:
        full = {"nfes": nfes, "methods": METHODS, "n_train": 256, "n_eval": 8000, "reference_steps": 400,
                "guard": True}
        result["digits"] = digits_rows(args.digits, full if args.digits_full else SMALL)
    result["goal"] = goal_lines(result)
    result["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "tuning.md").write_text(render(result))
    print(f"wrote {args.out / 'tuning.md'} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()

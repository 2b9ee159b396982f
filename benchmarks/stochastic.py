"""Stochastic samplers, likelihood and inpainting -> benchmarks/results/stochastic.md.

Run: ``PYTHONPATH=src python benchmarks/stochastic.py`` (about 3-5 minutes on 2 CPU cores).
``--device cuda --only overhead`` measures the per-step costs on a GPU (CUDA-synchronised timing)
and writes ``results/stochastic_cuda.md``, a section of its own.

1. Per-step overhead (model cost excluded: the model is the identity), float32, one thread,
   measured side by side in one run: our SDE steps with a plain generator and with the
   reproducible Brownian path vs our ODE step, and k-diffusion's SDE sampler with its default
   Brownian-tree noise sampler vs its ODE sampler.
2. SW2 to exact samples on a 2-D mixture per sampler and NFE (``bench.stochastic.stochastic_rows``).
3. Likelihood through the probability-flow ODE vs the closed form (d = 2, 16).
4. Inpainting by replacement (and RePaint resampling) and by SMCDiff (``inpaint(method="smc")``,
   K particles per sample) vs the exact conditional mixture.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
import types
from pathlib import Path

import torch

import timestepper as ts
from timestepper.bench import GaussianMixture, sliced_wasserstein
from timestepper.bench.stochastic import stochastic_rows
from timestepper.solvers.inpaint import Inpaint

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "stochastic.md"
F64 = torch.float64


def load_k_sampling():
    """k-diffusion's sampling.py without its package __init__ (which imports torchvision)."""
    try:
        import importlib.metadata as md

        path = Path(md.distribution("k-diffusion").locate_file("k_diffusion/sampling.py"))
    except Exception:
        return None
    pkg = types.ModuleType("_kdiff")
    pkg.__path__ = [str(path.parent)]
    utils = types.ModuleType("_kdiff.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules["_kdiff"], sys.modules["_kdiff.utils"], pkg.utils = pkg, utils, utils
    spec = importlib.util.spec_from_file_location("_kdiff.sampling", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_kdiff.sampling"] = mod
    spec.loader.exec_module(mod)
    return mod


def best_of(fn, repeats=5):
    best = math.inf
    fn()  # warm-up (CUDA context, kernels, allocator)
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3f} ms"


def overhead_rows(k, steps: int = 20, device: str = "cpu") -> list[dict]:
    sched = ts.EDMSchedule(0.002, 80.0)
    den = ts.Denoiser(lambda x, t: x, sched, "sample")
    sigmas = ts.make_grid(sched, steps, "karras").t.to(torch.float32).to(device)
    rows = []
    for shape in [(1, 4, 64, 64), (16, 4, 64, 64)]:
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)

        def ours(name, x0=noise, **opts):
            return lambda: ts.sample(den, x0, name, steps=steps, grid="karras", generator=1,
                                     solver_options=opts, check_finite=False)

        g = torch.Generator(device).manual_seed(1)
        r = {"shape": "x".join(map(str, shape)),
             "ode": best_of(ours("dpmpp-2m")) / steps,
             "sde": best_of(ours("sde-dpmpp-2m")) / steps,
             "sde_brownian": best_of(ours("sde-dpmpp-2m", noise="brownian")) / steps,
             "ddim": best_of(ours("ddim")) / steps,
             "ddpm": best_of(ours("ddpm")) / steps,
             "randn": best_of(lambda shape=shape, g=g: [torch.randn(shape, generator=g,
                                                                     device=device)
                                                         for _ in range(steps)]) / steps}
        if k is not None:
            def model(x, s):
                return x

            def plain(s, sn, shape=shape, g=g):
                return torch.randn(shape, generator=g, device=device)

            def k_run(fn, noise=noise, **kw):
                return lambda: fn(model, noise.clone(), sigmas, disable=True, **kw)

            r["k_ode"] = best_of(k_run(k.sample_dpmpp_2m)) / steps
            r["k_sde_tree"] = best_of(k_run(k.sample_dpmpp_2m_sde)) / steps
            r["k_sde_plain"] = best_of(k_run(k.sample_dpmpp_2m_sde, noise_sampler=plain)) / steps
        rows.append(r)
    return rows


def overhead_table(k, device: str = "cpu") -> tuple[list[str], list[dict]]:
    rows = overhead_rows(k, device=device)
    where = "1 thread" if device == "cpu" else (
        f"{device}: {torch.cuda.get_device_name()}" if device.startswith("cuda") else device)
    lines = [
        f"### Per-step cost, model excluded (float32, {where}, 20 Karras steps, best of 5)", "",
        "Ours: `dpmpp-2m` (ODE) vs `sde-dpmpp-2m` with a plain generator and with the "
        "reproducible Brownian path; `randn` is one `torch.randn` of the state's shape alone (the "
        "floor of any SDE step on this CPU). k-diffusion: `sample_dpmpp_2m` vs "
        "`sample_dpmpp_2m_sde` with its default BrownianTree noise sampler and with a plain-randn "
        "noise sampler.", "",
        "| shape | ODE | SDE | SDE / ODE | randn | (ODE + randn) / ODE | SDE brownian "
        "| brownian / ODE | ddpm / ddim | k ODE | k SDE tree | k tree / k ODE | k SDE randn "
        "| k tree / our SDE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["shape"], _ms(r["ode"]), _ms(r["sde"]), f"{r['sde'] / r['ode']:.2f}x",
                 _ms(r["randn"]),
                 f"{(r['ode'] + r['randn']) / r['ode']:.2f}x", _ms(r["sde_brownian"]),
                 f"{r['sde_brownian'] / r['ode']:.1f}x", f"{r['ddpm'] / r['ddim']:.2f}x"]
        if "k_ode" in r:
            cells += [_ms(r["k_ode"]), _ms(r["k_sde_tree"]), f"{r['k_sde_tree'] / r['k_ode']:.1f}x",
                      _ms(r["k_sde_plain"]), f"{r['k_sde_tree'] / r['sde']:.1f}x"]
        else:
            cells += ["-"] * 5
        lines.append("| " + " | ".join(cells) + " |")
    return lines, rows


def sw2_table() -> tuple[list[str], list[dict]]:
    gmm = GaussianMixture.random(2, 4, seed=1, full=True)
    nfes = (10, 25, 50, 100)
    rows = stochastic_rows(gmm, nfes=nfes, n_samples=2000, n_refs=3, seed=0)
    base = rows[0]["sw2"]
    lines = [f"### SW2 to exact samples, 2-D mixture (4 components), VP-linear, log-SNR grid, "
             f"n = 2000 (exact-vs-exact baseline {base:.4f}, mean of 3 pairs)", "",
             "| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|" + "---|" * len(nfes)]
    by: dict[str, list[dict]] = {}
    for r in rows[1:]:
        by.setdefault(r["solver"], []).append(r)
    for name, rs in by.items():
        cells = " | ".join(f"{r['sw2_ratio']:.2f} ({r['nfe']})" for r in rs)
        lines.append(f"| {name} | {cells} |")
    lines += ["", "Cells: mean SW2 to 3 exact sets / baseline (NFE actually used)."]
    return lines, rows


def likelihood_table() -> tuple[list[str], list[dict]]:
    rows = []
    s_min, s_max = 1e-4, 1e4
    for d in (2, 16):
        gmm = GaussianMixture.random(d, 4, seed=1, full=True)
        den = gmm.denoiser(ts.EDMSchedule(s_min, s_max), "sample")
        x = gmm.sample(32, torch.Generator().manual_seed(0))
        exact = gmm.log_prob(x, s_min)

        def exact_prior(y, gmm=gmm):
            return gmm.log_prob(y, s_max)

        for trace, kw in [("exact", {}), ("hutchinson", {"n_probes": 8, "generator": 0})]:
            for prior_name, prior in [("gaussian", None), ("exact", exact_prior)]:
                t0 = time.perf_counter()
                res = ts.likelihood(den, x, trace=trace, rtol=1e-5, atol=1e-5, prior=prior, **kw)
                el = time.perf_counter() - t0
                err = (res.log_prob - exact).abs()
                row = {"d": d, "trace": trace, "prior": prior_name,
                       "max_err_per_dim": float(err.max()) / d, "nfe": res.stats.nfe, "time_s": el}
                if res.stderr is not None:
                    row["mean_stderr_per_dim"] = float(res.stderr.mean()) / d
                    row["max_abs_z"] = float((err / res.stderr).max())
                rows.append(row)
    lines = ["### Log-likelihood by the probability-flow ODE vs closed form (32 samples, EDM "
             "sigma in [1e-4, 1e4], dopri5 rtol = atol = 1e-5)", "",
             "| d | trace | prior | max error (nats/dim) | mean std. error (nats/dim) | max abs z "
             "| NFE | time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        se = f"{r['mean_stderr_per_dim']:.2e}" if "mean_stderr_per_dim" in r else "-"
        z = f"{r['max_abs_z']:.2f}" if "max_abs_z" in r else "-"
        lines.append(f"| {r['d']} | {r['trace']} | {r['prior']} | {r['max_err_per_dim']:.2e} "
                     f"| {se} | {z} | {r['nfe']} | {r['time_s']:.1f} s |")
    return lines, rows


def inpaint_table() -> tuple[list[str], list[dict]]:
    sys.path.insert(0, str(ROOT.parent))
    from tests.sampling._gmm_conditional import conditional_sample

    n, rows = 2000, []
    runs = [("ddpm", 100, 1), ("euler-maruyama", 100, 1), ("sde-dpmpp-2m", 100, 1),
            ("ddim", 100, 1), ("ddpm", 50, 5), ("ddpm", 50, 20)]
    smc_runs = [(8, 100), (32, 100), (32, 50)]
    for d, kidx in [(2, [0]), (4, [0, 2])]:
        gmm = GaussianMixture.random(d, 4, seed=1, full=True)
        value = gmm.sample(1, torch.Generator().manual_seed(7))[0, kidx]
        e1 = conditional_sample(gmm, kidx, value, n, torch.Generator().manual_seed(1))
        e2 = conditional_sample(gmm, kidx, value, n, torch.Generator().manual_seed(2))
        base = sliced_wasserstein(e1, e2)
        known = torch.zeros(d, dtype=F64)
        known[kidx] = value
        mask = torch.zeros(d, dtype=torch.bool)
        mask[kidx] = True
        unk = [j for j in range(d) if j not in kidx]
        den = gmm.denoiser(ts.VPLinearSchedule(), "epsilon")
        noise = torch.randn(n, d, generator=torch.Generator().manual_seed(3), dtype=F64)
        for solver, steps, u in runs:
            sol = ts.sample(den, noise, Inpaint(solver, known, mask, resample=u), steps=steps,
                            generator=4, return_solution=True)
            rows.append({"d": d, "known": kidx, "method": "replace", "solver": solver,
                         "steps": steps, "resample": u, "nfe": sol.stats.nfe,
                         "ratio": sliced_wasserstein(sol.x[:, unk], e1) / base})
        for k, steps in smc_runs:
            t = time.perf_counter()
            sol = ts.inpaint(den, noise, known, mask, steps=steps, method="smc", particles=k,
                             generator=4, return_solution=True)
            rows.append({"d": d, "known": kidx, "method": f"smc K={k}", "solver": "ddpm",
                         "steps": steps, "resample": 1, "nfe": sol.stats.nfe,
                         "time_s": time.perf_counter() - t,
                         "ratio": sliced_wasserstein(sol.x[:, unk], e1) / base})
    lines = ["### Inpainting vs the exact conditional mixture (n = 2000; SW2 of the unknown "
             "coordinates / exact-vs-exact baseline; NFE per sample: SMC evaluates the model on K "
             "particles per sample at every step)", "",
             "| d | known coords | method | solver | steps | RePaint resample | NFE | SW2 ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['d']} | {r['known']} | {r['method']} | {r['solver']} | {r['steps']} "
                     f"| {r['resample']} | {r['nfe']} | {r['ratio']:.1f} |")
    return lines, rows


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--only", choices=["overhead", "sw2", "likelihood", "inpaint"], nargs="*",
                    help="run these sections only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    k = load_k_sampling()
    sections, data = [], {}
    out = OUT if args.device == "cpu" else OUT.with_name(f"stochastic_{args.device.split(':')[0]}.md")
    todo = [("overhead", lambda: overhead_table(k, args.device)), ("sw2", sw2_table),
            ("likelihood", likelihood_table), ("inpaint", inpaint_table)]
    for name, fn in [(n, f) for n, f in todo if not args.only or n in args.only]:
        print(f"[stochastic] {name} ...", flush=True)
        lines, rows = fn()
        sections += lines + [""]
        data[name] = rows
        print("\n".join(lines), flush=True)
    if args.device == "cpu" and args.only:
        print("--only on the CPU prints the sections and writes nothing")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    title = "Stochastic samplers, likelihood, inpainting"
    header = [f"## {title}" + ("" if args.device == "cpu" else f" ({args.device})"), "",
              "Generated by `benchmarks/stochastic.py` "
              f"(torch {torch.__version__}, {torch.get_num_threads()} thread).", ""]
    out.write_text("\n".join(header + sections))
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

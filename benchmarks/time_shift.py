"""Time-Shift Sampler (Li et al., ICLR 2024) on imperfect models -> benchmarks/results/time_shift.md.

Run: ``PYTHONPATH=src python benchmarks/time_shift.py`` (10-20 minutes on 2 busy CPU cores: the
digits model's 1000 training steps, then about 200 sampling runs of its U-Net).

Exposure bias is a property of learned models (an exact denoiser has none), so the shift is
measured on imperfect ones, with the paper's protocol reduced to what runs here:

1. **Digits** (the paper's setting in small): a VP (linear betas, 1000 steps) noise-prediction U-Net
   trained for ``--digits-steps`` Adam steps on the 8x8 digits; the state variance along its DDIM trajectory
   against the schedule's, and the Fréchet distance in the digits classifier's feature space
   (squared, like FID) of ``ddim``/``ts-ddim`` and ``dpmpp-2m``/``ts-dpmpp-2m`` at NFE 5, 10, 20.
2. **Mixture, d = 64** (8 components, spread 0.5: per-sample variance ~0.29, image-like), the exact
   model with a deliberate error (noise prediction x 1.03); sliced W2 to exact samples.
3. **The same mixture, exact model** (no exposure bias): L2 to the exact PF-ODE solution.

In each, the window and cutoff are chosen by the ``timeshift`` tuning method on training noises
(objective: the Fréchet distance to the train split / SW2 to other exact samples / the L2 distance)
and reported on held-out noises, against the base solver on the same grid (uniform in time, as the
paper) and noises. Window 0 (the base solver) is among the candidates.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import timestepper as ts
from timestepper.bench import GaussianMixture, sliced_wasserstein, trajectory_error
from timestepper.train import DenoisingObjective, make_model, train
from timestepper.train.data import digits
from timestepper.train.metrics import digits_report
from timestepper.tuning.objective import run_schedule
from timestepper.tuning.timeshift import timeshift

RESULTS = Path(__file__).parent / "results"
F64 = torch.float64
PAIRS = (("ts-ddim", "ddim"), ("ts-dpmpp-2m", "dpmpp-2m"))


def tuned_rows(den, nfes, train_noise, test_noise, train_metric, test_metric, budget, log):
    """Per TS solver and NFE: the base and the tuned TS metric on the held-out noise."""
    rows = []
    for ts_name, base in PAIRS:
        for nfe in nfes:
            t0 = time.perf_counter()

            def objective(schedule):
                with torch.no_grad():
                    return train_metric(run_schedule(den, train_noise, schedule))

            sched = timeshift(den, nfe, train_noise, objective, solver=ts_name, grid="uniform", **budget)
            with torch.no_grad():
                base_x = ts.sample(den, test_noise, base, steps=nfe, grid="uniform")
                tuned_x = run_schedule(den, test_noise, sched)
            row = {"solver": ts_name, "base": base, "nfe": nfe, "base_metric": test_metric(base_x),
                   "ts_metric": test_metric(tuned_x), "window": sched.solver_options["window"],
                   "cutoff": sched.solver_options["cutoff"], "evaluations": sched.provenance["evaluations"],
                   "search_s": time.perf_counter() - t0}
            rows.append(row)
            log(f"  {ts_name} nfe={nfe}: {base} {row['base_metric']:.4g} -> {row['ts_metric']:.4g} "
                f"(w={row['window']}, c={row['cutoff']:.4g})")
    return rows


def variance_profile(den, noise, nfe, v_data):
    """Mean per-sample state variance along the DDIM trajectory vs the schedule's ``sigma^2`` and
    the variance of a training state there, ``sigma^2 + alpha^2 v_data``."""
    grid = ts.make_grid(den.schedule, nfe, "uniform")
    out = []
    with torch.no_grad():
        for i in range(grid.steps):
            x = noise if i == 0 else ts.sample(den, noise, "ddim", grid=grid.points(0, i + 1), final="sigma_min")
            a2, s2 = float(grid.alpha[i]) ** 2, float(grid.sigma[i]) ** 2
            out.append({"t": float(grid.t[i]), "state_var": float(x.flatten(1).var(1).mean()),
                        "sigma2": s2, "training_var": s2 + a2 * v_data})
    return out


def digits_part(args, budget, log):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    x, _ = digits("train")
    torch.manual_seed(0)
    model = make_model("unet", {"size": 8, "channels": (32, 64)}, sched)
    t0 = time.perf_counter()
    res = train(model, DenoisingObjective(sched, "epsilon"), x, steps=args.digits_steps, batch_size=64,
                lr=2e-3, seed=0, progress=False)
    info = {"train_steps": len(res.losses), "train_s": time.perf_counter() - t0}
    log(f"digits: {info['train_steps']} steps in {info['train_s']:.0f} s")
    den = ts.Denoiser(res.sampling_model, sched, "epsilon")
    g = torch.Generator().manual_seed(1)
    train_noise = torch.randn(args.train_n, 1, 8, 8, generator=g)
    test_noise = torch.randn(args.test_n, 1, 8, 8, generator=g)
    info["v_data"] = float(x.flatten(1).var(1).mean())
    info["variance"] = variance_profile(den, test_noise, 10, info["v_data"])

    def fd(reference):
        return lambda s: digits_report(s.clamp(-1, 1), reference=reference)["frechet"]

    info["rows"] = tuned_rows(den, args.nfe, train_noise, test_noise, fd("train"), fd("test"), budget, log)
    return info


def mixture_part(args, budget, log, exact_model):
    gmm = GaussianMixture.random(64, 8, seed=1, spread=0.5)
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    exact = gmm.denoiser(sched, "epsilon", shared_time=False)
    den = exact if exact_model else ts.Denoiser(lambda x, t: 1.03 * exact.model_fn(x, t), sched, "epsilon")
    g = torch.Generator().manual_seed(2)
    train_noise = torch.randn(args.train_n, 64, generator=g, dtype=F64)
    test_noise = torch.randn(args.test_n, 64, generator=g, dtype=F64)
    if exact_model:  # the exact PF-ODE solution from each noise
        def reference(noise):
            a0, s0 = float(sched.alpha(torch.tensor(sched.t_max))), float(sched.sigma(torch.tensor(sched.t_max)))
            return gmm.reference_solution(noise / a0, s_start=s0 / a0)

        ref_train, ref_test = reference(train_noise), reference(test_noise)
        train_metric = lambda s: trajectory_error(s, ref_train)  # noqa: E731
        test_metric = lambda s: trajectory_error(s, ref_test)  # noqa: E731
    else:
        data_train = gmm.sample(args.train_n, torch.Generator().manual_seed(3))
        data_test = gmm.sample(args.test_n, torch.Generator().manual_seed(4))
        train_metric = lambda s: sliced_wasserstein(s, data_train)  # noqa: E731
        test_metric = lambda s: sliced_wasserstein(s, data_test)  # noqa: E731
    return {"rows": tuned_rows(den, args.nfe, train_noise, test_noise, train_metric, test_metric, budget, log)}


def table(rows, metric):
    lines = [f"| solver | NFE | base: {metric} | TS (tuned): {metric} | TS / base | window | cutoff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['solver']} vs {r['base']} | {r['nfe']} | {r['base_metric']:.4g} | {r['ts_metric']:.4g} "
                     f"| {r['ts_metric'] / r['base_metric']:.2f} | {r['window']} | {r['cutoff']:.4g} |")
    return "\n".join(lines)


def markdown(args, results, budget):
    cmd = (f"PYTHONPATH=src python benchmarks/time_shift.py --digits-steps {args.digits_steps} "
           f"--train-n {args.train_n} --test-n {args.test_n} --nfe {','.join(map(str, args.nfe))}")
    d = results["digits"]
    var = "\n".join(f"| {v['t']:.0f} | {v['state_var']:.4f} | {v['training_var']:.4f} | {v['sigma2']:.4f} |"
                    for v in d["variance"])
    return f"""## Time-Shift Sampler (Li et al., ICLR 2024) on imperfect models

Run on {platform.machine()}, torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s). Command: `{cmd}`.
Window and cutoff chosen by `tune(method="timeshift")`'s search (windows {list(budget['windows'])}, cutoffs
{list(budget['cutoffs'])} of the time range, and window 0 = the base solver) on {args.train_n} training noises;
numbers on {args.test_n} held-out noises, same grid (uniform in time) and noises for base and TS.

**Digits**: VP (linear betas, 1000 steps) noise-prediction U-Net (32/64 channels), {d['train_steps']} Adam
steps of batch 64 ({d['train_s']:.0f} s): a deliberately short training, an imperfect model. Its exposure
bias: the mean per-sample variance of the DDIM state (10 steps) against that of a training state at
the nominal time, `sigma^2 + alpha^2 v_data` (`v_data = {d['v_data']:.3f}`, the digits' mean per-image
variance), and `sigma^2` (what the paper's rule compares with):

| t | state variance | training state variance | sigma^2 |
|---|---|---|---|
{var}

Fréchet distance (digits classifier features, squared; tuned against the train split, reported
against the test split):

{table(d['rows'], 'Fréchet')}

**Mixture, d = 64, imperfect model** (exact mixture denoiser, noise prediction x 1.03), sliced W2 to
exact samples:

{table(results['mixture_imperfect']['rows'], 'SW2')}

**Same mixture, exact model** (no exposure bias), mean L2 distance to the exact PF-ODE solution:

{table(results['mixture_exact']['rows'], 'L2')}
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--digits-steps", type=int, default=1000)
    p.add_argument("--train-n", type=int, default=300)
    p.add_argument("--test-n", type=int, default=1000)
    p.add_argument("--nfe", default="5,10,20")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "time_shift.md"))
    args = p.parse_args()
    args.nfe = [int(v) for v in args.nfe.split(",")]
    torch.set_num_threads(args.threads)
    budget = {"windows": (10, 20, 40, 80), "cutoffs": (0.1, 0.3, 0.6)}

    def log(msg):
        print(msg, flush=True)

    results = {"digits": digits_part(args, budget, log)}
    log("mixture, imperfect model")
    results["mixture_imperfect"] = mixture_part(args, budget, log, exact_model=False)
    log("mixture, exact model")
    results["mixture_exact"] = mixture_part(args, budget, log, exact_model=True)
    out = Path(args.out)
    out.write_text(markdown(args, results, budget))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()

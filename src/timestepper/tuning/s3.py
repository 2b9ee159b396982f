"""S^3: predictor-based search of a USF solver schedule (Liu et al. 2023, "A Unified Sampling
Framework for Solver Searching of Diffusion Probabilistic Models", ICLR 2024, Sec. 5).

The paper's search is predictor-based and multi-stage: a small number of solver schedules (time
points and per-step order, prediction type, corrector, ...) are sampled and evaluated with the
real model; a cheap performance predictor (an MLP over an encoding of the schedule) is trained
on them; an evolutionary search then runs on the *predictor* instead of the model, and only the
candidates it ranks best are evaluated with the model, added to the training set, and the
predictor is retrained for the next stage. The paper's metric is FID; here it is the protocol's
objective (mean L2 distance to the model's tight PF-ODE solution from the same noise).

Here: the predictor is an MLP (two hidden layers of 64, tanh) fitted in float64 to the
standardised log-objective with a squared loss plus a pairwise logistic ranking loss (only the
order of candidates matters to the search; the loss mix is ours), deterministic for a seed. The
first evaluated set holds the best fixed grid x solver, its times refined by a short
Align-Your-Steps descent, and their neighbours beside random schedules, so the result is never
worse than that baseline on the training noise.
"""

from __future__ import annotations

import math
import random

import torch

from ..diffusion.denoiser import Denoiser
from ..solvers.schedule import SolverSchedule
from .autodiffusion import breed
from .fixed import better_or_start
from .methods import check_budget, register_method
from .objective import Objective
from .space import Candidate, Space
from .start import starting_candidates

F64 = torch.float64
MAX_LOG = 700.0  # exp(MAX_LOG) is finite in float64


class QualityPredictor:
    """An MLP predicting the (standardised) log-objective of a schedule from its encoding."""

    def __init__(self, n_features: int, seed: int, hidden: int = 64) -> None:
        g = torch.Generator().manual_seed(seed)

        def layer(i: int, o: int) -> tuple[torch.Tensor, torch.Tensor]:
            w = torch.randn(i, o, generator=g, dtype=F64) / math.sqrt(i)
            return w.requires_grad_(), torch.zeros(o, dtype=F64, requires_grad=True)

        self.params = [*layer(n_features, hidden), *layer(hidden, hidden), *layer(hidden, 1)]
        self.mean, self.std = 0.0, 1.0

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2, w3, b3 = self.params
        return (torch.tanh(torch.tanh(x @ w1 + b1) @ w2 + b2) @ w3 + b3).squeeze(-1)

    def fit(self, features: list[list[float]], values: list[float], iters: int = 150) -> None:
        """Fit on evaluated schedules (non-finite values count as the worst seen, plus one)."""
        x = torch.tensor(features, dtype=F64)
        logs = [math.log(v) for v in values if math.isfinite(v) and v > 0]
        worst = max(logs) + 1.0 if logs else 0.0
        y = torch.tensor([math.log(v) if math.isfinite(v) and v > 0 else worst for v in values], dtype=F64)
        self.mean, self.std = float(y.mean()), float(y.std()) if len(values) > 1 and float(y.std()) > 0 else 1.0
        y = (y - self.mean) / self.std
        opt = torch.optim.Adam(self.params, lr=2e-2)
        sign = torch.sign(y[:, None] - y[None, :])
        for _ in range(iters):
            opt.zero_grad()
            p = self._forward(x)
            rank = torch.nn.functional.softplus(-sign * (p[:, None] - p[None, :])).mean()
            loss = ((p - y) ** 2).mean() + rank
            loss.backward()
            opt.step()

    def predict_log(self, features: list[list[float]]) -> list[float]:
        """The predicted log-objective of each encoded schedule (what the search ranks by)."""
        with torch.no_grad():
            p = self._forward(torch.tensor(features, dtype=F64))
        return [float(v) * self.std + self.mean for v in p]

    def predict(self, features: list[list[float]]) -> list[float]:
        """The predicted objective (``exp`` of :meth:`predict_log`, capped below float overflow:
        a prediction far outside the fitted values is only a rank)."""
        return [math.exp(min(v, MAX_LOG)) for v in self.predict_log(features)]


def s3(denoiser: Denoiser, nfe: int, noise, objective: Objective, *,  # noqa: PLR0913 - the paper's knobs
       initial: int = 24, rounds: int = 8, proposals: int = 8, predictor_population: int = 256,
       top_k: int = 6, mutation_prob: float = 0.25, start_sweeps: int = 1, start_iters: int = 5) -> SolverSchedule:
    """S^3's predictor-guided search (Liu et al. 2023) of a schedule of ``nfe`` model calls.

    Budget: ``initial`` schedules evaluated with the model first; then ``rounds`` stages, each
    fitting the predictor, breeding ``predictor_population`` new candidates from the ``top_k``
    best evaluated ones (crossover and mutation), ranking them with the predictor and evaluating
    the ``proposals`` best with the model; ``start_sweeps``, ``start_iters``: the Align-Your-Steps
    refinement of the fixed start in the first set (:func:`~timestepper.tuning.start.starting_candidates`;
    0 sweeps: none). Model calls: ``nfe * (initial + rounds * proposals)`` plus the baseline and
    the refinement.
    """
    check_budget(initial=(initial, 2), rounds=(rounds, 1), proposals=(proposals, 1),
                 predictor_population=(predictor_population, 1), top_k=(top_k, 1),
                 mutation_prob=(mutation_prob, 0.0))
    space = Space(denoiser.schedule, nfe)
    rng = objective.rng
    start, first = starting_candidates(denoiser, nfe, noise, objective, space, start_sweeps, start_iters)
    pool = list(dict.fromkeys(first + [space.mutate(first[0], rng, mutation_prob) for _ in range(initial // 2)]))
    while len(pool) < initial:
        pool.append(space.random(rng, first[0]))
    scored = {c: objective(space.to_schedule(c)) for c in dict.fromkeys(pool)}
    for r in range(rounds):
        scored.update(_stage(space, objective, scored, rng, r, proposals, predictor_population, top_k,
                             mutation_prob))
    best = min(scored, key=lambda c: scored[c])
    return better_or_start(space.to_schedule(best), start, objective)


def _stage(space: Space, objective: Objective, scored: dict[Candidate, float], rng: random.Random,  # noqa: PLR0913 - one stage's inputs
           r: int, proposals: int, population: int, top_k: int, prob: float) -> dict[Candidate, float]:
    """One S^3 stage: fit the predictor, breed candidates from the best evaluated, evaluate the
    ``proposals`` the predictor ranks best."""
    cands = list(scored)
    predictor = QualityPredictor(len(space.encode(cands[0])), seed=objective.seed * 1000 + r)
    predictor.fit([space.encode(c) for c in cands], [scored[c] for c in cands])
    parents = sorted(cands, key=lambda c: scored[c])[:top_k]
    children = breed(space, parents, rng, population, prob, scored)
    predicted = predictor.predict_log([space.encode(c) for c in children])
    best = sorted(range(len(children)), key=lambda i: predicted[i])[:proposals]
    return {children[i]: objective(space.to_schedule(children[i])) for i in best}


register_method("s3", s3, "S^3 (Liu et al. 2023): predictor-guided search of a USF solver schedule")

__all__ = ["QualityPredictor", "s3"]

"""Which of our solvers, grid rule and options reproduce each diffusers scheduler class.

A :class:`Recipe` is the translation of one class's config: the registry solver and its options,
the plan builder of :mod:`.plans`, and the data-prediction post-processing the class applies
(``clip_sample``, dynamic ``thresholding``). Options whose effect is not reproduced raise
(:func:`.config.refuse_options`), as does a class not listed in :data:`CLASSES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...core.solver import Solver
from ...diffusion.schedules import NoiseSchedule, RectifiedFlowSchedule
from ...solvers.dpm_solver import singlestep_orders
from . import plans
from .brownian import ClassBrownianNoise
from .config import refuse_options, schedule_from_config
from .flow_heun import FlowHeun
from .pndm_counter import PndmCounterLoop
from .spacing import timestep_of_sigma, train_sigmas

PlanBuilder = Callable[..., plans.Plan]
MidSegments = Callable[[int, int, dict[str, Any]], list[tuple[int, int, dict[str, Any]]]]


@dataclass
class Recipe:
    """How one diffusers class's config is reproduced.

    Attributes:
        class_name: the diffusers class.
        solver: registry name of the solver (or the instance of a class-specific one).
        options: solver options fixed by the config.
        plan: ``plan(n, custom_timesteps, sigmas, mu) -> Plan``.
        schedule: our noise schedule of the config.
        lower_order_final: ``lower_order_final(n, n_loop)``, the solver's option for a loop of
            ``n_loop`` steps on an ``n``-step grid
            (diffusers applies the config's flag only below 15 steps in some classes, and
            switches it on by itself in others), or ``None`` for solvers without it.
        clip: ``clip_sample_range`` when ``clip_sample`` is on, else ``None``.
        threshold: ``(ratio, max_value)`` when ``thresholding`` is on, else ``None``.
        keeps_model_noise: DDIM's update keeps the model's own noise prediction next to the
            clipped data prediction (unless ``use_clipped_model_output``).
        step_options: ``step()`` keyword arguments that set solver options (``eta``, ``order``).
        order: the class's ``order`` attribute when it is not the most evaluations per step
            (PNDM declares 1: pipelines slice ``timesteps[t_start:]``), else ``None``.
        mid_segments: ``mid_segments(n, first, options)``: the solver runs
            ``(table_start, loop_start, options)`` (:class:`.stepping.Segment`) with which the
            class runs a loop that starts at step ``first`` of ``n`` (``None``: our solver started
            afresh there, which is what the class does).
        segments: ``segments(plan, first, options)``: solver runs as ``mid_segments`` for every
            loop (DDPM's ``fixed_large`` variance: a noise scale per step), or ``None``.
        mid_loop: ``mid_loop(timesteps)`` builds the class's own loop for a loop that does not
            start at ``timesteps[0]`` (PNDM's call counter, :mod:`.pndm_counter`), or ``None``.
    """

    class_name: str
    solver: str | Solver
    options: dict[str, Any]
    plan: PlanBuilder
    schedule: NoiseSchedule
    lower_order_final: Callable[[int, int], bool] | None = None
    clip: float | None = None
    threshold: tuple[float, float] | None = None
    keeps_model_noise: bool = False
    step_options: dict[str, Any] = field(default_factory=dict)
    order: int | None = None
    mid_segments: MidSegments | None = None
    segments: Callable[[plans.Plan, int, dict[str, Any]], list[tuple[int, int, dict[str, Any]]]] | None = None
    mid_loop: Callable[[Any], PndmCounterLoop] | None = None


LOWER_ORDER_BELOW = 15  # diffusers' multistep lower_order_final acts below 15 steps
PRK_STEPS, PRK_ENTRIES = 3, 12  # PNDM's Runge-Kutta warm-up: 3 steps, 12 timesteps
_BETA_SIGMAS: dict[str, Any] = {}  # use_beta_sigmas is reproduced (plans._converted)
_NO_SHIFT = {"use_dynamic_shifting": False, "use_flow_sigmas": False}


def _post(cfg: dict[str, Any]) -> dict[str, Any]:
    clip = float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample") else None
    thr = None
    if cfg.get("thresholding"):
        thr = (float(cfg.get("dynamic_thresholding_ratio", 0.995)),
               float(cfg.get("sample_max_value", 1.0)))
    return {"clip": None if thr else clip, "threshold": thr}


def _pure_noise_guard(cfg: dict[str, Any], name: str, build: PlanBuilder) -> PlanBuilder:
    """DDPM/DDIM with ``rescale_betas_zero_snr`` (``alphas_cumprod = 0`` at the last training
    step) and a noise-predicting model: a grid through that step asks for ``x0`` from ``eps`` at
    ``alpha = 0``, where diffusers divides by zero (NaN); refused rather than made up."""
    T = int(cfg.get("num_train_timesteps", 1000))
    if not cfg.get("rescale_betas_zero_snr") or cfg.get("prediction_type", "epsilon") != "epsilon":
        return build

    def plan(n: int, ts: Any = None, **kw: Any) -> plans.Plan:
        p = build(n, ts, **kw)
        if bool((p.timesteps == T - 1).any()):
            raise ValueError(
                f"{name}: rescale_betas_zero_snr=True with prediction_type='epsilon' on a grid "
                f"through timestep {T - 1} (alpha = 0): the noise prediction gives no data "
                "estimate there (diffusers returns NaN); use prediction_type='v_prediction', "
                "as zero-terminal-SNR models are trained, or timestep_spacing='leading'")
        return p

    return plan


def _ddpm(cfg: dict[str, Any]) -> Recipe:
    if cfg.get("variance_type") == "fixed_large_log":
        raise ValueError(
            "DDPMScheduler: variance_type='fixed_large_log' is not reproduced: diffusers 0.42 "
            "scales the noise by the square root of log(beta_t) < 0, so every sample is NaN; "
            "use 'fixed_large' (reproduced) or 'fixed_small'")
    refuse_options(cfg, "DDPMScheduler", {}, {"variance_type": ("fixed_small", "fixed_small_log",
                                                                 "fixed_large")})
    sch = schedule_from_config(cfg)
    large = cfg.get("variance_type") == "fixed_large"

    def plan(n: int, ts: Any = None, **_: Any) -> plans.Plan:
        p = plans.discrete_plan(cfg, sch, n, "DDPMScheduler", ts)
        if large and float(p.timesteps[-1]) > 0:
            raise ValueError(
                "DDPMScheduler with variance_type='fixed_large' ending at timestep "
                f"{int(p.timesteps[-1])} > 0 adds noise of variance beta_t on its last step (to "
                "alpha = 1), which no sampler step does; reproduced when the last timestep is 0 "
                "(steps_offset=0 with leading or linspace spacing)")
        return p

    return Recipe("DDPMScheduler", "ddim", {"eta": 1.0},
                  _pure_noise_guard(cfg, "DDPMScheduler", plan), sch,
                  segments=_large_variance_segments(sch) if large else None, **_post(cfg))


def _large_variance_segments(sch: NoiseSchedule) -> Callable[..., list[tuple[int, int, dict[str, Any]]]]:
    """DDPM's ``fixed_large`` variance (Ho et al. 2020, Section 3.2: ``sigma_t^2 = beta_t``, the
    upper bound, where ``fixed_small`` is the posterior's ``beta~_t``): the ancestral step with
    its noise scaled by ``sqrt(beta_t / beta~_t) = sqrt((1 - abar_t) / (1 - abar_prev))``, one
    segment per step."""

    def segments(plan: plans.Plan, first: int, opts: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
        a0 = sch.alpha(plan.start) ** 2
        a1 = torch.where(plan.end == sch.t_data, torch.ones_like(a0), sch.alpha(plan.end) ** 2)
        scale = torch.where(a1 < 1, ((1 - a0) / (1 - a1).clamp(min=1e-300)).sqrt(), torch.ones_like(a0))
        return [(i, i, {**opts, "s_noise": float(scale[i])}) for i in range(first, len(plan.start))]

    return segments


def _ddim(cfg: dict[str, Any]) -> Recipe:
    sch = schedule_from_config(cfg)
    return Recipe("DDIMScheduler", "ddim", {"eta": 0.0}, _pure_noise_guard(
        cfg, "DDIMScheduler",
        lambda n, ts=None, **_: plans.discrete_plan(cfg, sch, n, "DDIMScheduler", ts)),
                  sch, keeps_model_noise=True, step_options={"eta": "eta"}, **_post(cfg))


def _k(name: str, solver: str, options: dict[str, Any], fixed: dict[str, Any],  # noqa: PLR0913 - a class's description
       step_options: dict[str, Any] | None = None,
       mid_segments: MidSegments | None = None) -> Callable[[dict[str, Any]], Recipe]:
    def build(cfg: dict[str, Any]) -> Recipe:
        refuse_options(cfg, name, {**_BETA_SIGMAS, **fixed})
        sch = schedule_from_config(cfg)
        train = train_sigmas(_acp(sch))
        return Recipe(name, solver, dict(options),
                      lambda n, ts=None, sigmas=None, **_: plans.k_plan(cfg, sch, n, train, ts, sigmas), sch,
                      step_options=dict(step_options or {}), mid_segments=mid_segments)
    return build


def _kdpm2(cfg: dict[str, Any], name: str = "KDPM2DiscreteScheduler", solver: str = "dpm-2",
           options: dict[str, Any] | None = None) -> Recipe:
    """KDPM2 (k-diffusion's ``sample_dpm_2``, Karras et al. 2022's DPM-Solver-2 variant): our
    ``dpm-2``; the midpoint's timestep is the class's (linear in ``log sigma``) and its
    ``sigmas`` attribute lists every grid sigma twice (``s0, s1, s1, ..., 0, 0``). KDPM2-ancestral
    (``sample_dpm_2_ancestral``) is the same with our ``dpm-2-ancestral`` at ``eta = 1``: the
    midpoint between ``sigma_i`` and ``sigma_down``, one draw from the pipeline's generator after
    the second evaluation, as the class draws it."""
    recipe = _k(name, solver, options or {}, {})(cfg)
    ancestral = solver == "dpm-2-ancestral"
    train = train_sigmas(_acp(recipe.schedule))

    def adjust(p: plans.Plan, s: torch.Tensor) -> None:
        p.exposed_sigmas = torch.cat([s[:1], s[1:].repeat_interleave(2), s[-1:]])
        if ancestral:
            p.mid_timesteps = torch.as_tensor(timestep_of_sigma(_ancestral_midpoints(s), train, np.float32))

    return _adjusted(recipe, adjust)


def _adjusted(recipe: Recipe, adjust: Callable[[plans.Plan, torch.Tensor], None]) -> Recipe:
    """``recipe`` whose plans are changed by ``adjust(plan, plan.sigmas)`` (a class's own
    ``sigmas`` attribute and stage timesteps)."""
    base = recipe.plan

    def plan(*args: Any, **kw: Any) -> plans.Plan:
        p = base(*args, **kw)
        assert p.sigmas is not None
        adjust(p, p.sigmas)
        return p

    recipe.plan = plan
    return recipe


def _ancestral_midpoints(sigmas: torch.Tensor) -> np.ndarray:
    """KDPM2-ancestral's ``sigma_interpol`` of each step, as the class computes it in float32 from
    its sigmas (with the final 0): ``exp(lerp(log sigma_i, log sigma_down, 1/2))``, ``sigma_down``
    of the ancestral split with ``eta = 1``."""
    s = sigmas.to(torch.float32)
    nxt = torch.cat([s[1:], s.new_zeros(1)])
    up = (nxt**2 * (s**2 - nxt**2) / s**2) ** 0.5
    down = (nxt**2 - up**2) ** 0.5
    down[-1] = 0.0
    mid = s.log().lerp(down.log(), 0.5).exp()
    return mid[:-1].numpy()


def _dpm_sde(cfg: dict[str, Any]) -> Recipe:
    """DPMSolverSDE (k-diffusion's ``sample_dpmpp_sde``): our ``dpmpp-sde`` with the class's
    torchsde Brownian noise (:mod:`.brownian`, seeded by ``noise_sampler_seed``), the stage at the
    log-sigma midpoint labelled by its own timestep (float64, as the class), ``sigmas`` listing
    every inner grid sigma twice (``s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0``)."""
    name = "DPMSolverSDEScheduler"
    recipe = _k(name, "dpmpp-sde", {}, {})(cfg)
    source = ClassBrownianNoise(cfg.get("noise_sampler_seed"))
    recipe.options = {"eta": 1.0, "noise": source}
    train = train_sigmas(_acp(recipe.schedule))

    def adjust(p: plans.Plan, s: torch.Tensor) -> None:
        p.exposed_sigmas = torch.cat([s[:1], s[1:-1].repeat_interleave(2), s[-1:]])
        p.timesteps = p.timesteps.to(torch.float64)
        log_s = np.log(s[:-1].numpy().astype(np.float64))
        p.mid_timesteps = torch.as_tensor(timestep_of_sigma(np.exp(0.5 * (log_s[:-1] + log_s[1:])), train))
        source.reset(s)

    return _adjusted(recipe, adjust)


def _full_table(n: int, first: int, opts: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
    """LMS started at step ``first``: the full schedule's table (step ``i`` at order
    ``min(i + 1, 4)``, its Lagrange weights over the full grid's points) applied to a history
    that starts empty, i.e. the missing derivatives count as zero."""
    return [(0, first, opts)]


def _singlestep_segments(order: int, flag: Callable[[int, int], bool]) -> MidSegments:
    """Singlestep DPM-Solver started at step ``first``: the full schedule's grouping of steps,
    each group's order cut to the outputs the loop has (a partial group at the start ramps up
    from first order), i.e. a run over the rest of the partial group, then one from the next
    group start with the full schedule's ``lower_order_final``."""

    def segments(n: int, first: int, opts: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
        full_flag = flag(n, n)
        orders = singlestep_orders(n, order, full_flag)
        starts = [i for i in range(first + 1, n) if orders[i] == 1]
        whole = {**opts, "lower_order_final": full_flag}
        if orders[first] == 1:
            return [(first, first, whole)]
        head = [(first, first, {**opts, "lower_order_final": True})]
        return head + [(starts[0], starts[0], whole)] if starts else head

    return segments


def _acp(sch: Any) -> Any:
    return sch.alphas_cumprod


def _dpm_solver(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    algo, order = cfg.get("algorithm_type", "dpmsolver++"), int(cfg.get("solver_order", 2))
    refuse_options(cfg, "DPMSolverMultistepScheduler", {}, {
        "algorithm_type": ("dpmsolver++", "dpmsolver", "sde-dpmsolver++"),
        "solver_order": (1, 2, 3), "solver_type": ("midpoint", "heun")})
    if order == 1 and algo != "sde-dpmsolver++":
        return "ddim", {}  # the first-order DPM-Solver(++) step is DDIM's
    opts: dict[str, Any] = {"solver_type": cfg.get("solver_type", "midpoint")}
    if algo == "sde-dpmsolver++":
        if order == 1:  # the first-order SDE-DPM-Solver++ step is DDIM's with eta = 1 (DDPM's)
            return "ddim", {"eta": 1.0}
        if order == 3:
            raise ValueError(
                "DPMSolverMultistepScheduler: algorithm_type='sde-dpmsolver++' with solver_order=3 "
                "is not reproduced: diffusers weights the second difference D2 by "
                "alpha_t ((1 - e^{-2h} - 2h) / (2h)^2 - 0.5) = alpha_t (-1 + h/3 + ...), an O(1) "
                "weight where the SDE-DPM-Solver++ (and k-diffusion's 3M SDE) has "
                "-alpha_t (phi_2 / 2h - 0.5) = alpha_t (h/3 + ...). Use solver_order=2 (reproduced), "
                "or Scheduler.from_config(config, solver='sde-dpmpp-3m') for the method")
        return "sde-dpmpp-2m", opts
    if order == 3:
        opts["third_order_weight"] = "published"
    return (f"dpmpp-{order}m" if algo == "dpmsolver++" else f"dpm-solver-{order}m"), opts


def _multistep(name: str) -> Callable[[dict[str, Any]], Recipe]:
    def build(cfg: dict[str, Any]) -> Recipe:
        fixed: dict[str, Any] = {**_BETA_SIGMAS, **_NO_SHIFT,
                                 "lambda_min_clipped": -float("inf"), "shift_terminal": None}
        allowed: dict[str, tuple[Any, ...]] = {"variance_type": (None, "learned_range")}
        if name == "DPMSolverMultistepScheduler":
            solver, opts = _dpm_solver(cfg)
        elif name == "DEISMultistepScheduler":
            fixed.update(algorithm_type="deis", solver_type="logrho")
            solver, opts = "deis", {"order": int(cfg.get("solver_order", 2))}
        else:  # UniPC
            fixed.update(predict_x0=True, solver_p=None)
            if (cfg.get("lower_order_final") is False and int(cfg.get("solver_order", 2)) > 1
                    and cfg.get("final_sigmas_type", "zero") == "zero"):
                raise ValueError(
                    f"{name}: lower_order_final=False with final_sigmas_type='zero' is not "
                    "reproduced: diffusers' higher-order UniPC step to sigma = 0 (h = inf) returns "
                    "inf; use lower_order_final=True (the default) or final_sigmas_type='sigma_min'")
            kind = cfg.get("solver_type", "bh2")
            allowed["solver_type"] = ("bh1", "bh2")
            solver = f"unipc-{kind}"
            opts = {"order": int(cfg.get("solver_order", 2)),
                    "disable_corrector": tuple(cfg.get("disable_corrector") or ())}
        refuse_options(cfg, name, fixed, allowed)
        sch = schedule_from_config(cfg)
        train = train_sigmas(_acp(sch))
        post = _post({k: v for k, v in cfg.items() if k != "clip_sample"})
        return Recipe(name, solver, opts,
                      lambda n, ts=None, **_: plans.multistep_plan(cfg, sch, n, name, train, ts),
                      sch, lower_order_final=None if solver == "ddim" else _lower_order_rule(cfg, name),
                      **post)
    return build


def _lower_order_rule(cfg: dict[str, Any], name: str) -> Callable[[int, int], bool]:
    flag = bool(cfg.get("lower_order_final", name != "DPMSolverSinglestepScheduler"))
    if name == "UniPCMultistepScheduler":
        return lambda n, n_loop: flag
    if name == "DPMSolverSinglestepScheduler":
        order, zero = int(cfg.get("solver_order", 2)), cfg.get("final_sigmas_type", "zero") == "zero"
        return lambda n, n_loop: flag or n % order != 0 or n_loop % order != 0 or zero
    if cfg.get("euler_at_final") and cfg.get("final_sigmas_type", "zero") != "zero":
        return _euler_at_final_rule(flag, int(cfg.get("solver_order", 2)))
    return lambda n, n_loop: flag and n < LOWER_ORDER_BELOW


def _euler_at_final_rule(flag: bool, order: int) -> Callable[[int, int], bool]:
    """DPM-Solver multistep's ``euler_at_final`` before a final sigma > 0: the last step is first
    order; the one before is lowered only by ``lower_order_final`` (below 15 steps). Our
    ``lower_order_final`` lowers both, below 15 steps: the same at order 2, and at order 3 when
    the flag holds."""

    def rule(n: int, n_loop: int) -> bool:
        if n >= LOWER_ORDER_BELOW or (order == 3 and not flag):
            raise ValueError(
                "DPMSolverMultistepScheduler: euler_at_final=True with final_sigmas_type="
                f"'sigma_min' at {n} steps (solver_order={order}, lower_order_final={flag}) "
                "lowers only the last step to first order, which our multistep solvers do below "
                f"{LOWER_ORDER_BELOW} steps (both last steps at order 3, with lower_order_final); "
                "use fewer steps or final_sigmas_type='zero'")
        return True

    return rule


def _singlestep(cfg: dict[str, Any]) -> Recipe:
    name = "DPMSolverSinglestepScheduler"
    refuse_options(cfg, name, {**_BETA_SIGMAS, **_NO_SHIFT, "lambda_min_clipped": -float("inf")},
                   {"algorithm_type": ("dpmsolver++", "dpmsolver"), "solver_order": (1, 2, 3),
                    "solver_type": ("midpoint",), "variance_type": (None, "learned_range")})
    algo, order = cfg.get("algorithm_type", "dpmsolver++"), int(cfg.get("solver_order", 2))
    solver = "ddim" if order == 1 else (
        f"dpmpp-{order}s" if algo == "dpmsolver++" else f"dpm-solver-{order}")
    sch = schedule_from_config(cfg)
    train = train_sigmas(_acp(sch))
    rule = None if solver == "ddim" else _lower_order_rule(cfg, name)
    return Recipe(name, solver, {},
                  lambda n, ts=None, **_: plans.multistep_plan(cfg, sch, n, name, train, ts),
                  sch, lower_order_final=rule,
                  mid_segments=None if rule is None else _singlestep_segments(order, rule),
                  **_post({k: v for k, v in cfg.items() if k != "clip_sample"}))


def _pndm(cfg: dict[str, Any]) -> Recipe:
    # diffusers' PNDM combines v-predictions linearly and converts the combination at the
    # current sample, which no noise-prediction method reproduces
    refuse_options(cfg, "PNDMScheduler", {"prediction_type": "epsilon"})
    sch = schedule_from_config(cfg)
    prk = not cfg.get("skip_prk_steps")
    T = int(cfg.get("num_train_timesteps", 1000))
    final = sch.t_data if cfg.get("set_alpha_to_one", False) else 0.0

    def plan(n: int, ts: Any = None, **_: Any) -> plans.Plan:
        if prk and (T // n) % 2:
            raise ValueError(
                f"PNDMScheduler's Runge-Kutta warm-up at {n} steps evaluates the half steps at "
                f"t - {T // n} // 2, rounded to a whole step, which is not reproduced; use an "
                "even T // num_inference_steps or skip_prk_steps=True")
        return plans.discrete_plan(cfg, sch, n, "PNDMScheduler", ts)

    def mid_loop(timesteps: Any) -> PndmCounterLoop:
        n = len(timesteps) - (PRK_ENTRIES - PRK_STEPS if prk else 1)
        labels = [int(t) for t in timesteps[:PRK_ENTRIES]] if prk else []
        return PndmCounterLoop(sch, T, n, labels, final)

    return Recipe("PNDMScheduler", "pndm" if prk else "plms", {}, plan, sch, order=1,
                  mid_loop=mid_loop)


def _flow(name: str, solver: str | Solver) -> Callable[[dict[str, Any]], Recipe]:
    return lambda cfg: _flow_recipe(cfg, name, solver)


def _flow_recipe(cfg: dict[str, Any], name: str, solver: str | Solver) -> Recipe:
    refuse_options(cfg, name,
                   {**_BETA_SIGMAS, "invert_sigmas": False, "shift_terminal": None,
                    "stochastic_sampling": False})
    sch = RectifiedFlowSchedule()

    def plan(n: int, ts: Any = None, sigmas: Any = None, mu: float | None = None) -> plans.Plan:
        return plans.flow_plan(cfg, sch, n, None if sigmas is None else np.asarray(sigmas), mu)

    return Recipe(name, solver, {}, plan, sch)


CLASSES: dict[str, Callable[[dict[str, Any]], Recipe]] = {
    "DDPMScheduler": _ddpm,
    "DDIMScheduler": _ddim,
    "LMSDiscreteScheduler": _k("LMSDiscreteScheduler", "lms", {"order": 4}, {},
                               {"order": "order"}, _full_table),
    "EulerDiscreteScheduler": _k("EulerDiscreteScheduler", "euler", {}, {}),
    "EulerAncestralDiscreteScheduler": _k("EulerAncestralDiscreteScheduler",
                                          "euler-ancestral", {"eta": 1.0}, {}),
    "DPMSolverMultistepScheduler": _multistep("DPMSolverMultistepScheduler"),
    "DEISMultistepScheduler": _multistep("DEISMultistepScheduler"),
    "UniPCMultistepScheduler": _multistep("UniPCMultistepScheduler"),
    "FlowMatchEulerDiscreteScheduler": _flow("FlowMatchEulerDiscreteScheduler", "euler"),
    "FlowMatchHeunDiscreteScheduler": _flow("FlowMatchHeunDiscreteScheduler", FlowHeun()),
    "HeunDiscreteScheduler": _k("HeunDiscreteScheduler", "heun", {}, {"clip_sample": False}),
    "PNDMScheduler": _pndm,
    "KDPM2DiscreteScheduler": _kdpm2,
    "DPMSolverSDEScheduler": _dpm_sde,
    "KDPM2AncestralDiscreteScheduler": lambda cfg: _kdpm2(
        cfg, "KDPM2AncestralDiscreteScheduler", "dpm-2-ancestral", {"eta": 1.0}),
    "DPMSolverSinglestepScheduler": _singlestep,
}


def recipe_for(cfg: dict[str, Any], class_name: str | None = None) -> Recipe:
    """The :class:`Recipe` of ``cfg`` as an instance of ``class_name`` (default: the config's
    ``_class_name``; a live scheduler's class is recorded there by :func:`.config.as_dict`)."""
    name = class_name or cfg.get("_class_name")
    if name is None:
        raise ValueError(
            "the config does not name its scheduler class (_class_name); pass the scheduler "
            "itself, scheduler_class='DDIMScheduler' (say), or solver=... for one of ours"
        )
    if name not in CLASSES:
        raise ValueError(
            f"diffusers scheduler class {name!r} is not reproduced by timestepper's Scheduler; "
            f"reproduced: {', '.join(CLASSES)}. Pass solver=... to sample this config's schedule "
            "with one of our solvers instead."
        )
    return CLASSES[name](cfg)

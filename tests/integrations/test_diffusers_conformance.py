"""``Scheduler.from_config(cfg)`` reproduces the config's diffusers class.

diffusers' own scheduler and ours run the same pipeline loop side by side (``_diffusers_harness``)
on the exact denoiser of a Gaussian mixture in float32, full loops and img2img-style loops that
start at ``timesteps[4]`` (``set_begin_index`` + ``add_noise``/``scale_noise``); the final samples
agree to <= 1e-5 relative, and the timesteps, ``sigmas`` and ``init_noise_sigma`` match.
"""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from tests.integrations._diffusers_harness import data, gmm_model, noise, rel_err, run
from timestepper.integrations.diffusers import Scheduler

diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
LEADING = {"timestep_spacing": "leading", "steps_offset": 1}
CASES = [
    ("DDPMScheduler", {}),  # clip_sample=True by default: the mixture's data reach |x| = 2
    ("DDPMScheduler", {"clip_sample": False, "timestep_spacing": "trailing"}),
    ("DDPMScheduler", {"thresholding": True, "sample_max_value": 1.5}),
    ("DDPMScheduler", {"variance_type": "fixed_large"}),  # noise sqrt(beta_t): a scale per step
    ("DDIMScheduler", {}),
    ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False, **LEADING, **SD}),
    ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    ("DDIMScheduler", {"timestep_spacing": "linspace", "clip_sample": False}),
    ("DDIMScheduler", {"thresholding": True}),
    ("LMSDiscreteScheduler", {}),
    ("LMSDiscreteScheduler", {**LEADING, **SD}),
    ("EulerDiscreteScheduler", {}),
    ("EulerDiscreteScheduler", {**LEADING, **SD}),
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    ("EulerDiscreteScheduler", {"use_exponential_sigmas": True}),
    ("EulerDiscreteScheduler", {"final_sigmas_type": "sigma_min", "timestep_spacing": "trailing"}),
    ("EulerAncestralDiscreteScheduler", {}),
    ("EulerAncestralDiscreteScheduler", {**LEADING, **SD}),
    ("DPMSolverMultistepScheduler", {}),
    ("DPMSolverMultistepScheduler", {**LEADING, **SD}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("DPMSolverMultistepScheduler", {"solver_order": 1, "timestep_spacing": "trailing"}),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
    ("DPMSolverMultistepScheduler", {"solver_type": "heun", "thresholding": True}),
    ("DPMSolverMultistepScheduler", {"lower_order_final": False, "final_sigmas_type": "sigma_min"}),
    ("DPMSolverMultistepScheduler", {"euler_at_final": True, "use_exponential_sigmas": True}),
    ("DPMSolverMultistepScheduler", {"euler_at_final": True, "final_sigmas_type": "sigma_min",
                                     "solver_order": 3}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),  # same noise draws
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 1}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun",
                                     **LEADING, **SD}),
    ("DEISMultistepScheduler", {}),
    ("DEISMultistepScheduler", {"solver_order": 3, "timestep_spacing": "trailing"}),
    ("UniPCMultistepScheduler", {}),
    ("UniPCMultistepScheduler", {"solver_order": 3, **LEADING, **SD}),
    ("UniPCMultistepScheduler", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
    ("UniPCMultistepScheduler", {"disable_corrector": [0, 2]}),
    ("EulerDiscreteScheduler", {"use_beta_sigmas": True, **SD}),
    ("DPMSolverMultistepScheduler", {"use_lu_lambdas": True, **SD}),
    ("UniPCMultistepScheduler", {"use_beta_sigmas": True}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0, "use_beta_sigmas": True}),
    ("FlowMatchEulerDiscreteScheduler", {}),
    ("FlowMatchHeunDiscreteScheduler", {}),  # Heun in x itself, from pure noise (s = 1)
    ("FlowMatchHeunDiscreteScheduler", {"shift": 3.0}),
    # multi-evaluation steps through the order-2 protocol (timesteps t0, t1, t1, t2, t2, ...)
    ("HeunDiscreteScheduler", {}),
    ("HeunDiscreteScheduler", {**LEADING, **SD}),
    ("HeunDiscreteScheduler", {"use_karras_sigmas": True}),
    ("DPMSolverSinglestepScheduler", {}),
    ("KDPM2DiscreteScheduler", {}),
    ("KDPM2DiscreteScheduler", {**LEADING, **SD}),
    ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    ("KDPM2AncestralDiscreteScheduler", {}),  # the same noise draws from the generator
    ("KDPM2AncestralDiscreteScheduler", {**LEADING, **SD}),
    ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True, "timestep_spacing": "trailing"}),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3}),
    ("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min",
                                      "solver_order": 3}),
    ("DPMSolverSinglestepScheduler", {"lower_order_final": False, "final_sigmas_type": "sigma_min"}),
    # torchsde's Brownian interval seeded by noise_sampler_seed, as the class draws it
    ("DPMSolverSDEScheduler", {"noise_sampler_seed": 3}),
    ("DPMSolverSDEScheduler", {"noise_sampler_seed": 5, **LEADING, **SD}),
    ("DPMSolverSDEScheduler", {"noise_sampler_seed": 7, "use_karras_sigmas": True}),
    ("PNDMScheduler", {"skip_prk_steps": True, **LEADING, **SD}),
    ("PNDMScheduler", {"steps_offset": 1}),  # the Runge-Kutta warm-up: 19 timesteps for 10 steps
]
EPSILON_ONLY = ("FlowMatch", "PNDM")
STATEFUL_SCALING = ("KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler")
PREDICTIONS = ["epsilon", "v_prediction", "sample"]


def _pair(name, kwargs, prediction):
    if name.startswith(EPSILON_ONLY) and prediction != "epsilon":
        pytest.skip("flow matching models predict velocity; PNDM's v_prediction is refused")
    flow = name.startswith("FlowMatch")
    extra = {} if flow else {"prediction_type": prediction}
    ref = getattr(diffusers, name)(**kwargs, **extra)
    return ref, Scheduler.from_config(ref), gmm_model(dict(ref.config), prediction, flow)


def _reference(name, prediction, ref, model, **loop):
    """diffusers' result, or a skip where its class has no such prediction type."""
    try:
        return run(ref, model, 10, **loop)
    except NotImplementedError:
        pytest.skip(f"diffusers' {name} does not implement prediction_type={prediction}")


def _ids(cases):
    return [f"{c[0].replace('Scheduler', '')}-{i}" for i, c in enumerate(cases)]


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_full_loop_reproduces_the_class(case, prediction):
    name, kwargs = case
    ref, ours, model = _pair(name, kwargs, prediction)
    x_ref = _reference(name, prediction, ref, model)
    x_ours = run(ours, model, 10)
    assert rel_err(x_ours, x_ref) <= 1e-5
    assert ours.timesteps.dtype == ref.timesteps.dtype
    torch.testing.assert_close(ours.timesteps, ref.timesteps, rtol=1e-6, atol=0)  # exact if int
    assert float(ours.init_noise_sigma) == pytest.approx(float(getattr(ref, "init_noise_sigma", 1.0)), rel=1e-6)
    if hasattr(ref, "sigmas"):
        torch.testing.assert_close(ours.sigmas, ref.sigmas.float(), rtol=1e-6, atol=0)
    x = noise()
    t = ref.timesteps[3]
    ref._step_index = ours._step_index = None
    if name in STATEFUL_SCALING:
        # these classes scale by the state their last step left (KDPM2-ancestral: "inside a
        # second-order step" after the loop; DPMSolverSDE: the grid sigma at a stage's
        # timestep outside a step); a pipeline calls scale_model_input only inside its loop,
        # which the loop above checks: compare at a step's start on a fresh schedule
        ref.set_timesteps(10)
        t = ref.timesteps[4]
    torch.testing.assert_close(ours.scale_model_input(x, t), ref.scale_model_input(x, t) if hasattr(
        ref, "scale_model_input") else x, rtol=1e-6, atol=0)


PARTIAL = CASES  # every class's own mid-schedule behaviour is reproduced (mid_schedule="diffusers")
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("case", PARTIAL, ids=_ids(PARTIAL))
def test_img2img_loop_reproduces_the_class(case, prediction):
    """The loop of img2img / inpainting with strength 0.6: slice, set_begin_index, add_noise."""
    name, kwargs = case
    ref, ours, model = _pair(name, kwargs, prediction)
    x_ref = _reference(name, prediction, ref, model, begin=4)
    assert rel_err(run(ours, model, 10, begin=4), x_ref) <= 1e-5


def test_dpm_solver_sde_noise_is_the_seeded_brownian_interval():
    """The noise matters: another noise_sampler_seed gives another sample; no seed draws one
    from torch's global RNG at the first step, as diffusers does."""
    ref = diffusers.DPMSolverSDEScheduler(noise_sampler_seed=3)
    model = gmm_model(dict(ref.config), "epsilon")
    x_ref = run(ref, model, 6)
    other = run(Scheduler.from_config(diffusers.DPMSolverSDEScheduler(noise_sampler_seed=4)), model, 6)
    assert rel_err(other, x_ref) > 1e-3
    torch.manual_seed(11)
    x_ref = run(diffusers.DPMSolverSDEScheduler(), model, 6)
    torch.manual_seed(11)
    assert rel_err(run(Scheduler.from_config(diffusers.DPMSolverSDEScheduler()), model, 6), x_ref) <= 1e-5


def test_partial_loop_without_set_begin_index_starts_at_the_first_timestep():
    """Older pipelines only slice ``timesteps``: the first ``timestep`` handed to ``step`` says
    where the loop starts."""
    ref = diffusers.EulerDiscreteScheduler(**SD)
    model = gmm_model(dict(ref.config), "epsilon")
    ours = Scheduler.from_config(ref)
    ours.set_timesteps(10)
    x0 = noise() * float(ours.sigmas[4])
    x = x0.clone()
    for t in ours.timesteps[4:]:
        x = ours.step(model(ours.scale_model_input(x, t), t), t, x).prev_sample
    ref.set_timesteps(10)
    y = x0.clone()
    for t in ref.timesteps[4:]:
        y = ref.step(model(ref.scale_model_input(y, t), t), t, y).prev_sample
    assert rel_err(x, y) <= 1e-5


MID_CASES = [("LMSDiscreteScheduler", {}), ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
             ("DPMSolverSinglestepScheduler", {"solver_order": 3}),
             ("DPMSolverSinglestepScheduler", {"solver_order": 3, "lower_order_final": False,
                                               "final_sigmas_type": "sigma_min"}),
             ("DPMSolverSinglestepScheduler", {})]


@pytest.mark.parametrize("case", MID_CASES, ids=_ids(MID_CASES))
def test_mid_schedule_quirks_at_every_start(case):
    """LMS started at step ``b`` uses the full schedule's order-``min(b + 1, 4)`` weights on a
    history that starts empty; singlestep DPM-Solver keeps the full schedule's grouping (a
    partial group at the start ramps up from first order). Reproduced at every start by default;
    ``mid_schedule="restart"`` is the method started afresh, which differs."""
    name, kwargs = case
    ref, ours, model = _pair(name, kwargs, "epsilon")
    restart = Scheduler.from_config(ref, mid_schedule="restart")
    differs = 0.0
    for begin in range(1, 10):
        x_ref = run(ref, model, 10, begin=begin)
        assert rel_err(run(ours, model, 10, begin=begin), x_ref) <= 1e-5, begin
        differs = max(differs, rel_err(run(restart, model, 10, begin=begin), x_ref))
    assert differs > 1e-3


def test_restart_is_the_method_on_the_remaining_grid():
    """``mid_schedule="restart"``: LMS from step 4 is LMS warmed up from order 1 on the grid
    from there: a loop that starts at step 4 of the same scheduler after ``set_begin_index``
    equals one driven without it (from the first timestep), and the option is saved."""
    ref = diffusers.LMSDiscreteScheduler()
    model = gmm_model(dict(ref.config), "epsilon")
    restart = Scheduler.from_config(ref, mid_schedule="restart")
    assert restart.config["ts_mid_schedule"] == "restart"
    assert Scheduler.from_config(restart.config).mid_schedule == "restart"
    x_mid = run(restart, model, 10, begin=4)
    restart.set_timesteps(10)
    x = restart.add_noise(data(), noise(), restart.timesteps[4:5])
    for t in restart.timesteps[4:]:
        x = restart.step(model(restart.scale_model_input(x, t), t), t, x).prev_sample
    torch.testing.assert_close(x, x_mid, rtol=0, atol=0)
    with pytest.raises(ValueError, match="mid_schedule must be one of"):
        Scheduler.from_config(ref, mid_schedule="fresh")


ZERO_SNR = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", **SD}
ZERO_SNR_CLASSES = ["DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler",
                    "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
                    "UniPCMultistepScheduler"]


@pytest.mark.parametrize("begin", [None, 4])
@pytest.mark.parametrize("name", ZERO_SNR_CLASSES)
def test_zero_terminal_snr(name, begin):
    """``rescale_betas_zero_snr`` (Lin et al. 2024) with trailing spacing and v-prediction: the
    first step starts at pure noise (``alphas_cumprod = 0``; ``2**-24`` in the sigma classes)."""
    ref, ours, model = _pair(name, {**ZERO_SNR, "clip_sample": False}
                             if name.startswith("DD") else ZERO_SNR, "v_prediction")
    assert rel_err(run(ours, model, 10, begin=begin), run(ref, model, 10, begin=begin)) <= 1e-5


def test_zero_terminal_snr_with_noise_prediction_at_pure_noise_raises():
    ours = Scheduler.from_config(diffusers.DDIMScheduler(**ZERO_SNR))
    with pytest.raises(ValueError, match="no data estimate there"):
        ours.set_timesteps(10)
    ours = Scheduler.from_config(diffusers.DDIMScheduler(**{**ZERO_SNR, **LEADING}))
    ours.set_timesteps(10)  # leading spacing never reaches the last training step


def test_timestep_off_the_grid_raises():
    ours = Scheduler.from_config(diffusers.EulerDiscreteScheduler())
    ours.set_timesteps(10)
    with pytest.raises(ValueError, match="not one of this scheduler's timesteps"):
        ours.step(torch.zeros(1, 2), 500.5, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="begin_index"):
        ours.set_begin_index(10)


def test_unreproduced_options_and_classes_raise():
    with pytest.raises(ValueError, match="solver_order=3 is not reproduced: diffusers weights the "
                                         "second difference"):
        Scheduler.from_config(diffusers.DPMSolverMultistepScheduler(
            algorithm_type="sde-dpmsolver++", solver_order=3))
    with pytest.raises(ValueError, match="returns inf"):
        Scheduler.from_config(diffusers.UniPCMultistepScheduler(lower_order_final=False))
    euler_final = Scheduler.from_config(diffusers.DPMSolverMultistepScheduler(
        euler_at_final=True, final_sigmas_type="sigma_min"))
    euler_final.set_timesteps(20)
    with pytest.raises(ValueError, match="lowers only the last step to first order"):
        euler_final.step(torch.zeros(1, 2), euler_final.timesteps[0], torch.zeros(1, 2))
    with pytest.raises(ValueError, match="square root of log"):
        Scheduler.from_config(diffusers.DDPMScheduler(variance_type="fixed_large_log"))
    with pytest.raises(ValueError, match="adds noise of variance beta_t on its last step"):
        Scheduler.from_config(diffusers.DDPMScheduler(variance_type="fixed_large",
                                                      steps_offset=1)).set_timesteps(10)
    with pytest.raises(ValueError, match="'CMStochasticIterativeScheduler' is not reproduced"):
        Scheduler.from_config(diffusers.CMStochasticIterativeScheduler())
    with pytest.raises(ValueError, match="_class_name"):
        Scheduler.from_config({"num_train_timesteps": 1000})
    sched = Scheduler.from_config(diffusers.EulerDiscreteScheduler())
    sched.set_timesteps(4)
    t = sched.timesteps[0]
    with pytest.raises(ValueError, match="s_churn"):
        sched.step(torch.zeros(1, 2), t, torch.zeros(1, 2), s_churn=1.0)


def test_half_precision_step_upcasts_like_diffusers():
    ref = diffusers.DPMSolverMultistepScheduler(**SD)
    model = gmm_model(dict(ref.config), "epsilon")
    outs = []
    for sched in (ref, Scheduler.from_config(ref)):
        sched.set_timesteps(6)
        x = noise().to(torch.bfloat16)
        for t in sched.timesteps:
            m = model(x.float(), t).to(torch.bfloat16)
            x = sched.step(m, t, x).prev_sample
            assert x.dtype == torch.bfloat16
        outs.append(x.float())
    assert rel_err(outs[1], outs[0]) <= 2e-2  # bf16 storage between steps, float32 inside


PNDM_CONFIGS = [{"skip_prk_steps": True, **LEADING, **SD},
                {"skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "trailing"},
                {"skip_prk_steps": True, "set_alpha_to_one": True, **LEADING},
                {"steps_offset": 1, **SD}]


@pytest.mark.parametrize("kwargs", PNDM_CONFIGS)
@pytest.mark.parametrize("begin", [1, 2, 7])
def test_pndm_partial_loops_follow_the_call_counter(kwargs, begin):
    """PNDM has no step index: a sliced loop (``order`` 1, ``timesteps[t_start:]``) restarts its
    call counter on a later timestep; begin 1 evaluates the warm-up's second call at a level the
    sample is not at, later begins lag the labels one step behind the sample."""
    ref = diffusers.PNDMScheduler(**kwargs)
    ours = Scheduler.from_config(ref)
    model = gmm_model(dict(ref.config), "epsilon")
    x_ref = run(ref, model, 10, begin=begin)
    assert ours.order == ref.order == 1
    assert rel_err(run(ours, model, 10, begin=begin), x_ref) <= 1e-5


def test_our_warm_up_solver_refuses_mid_start():
    """Our own PLMS (``solver="plms"``, not reproducing the class) has no call counter: its
    warm-up would need evaluations the sliced timesteps do not list."""
    ref = diffusers.PNDMScheduler(skip_prk_steps=True, **LEADING)
    with pytest.raises(ValueError, match="cannot start mid-schedule"):
        run(Scheduler.from_config(ref, solver="plms"), gmm_model(dict(ref.config), "epsilon"), 10,
            begin=4)


def test_pndm_options_still_refused():
    with pytest.raises(ValueError, match="Runge-Kutta warm-up at 9 steps"):
        Scheduler.from_config(diffusers.PNDMScheduler(steps_offset=1)).set_timesteps(9)
    with pytest.raises(ValueError, match="prediction_type='v_prediction'"):
        Scheduler.from_config(diffusers.PNDMScheduler(prediction_type="v_prediction"))


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "DDPMScheduler",
                                  "EulerDiscreteScheduler"])
def test_custom_timesteps(name):
    """``set_timesteps(timesteps=[...])`` (``pipe(..., timesteps=[...])``)."""
    ref = getattr(diffusers, name)(**SD)
    model = gmm_model(dict(ref.config), "epsilon")
    kw = {"timesteps": [999, 800, 500, 200, 50]}
    x_ref = run(ref, model, None, set_kwargs=kw)
    ours = Scheduler.from_config(ref)
    assert rel_err(run(ours, model, None, set_kwargs=kw), x_ref) <= 1e-5
    torch.testing.assert_close(ours.timesteps.double(), ref.timesteps.double(), rtol=0, atol=0)


def test_euler_continuous_timesteps_for_v_prediction():
    """``timestep_type="continuous"`` with v-prediction: the model gets ``0.25 log sigma``."""
    ref = diffusers.EulerDiscreteScheduler(timestep_type="continuous", prediction_type="v_prediction")
    ours = Scheduler.from_config(ref)
    ref.set_timesteps(7)
    ours.set_timesteps(7)
    torch.testing.assert_close(ours.timesteps, ref.timesteps, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.sigmas, ref.sigmas, rtol=1e-6, atol=0)


def test_flow_heun_needs_a_rectified_flow():
    from timestepper.integrations.diffusers.flow_heun import FlowHeun

    ours = Scheduler(ts.VPDiscreteSchedule.from_betas(), "epsilon", FlowHeun())
    with pytest.raises(ValueError, match="flow-heun steps the state of a RectifiedFlowSchedule"):
        ours.set_timesteps(4)

"""Tiny random pipelines run end to end with diffusers' scheduler and with ours reproducing it
(``Scheduler.from_config``): same latents to float32 rounding. Also: a pipeline saved with our
scheduler reloads it (``model_index.json`` names our module)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.integrations import _tiny_pipelines as tp
from timestepper.integrations.diffusers import Scheduler

diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)
TOL = 1e-5


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).abs().max() / b.abs().max())


def _both(make_pipe, scheduler, call):
    """Run the pipeline with diffusers' scheduler and with ours (from its config)."""
    outs = []
    for sched in (scheduler, Scheduler.from_config(scheduler)):
        pipe = make_pipe(sched)
        pipe.set_progress_bar_config(disable=True)
        outs.append(call(pipe))
    return outs


def _gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("cls", ["DDPMScheduler", "DDIMScheduler"])
def test_ddpm_and_ddim_pipelines(cls):
    """clip_sample=True (the default of these configs) included."""
    unet = tp.unet2d()
    pipe_cls = diffusers.DDPMPipeline if cls == "DDPMScheduler" else diffusers.DDIMPipeline
    ref, ours = _both(lambda s: pipe_cls(unet=unet, scheduler=s), getattr(diffusers, cls)(),
                      lambda p: p(batch_size=2, num_inference_steps=10, generator=_gen(),
                                  output_type="np").images)
    assert abs(ours - ref).max() <= 1e-5


SD_SCHEDULERS = ["PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                 "DPMSolverMultistepScheduler", "DDIMScheduler", "UniPCMultistepScheduler",
                 "LMSDiscreteScheduler", "HeunDiscreteScheduler"]


def _sd_scheduler(name):
    base = diffusers.PNDMScheduler(skip_prk_steps=True, **tp.SD_SCHEDULE)
    return getattr(diffusers, name).from_config(base.config)


@pytest.mark.parametrize("name", SD_SCHEDULERS)
def test_stable_diffusion_txt2img(name):
    ref, ours = _both(lambda s: tp.sd(scheduler=s), _sd_scheduler(name),
                      lambda p: p(**tp.prompt(), num_inference_steps=8, guidance_scale=1.0,
                                  height=16, width=16, generator=_gen(),
                                  output_type="latent").images)
    assert _rel(ours, ref) <= TOL


@pytest.mark.parametrize("name", [n for n in SD_SCHEDULERS if n != "PNDMScheduler"])
def test_stable_diffusion_img2img_strength(name):
    """strength 0.6: the loop starts at timesteps[t_start * order] after set_begin_index."""
    ref, ours = _both(lambda s: tp.sd(diffusers.StableDiffusionImg2ImgPipeline, scheduler=s),
                      _sd_scheduler(name),
                      lambda p: p(**tp.prompt(), image=tp.image(), strength=0.6,
                                  num_inference_steps=8, guidance_scale=1.0, generator=_gen(),
                                  output_type="latent").images)
    assert _rel(ours, ref) <= TOL


@pytest.mark.parametrize("channels", [4, 9])
def test_stable_diffusion_inpaint(channels):
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1.0
    ref, ours = _both(
        lambda s: tp.sd(diffusers.StableDiffusionInpaintPipeline, in_channels=channels, scheduler=s),
        _sd_scheduler("EulerDiscreteScheduler"),
        lambda p: p(**tp.prompt(), image=tp.image(), mask_image=mask, strength=0.75,
                    num_inference_steps=8, guidance_scale=1.0, height=16, width=16,
                    generator=_gen(), output_type="latent").images)
    assert _rel(ours, ref) <= TOL


@pytest.mark.parametrize("strength", [0.6, 0.3])
def test_pndm_img2img_reproduces_the_call_counter(strength):
    """SD 1.5's shipped scheduler (PNDM, skip_prk_steps) in img2img: diffusers places each call
    by its counter and the sliced timesteps (the labels lag the sample after the warm-up step);
    ours follows it call by call."""
    ref, ours = _both(lambda s: tp.sd(diffusers.StableDiffusionImg2ImgPipeline, scheduler=s),
                      _sd_scheduler("PNDMScheduler"),
                      lambda p: p(**tp.prompt(), image=tp.image(), strength=strength,
                                  num_inference_steps=8, guidance_scale=1.0, generator=_gen(),
                                  output_type="latent").images)
    assert _rel(ours, ref) <= TOL


def test_timesteps_and_sigmas_arguments_reach_the_scheduler():
    ref, ours = _both(lambda s: tp.sd(scheduler=s), _sd_scheduler("EulerDiscreteScheduler"),
                      lambda p: p(**tp.prompt(), sigmas=[14.0, 6.0, 2.5, 1.0, 0.3],
                                  guidance_scale=1.0, height=16, width=16, generator=_gen(),
                                  output_type="latent").images)
    assert _rel(ours, ref) <= TOL


def test_save_pretrained_round_trip(tmp_path):
    sched = Scheduler.from_config(_sd_scheduler("DPMSolverMultistepScheduler"), solver="dpmpp-3m",
                                  grid="logsnr")
    pipe = tp.sd(scheduler=sched)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["timestepper.integrations.diffusers.mixin", "Scheduler"]
    again = diffusers.StableDiffusionPipeline.from_pretrained(
        tmp_path, safety_checker=None, text_encoder=None, tokenizer=None, feature_extractor=None)
    assert type(again.scheduler) is type(sched)
    assert again.scheduler.config.ts_solver == "dpmpp-3m"
    assert again.scheduler.config.ts_grid == "logsnr"
    run = lambda p: p(**tp.prompt(), num_inference_steps=6, guidance_scale=1.0, height=16,  # noqa: E731
                      width=16, generator=_gen(), output_type="latent").images
    pipe.set_progress_bar_config(disable=True)
    again.set_progress_bar_config(disable=True)
    assert _rel(run(again), run(pipe)) <= TOL  # reloaded weights: float32 rounding
    assert "DPMSolverMultistepScheduler" in [c.__name__ for c in sched.compatibles]


def test_reproducing_scheduler_round_trips_too(tmp_path):
    sched = Scheduler.from_config(_sd_scheduler("EulerDiscreteScheduler"))
    sched.save_pretrained(tmp_path)
    again = type(sched).from_pretrained(tmp_path)
    assert again.recipe is not None and again.recipe.class_name == "EulerDiscreteScheduler"
    again.set_timesteps(5)
    sched.set_timesteps(5)
    torch.testing.assert_close(again.timesteps, sched.timesteps, rtol=0, atol=0)


def test_sd3_pipeline_flow_matching():
    ref, ours = _both(tp.sd3, diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
                      lambda p: p(**tp.pooled(), num_inference_steps=6, guidance_scale=1.0,
                                  height=16, width=16, generator=_gen(),
                                  output_type="latent").images)
    assert _rel(ours, ref) <= TOL


def test_flux_pipeline_dynamic_shifting_and_custom_sigmas():
    """FluxPipeline calls set_timesteps(sigmas=linspace(1, 1/N, N), mu=...) unguarded."""
    sched = diffusers.FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096)
    ref, ours = _both(tp.flux, sched,
                      lambda p: p(**tp.pooled(), num_inference_steps=6, guidance_scale=1.0,
                                  height=16, width=16, generator=_gen(),
                                  output_type="latent").images)
    assert _rel(ours, ref) <= TOL


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                  "HeunDiscreteScheduler"])
def test_sdxl_with_refiner_handoff(name):
    """The base stops at denoising_end=0.7, the refiner starts there (denoising_start)."""
    outs = []
    for ours in (False, True):
        ref = getattr(diffusers, name)(**tp.SD_SCHEDULE)
        make = (lambda r=ref: Scheduler.from_config(r)) if ours else (
            lambda r=ref: type(r).from_config(r.config))
        g = _gen()
        lat = tp.sdxl(make())(**tp.pooled(), num_inference_steps=10, denoising_end=0.7,
                              guidance_scale=1.0, height=16, width=16, generator=g,
                              output_type="latent").images
        out = tp.sdxl(make(), refiner=True)(**tp.pooled(), image=lat, num_inference_steps=10,
                                            denoising_start=0.7, guidance_scale=1.0,
                                            generator=g, output_type="latent").images
        outs.append((lat, out))
    assert _rel(outs[1][0], outs[0][0]) <= TOL
    assert _rel(outs[1][1], outs[0][1]) <= TOL

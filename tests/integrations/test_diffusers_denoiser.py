"""``Denoiser.from_diffusers`` on pipeline components with their conditioning: ``ts.sample`` on
the denoiser gives what the pipeline gives with our Scheduler running the same solver and grid
(same starting latents)."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from tests.integrations import _tiny_pipelines as tp
from timestepper.integrations.diffusers import Scheduler

diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_unet2d_condition_with_encoder_hidden_states():
    base = diffusers.EulerDiscreteScheduler(**tp.SD_SCHEDULE)
    pipe = tp.sd(scheduler=Scheduler.from_config(base, solver="dpmpp-2m", grid="logsnr"))
    cond = tp.prompt()
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    via_pipe = pipe(**cond, latents=noise, num_inference_steps=6, guidance_scale=1.0, height=16,
                    width=16, output_type="latent").images
    den = ts.Denoiser.from_diffusers(pipe.unet, base,
                                     model_kwargs={"encoder_hidden_states": cond["prompt_embeds"]})
    with torch.no_grad():
        direct = ts.sample(den, noise, "dpmpp-2m", 6, grid="logsnr")
    assert _rel(direct, via_pipe) <= 1e-5


def test_sd3_transformer_is_a_velocity_flow():
    pipe = tp.sd3(Scheduler(ts.RectifiedFlowSchedule(), "velocity", "dpmpp-2m",
                            grid_options={"shift": 3.0}))
    cond = tp.pooled()
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    via_pipe = pipe(**cond, latents=noise, num_inference_steps=6, guidance_scale=1.0, height=16,
                    width=16, output_type="latent").images
    den = ts.Denoiser.from_diffusers(pipe.transformer, model_kwargs={
        "encoder_hidden_states": cond["prompt_embeds"], "pooled_projections": cond["pooled_prompt_embeds"]})
    assert isinstance(den.schedule, ts.RectifiedFlowSchedule) and den.prediction == "velocity"
    with torch.no_grad():
        direct = ts.sample(den, noise, "dpmpp-2m", 6, grid="uniform", shift=3.0)
    assert torch.isfinite(direct).all()
    assert _rel(direct, via_pipe) <= 1e-5


def test_flux_transformer_on_packed_latents():
    cfg = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    pipe = tp.flux(Scheduler.from_config(cfg, solver="euler"))
    cond = tp.pooled()
    g = torch.Generator().manual_seed(1)
    packed, ids = pipe.prepare_latents(1, 1, 16, 16, torch.float32, "cpu", g, None)  # 2x2 patches
    sigmas = torch.linspace(1.0, 1 / 6, 6)
    via_pipe = pipe(**cond, latents=packed.clone(), sigmas=sigmas.tolist(), num_inference_steps=6,
                    guidance_scale=1.0, height=16, width=16, output_type="latent").images
    txt_ids = torch.zeros(cond["prompt_embeds"].shape[1], 3)
    den = ts.Denoiser.from_diffusers(pipe.transformer, model_kwargs={
        "encoder_hidden_states": cond["prompt_embeds"], "pooled_projections": cond["pooled_prompt_embeds"],
        "img_ids": ids, "txt_ids": txt_ids, "guidance": None})
    mu = diffusers.pipelines.flux.pipeline_flux.calculate_shift(packed.shape[1])
    shift = float(torch.exp(torch.tensor(mu)))
    grid = shift * sigmas.double() / (1 + (shift - 1) * sigmas.double())
    with torch.no_grad():
        direct = ts.sample(den, packed.clone(), "euler", 6, grid=grid)
    assert _rel(direct, via_pipe) <= 1e-5

import pytest
import torch

import timestepper as ts
from timestepper.integrations.diffusers import Scheduler, schedule_from_config

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def _loop(unet, sched, x, steps):
    """The loop of diffusers' DDPMPipeline.__call__."""
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        with torch.no_grad():
            out = unet(x, t).sample
        x = sched.step(out, t, x).prev_sample
    return x


def _noise():
    return torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=2e-6 * float(b.abs().max()))


def test_parity_diffusers_ddim_scheduler(unet):
    cfg = diffusers.DDPMScheduler(num_train_timesteps=1000).config
    ref = _loop(
        unet,
        diffusers.DDIMScheduler.from_config(cfg, clip_sample=False, set_alpha_to_one=True),
        _noise(),
        10,
    )
    ours = _loop(unet, Scheduler.from_config(cfg, solver="ddim"), _noise(), 10)
    _close(ours, ref)


def test_parity_diffusers_dpmsolver_multistep_scheduler(unet):
    cfg = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    ).config
    ref_sched = diffusers.DPMSolverMultistepScheduler.from_config(cfg, final_sigmas_type="zero")
    ref = _loop(unet, ref_sched, _noise(), 8)
    ours = _loop(unet, Scheduler.from_config(ref_sched.config, solver="dpmpp-2m"), _noise(), 8)
    _close(ours, ref)


def test_from_diffusers_matches_the_scheduler_path(unet):
    cfg = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction").config
    den = ts.integrations.diffusers.denoiser_from_diffusers(unet, cfg)
    assert den.prediction == "v_prediction"
    with torch.no_grad():
        direct = ts.sample(den, _noise(), "dpmpp-2m", 6, grid="leading")
    via_scheduler = _loop(unet, Scheduler.from_config(cfg, solver="dpmpp-2m"), _noise(), 6)
    torch.testing.assert_close(direct, via_scheduler, rtol=0, atol=0)


def test_schedule_from_config_reproduces_alphas_cumprod():
    for kw in (
        {},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        {"beta_schedule": "squaredcos_cap_v2"},
    ):
        ref = diffusers.DDPMScheduler(num_train_timesteps=1000, **kw)
        ours = schedule_from_config(ref.config)
        torch.testing.assert_close(
            ours.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-5, atol=0
        )


def test_scheduler_in_ddpm_pipeline(unet):
    pipe = diffusers.DDPMPipeline(
        unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000)
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = Scheduler.from_config(pipe.scheduler.config, solver="dpmpp-2m")
    out = pipe(
        batch_size=2,
        num_inference_steps=5,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (2, 8, 8, 1)
    assert pipe.scheduler.timesteps.tolist() == [800, 600, 400, 200, 0]  # "leading" spacing
    # the pipeline's images are our sampler's output, mapped to [0, 1]
    torch.manual_seed(0)
    x = diffusers.utils.torch_utils.randn_tensor(
        (2, 1, 8, 8), generator=torch.Generator().manual_seed(0)
    )
    ours = _loop(unet, Scheduler.from_config(pipe.scheduler.config, solver="dpmpp-2m"), x, 5)
    want = (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert abs(out - want).max() < 1e-6


def test_scheduler_errors():
    cfg = {"num_train_timesteps": 1000}
    with pytest.raises(ValueError, match="is not a diffusion sampler"):
        Scheduler.from_config(cfg, solver="etd1")
    with pytest.raises(ValueError, match="chooses its own steps"):
        Scheduler.from_config(cfg, solver="dpm-adaptive")
    sched = Scheduler.from_config(cfg, solver="ddim")
    with pytest.raises(RuntimeError, match="set_timesteps"):
        sched.step(torch.zeros(1, 2), 999, torch.zeros(1, 2))
    sched.set_timesteps(2)
    for t in sched.timesteps:
        sched.step(torch.zeros(1, 2), t, torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match="more than"):
        sched.step(torch.zeros(1, 2), 0, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="prediction_type"):
        Scheduler.from_config({"prediction_type": "mu"}, solver="ddim")


def test_from_k_diffusion_wraps_a_sigma_denoiser():
    class KModel(torch.nn.Module):
        sigma_min, sigma_max = 0.03, 14.6

        def forward(self, x, sigma):  # exact denoiser of N(0, c^2): D = c^2 x / (c^2 + sigma^2)
            s = sigma.view(-1, *([1] * (x.ndim - 1)))
            return 0.25 * x / (0.25 + s * s)

    den = ts.integrations.k_diffusion.denoiser_from_k_diffusion(KModel())
    assert isinstance(den.schedule, ts.EDMSchedule) and den.prediction == "sample"
    assert den.schedule.t_max == 14.6
    # PF-ODE of a Gaussian: x(0) = x(s_max) * c / sqrt(c^2 + s_max^2) exactly
    noise = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = ts.sample(den, noise, "heun", 40, grid="karras")
    x_T = noise * (1 + 14.6**2) ** 0.5
    want = x_T * 0.5 / (0.25 + 14.6**2) ** 0.5
    torch.testing.assert_close(out, want, rtol=0, atol=3e-3)
    with pytest.raises(ValueError, match="sigma_min"):
        ts.integrations.k_diffusion.denoiser_from_k_diffusion(lambda x, s: x)


def test_scheduler_with_a_log_snr_grid_gives_float_timesteps(unet):
    cfg = diffusers.DDPMScheduler(num_train_timesteps=1000).config
    sched = Scheduler.from_config(cfg, solver="dpmpp-2m", grid="logsnr")
    sched.set_timesteps(6)
    assert sched.timesteps.dtype == torch.float32 and len(sched.timesteps) == 6
    den = ts.integrations.diffusers.denoiser_from_diffusers(unet, cfg)
    with torch.no_grad():
        direct = ts.sample(den, _noise(), "dpmpp-2m", 6, grid="logsnr")
    torch.testing.assert_close(_loop(unet, sched, _noise(), 6), direct, rtol=0, atol=0)

"""Parity of the foundation solvers with diffusers and k-diffusion, same model, same grid, float64.

diffusers' schedulers are driven with their own ``set_timesteps``/``step`` loop; ours receives the
peer's timesteps as an explicit grid (final step to sigma = 0 appended, as the peers do) and a
schedule built from the peer's ``alphas_cumprod``. Max abs difference must be <= 1e-6.

Two things keep the comparison about the algorithm rather than the peer's rounding:
diffusers keeps its tables (``alphas_cumprod``, ``sigmas``) in float32 whatever the model's dtype,
and :func:`promote_tables` recomputes them in float64 from the same betas at the same timesteps;
and its Euler and DPM-Solver ``step`` cast the state to float32 before updating it (relative error
~6e-8 per step), so the models have unit-scale outputs: the exact mixture (epsilon prediction) and
the random UNet read as a v-prediction model (an epsilon reading would give |x0| ~ 200).
"""

import math

import pytest
import torch

import timestepper as ts
from tests.conftest import unet_model_fn

diffusers = pytest.importorskip("diffusers")
F64 = torch.float64
TOL = 1e-6


def promote_tables(peer):
    """Recompute a diffusers scheduler's float32 tables in float64 (same values, no rounding)."""
    ac = (1 - peer.betas.double()).cumprod(0)
    peer.alphas_cumprod = ac
    if hasattr(peer, "final_alpha_cumprod"):
        peer.final_alpha_cumprod = torch.tensor(1.0, dtype=F64)
    if getattr(peer, "sigmas", None) is not None and getattr(peer, "num_inference_steps", None):
        full = ((1 - ac) / ac).sqrt()
        t = peer.timesteps.double()
        lo = t.floor().long().clamp(0, len(ac) - 1)
        hi = (lo + 1).clamp(max=len(ac) - 1)
        w = t - lo
        inner = full[lo] * (1 - w) + full[hi] * w  # the peers interpolate sigma linearly in t
        peer.sigmas = torch.cat([inner, peer.sigmas[len(inner):].double()])
    return peer


def _cases(gmm2, tiny_unet, schedule):
    """(label, prediction, model_fn(x, t), noise) for the exact mixture and the tiny UNet."""
    gmm_eps = gmm2.denoiser(schedule, "epsilon")
    g = torch.Generator().manual_seed(0)
    return [
        ("gmm", "epsilon", lambda x, t: gmm_eps(x, t.reshape(-1).expand(x.shape[0])),
         torch.randn(64, 2, generator=g, dtype=F64)),
        ("unet", "v_prediction", unet_model_fn(tiny_unet), torch.randn(2, 2, 8, 8, generator=g, dtype=F64)),
    ]


def _run_diffusers(peer, model_fn, noise):
    # Same initial state as ours (``noise`` in the VP state). The Euler scheduler's state is
    # x / alpha, and its own init_noise_sigma is sigma_max (not sqrt(sigma_max^2 + 1)) under the
    # "trailing" and "linspace" spacings, so it is not used here.
    x = noise
    if isinstance(peer, diffusers.EulerDiscreteScheduler):
        x = noise * math.sqrt(1 + float(peer.sigmas.max()) ** 2)
    for t in peer.timesteps:
        x = peer.step(model_fn(peer.scale_model_input(x, t), t), t, x).prev_sample
    return x


def _check(make_peer, steps, solver, gmm2, tiny_unet):
    for label, prediction, fn, noise in _cases(gmm2, tiny_unet, ts.VPDiscreteSchedule.from_betas("linear")):
        peer = make_peer(prediction)
        peer.set_timesteps(steps)
        promote_tables(peer)
        ref = _run_diffusers(peer, fn, noise)
        den = ts.Denoiser(fn, ts.VPDiscreteSchedule(peer.alphas_cumprod), prediction)
        out = ts.sample(den, noise, solver, grid=peer.timesteps.to(F64))
        assert (out - ref).abs().max() <= TOL, (label, float((out - ref).abs().max()))


@pytest.mark.parametrize("steps", [5, 10])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_parity_diffusers_ddim(gmm2, tiny_unet, steps, spacing):
    def make(pred):
        return diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                                       timestep_spacing=spacing, prediction_type=pred)

    _check(make, steps, "ddim", gmm2, tiny_unet)


@pytest.mark.parametrize("steps", [6, 12])
def test_parity_diffusers_euler(gmm2, tiny_unet, steps):
    def make(pred):
        return diffusers.EulerDiscreteScheduler(beta_schedule="linear", timestep_spacing="trailing",
                                                prediction_type=pred)

    _check(make, steps, "euler", gmm2, tiny_unet)


@pytest.mark.parametrize("steps", [8, 20])
def test_parity_diffusers_dpmpp_2m(gmm2, tiny_unet, steps):
    def make(pred):
        return diffusers.DPMSolverMultistepScheduler(beta_schedule="linear", algorithm_type="dpmsolver++",
                                                     solver_order=2, lower_order_final=True, prediction_type=pred)

    _check(make, steps, ts.solvers.get("dpmpp-2m", lower_order_final=True), gmm2, tiny_unet)


@pytest.mark.parametrize("name,kfn", [("euler", "sample_euler"), ("heun", "sample_heun"),
                                      ("dpmpp-2m", "sample_dpmpp_2m")])
def test_parity_k_diffusion(gmm2, tiny_unet, k_sampling, name, kfn):
    """k-diffusion's samplers on EDM sigmas (Karras grid with an appended 0), denoiser D(x, sigma)."""
    edm = ts.EDMSchedule(0.002, 80.0)
    gmm_x0 = gmm2.denoiser(edm, "sample")
    unet = unet_model_fn(tiny_unet)
    g = torch.Generator().manual_seed(1)
    cases = [("gmm", lambda x, s: gmm_x0(x, s.reshape(-1).expand(x.shape[0])), torch.randn(64, 2, generator=g,
                                                                                          dtype=F64)),
             ("unet", lambda x, s: unet(x, s.reshape(-1).expand(x.shape[0])),
              torch.randn(2, 2, 8, 8, generator=g, dtype=F64))]
    sigmas = k_sampling.get_sigmas_karras(7, 0.002, 80.0).to(F64)
    # k-diffusion's 2M has no lower-order final step other than the one to sigma = 0
    solver = ts.solvers.get(name, lower_order_final=False) if name == "dpmpp-2m" else name
    for label, fn, noise in cases:
        x_init = noise * math.sqrt(1 + 80.0**2)  # our initial state for unit noise under EDM
        ref = getattr(k_sampling, kfn)(fn, x_init.clone(), sigmas, disable=True)
        out = ts.sample(ts.Denoiser(fn, edm, "sample"), noise, solver, grid=sigmas[:-1])
        assert (out - ref).abs().max() <= TOL, (label, float((out - ref).abs().max()))

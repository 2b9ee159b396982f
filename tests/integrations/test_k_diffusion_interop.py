"""Parity of ``denoiser_from_k_diffusion`` with k-diffusion's own samplers.

k-diffusion's package ``__init__`` imports torchvision and scikit-image, which the test
environment lacks; its ``sampling.py`` needs only ``utils.append_dims`` from the package. The
fixture loads that file unchanged under a stub package that provides ``append_dims``.
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

import timestepper as ts


@pytest.fixture(scope="module")
def k_sampling():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.origin is None:
        pytest.skip("k-diffusion is not installed")
    name = "_k_diffusion_sampling_only"
    pkg = types.ModuleType(name)
    pkg.__path__ = []
    utils = types.ModuleType(f"{name}.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules[name], sys.modules[f"{name}.utils"] = pkg, utils
    try:
        sspec = importlib.util.spec_from_file_location(
            f"{name}.sampling", Path(spec.origin).parent / "sampling.py"
        )
        mod = importlib.util.module_from_spec(sspec)
        sspec.loader.exec_module(mod)
        yield mod
    finally:
        for k in (name, f"{name}.utils"):
            sys.modules.pop(k, None)


class KModel(torch.nn.Module):
    """A k-diffusion-style denoiser D(x; sigma) with a random network inside."""

    sigma_min, sigma_max = 0.02, 20.0

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)
        ).double()

    def forward(self, x, sigma):
        s = sigma.view(-1, 1).to(x.dtype)
        h = self.net(torch.cat([x, torch.log(s)], dim=1))
        return x / (1 + s * s) + h * s / torch.sqrt(1 + s * s)


@pytest.mark.parametrize(
    "ours,theirs",
    [("euler", "sample_euler"), ("heun", "sample_heun"), ("dpmpp-2m", "sample_dpmpp_2m")],
)
def test_parity_k_diffusion_samplers_on_a_wrapped_model(k_sampling, ours, theirs):
    model = KModel()
    den = ts.integrations.k_diffusion.denoiser_from_k_diffusion(model)
    steps = 12
    # k-diffusion evaluates the model down to sigma_min and then steps to 0: our Karras spacing
    # over [sigma_min, sigma_max] (final="sigma_min") with 0 appended, passed as an explicit grid
    # (our default, final="zero", skips the evaluation at sigma_min; see diffusion/grids.py)
    spaced = ts.make_grid(den.schedule, steps - 1, "karras", final="sigma_min").t
    sigmas = torch.cat([spaced, spaced.new_zeros(1)])
    theirs_f32 = k_sampling.get_sigmas_karras(steps, 0.02, 20.0, rho=7.0, device="cpu")
    torch.testing.assert_close(sigmas.float(), theirs_f32, rtol=1e-6, atol=0)  # same grid
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_T = noise * (1 + 20.0**2) ** 0.5  # timestepper's prior scale for EDM (see ts.sample)
    with torch.no_grad():
        ref = getattr(k_sampling, theirs)(model, x_T.clone(), sigmas, disable=True)
        out = ts.sample(den, noise, ours, grid=spaced)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)

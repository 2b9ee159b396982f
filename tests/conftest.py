"""Shared test fixtures: peers loaded the way the project's test setup installs them."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture

# Tests run two workers on two cores: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Hermetic tests: the package's cache (the digits classifier of the Fréchet metric) goes to a
    fresh folder of this test session, never to the user's ``~/.cache``, and is rebuilt there."""
    import os

    old = os.environ.get("TIMESTEPPER_CACHE")
    os.environ["TIMESTEPPER_CACHE"] = str(tmp_path_factory.mktemp("timestepper-cache"))
    yield
    if old is None:
        os.environ.pop("TIMESTEPPER_CACHE", None)
    else:
        os.environ["TIMESTEPPER_CACHE"] = old


def _load_k_diffusion_sampling():
    """k-diffusion's ``sampling.py`` without its package ``__init__`` (which imports torchvision).

    The package is installed with ``--no-deps``; only ``utils.append_dims`` is needed by the
    samplers, provided here by a stub module.
    """
    try:
        import importlib.metadata as md

        dist = md.distribution("k-diffusion")
    except Exception:  # pragma: no cover - peer missing
        return None
    path = Path(dist.locate_file("k_diffusion/sampling.py"))
    if not path.exists():  # pragma: no cover
        return None
    pkg = types.ModuleType("_kdiff")
    pkg.__path__ = [str(path.parent)]
    utils = types.ModuleType("_kdiff.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    sys.modules["_kdiff"], sys.modules["_kdiff.utils"] = pkg, utils
    pkg.utils = utils
    spec = importlib.util.spec_from_file_location("_kdiff.sampling", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_kdiff.sampling"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def k_sampling():
    """k-diffusion's sampling module (skips if the peer is not installed)."""
    mod = _load_k_diffusion_sampling()
    if mod is None:
        pytest.skip("k-diffusion is not installed")
    return mod


@pytest.fixture(scope="session")
def vp_schedule():
    """The linear-beta discrete VP schedule of DDPM / Stable Diffusion's default family."""
    return ts.VPDiscreteSchedule.from_betas("linear", beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000)


@pytest.fixture(scope="session")
def gmm2():
    """A 2-D mixture of 4 full-covariance components."""
    return GaussianMixture.random(2, 4, seed=1, full=True)


@pytest.fixture(scope="session")
def tiny_unet():
    """A tiny randomly initialised diffusers UNet2DModel in float64 (skips without diffusers)."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=2, out_channels=2, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ).double().eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    return unet


def unet_model_fn(unet):
    """Wrap a diffusers UNet as ``model_fn(x, t)``."""

    def fn(x, t):
        return unet(x, t).sample

    return fn

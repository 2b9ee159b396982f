"""Neural surrogates: Fourier Neural Operators (1-D, 2-D, and spatiotemporal), a modern U-Net,
SineNet and Transform-Once (T1)."""

from .fno import FNO, FNO1d, FNO2d
from .fno_st import SpaceTimeFNO, freeze_for_spectral_refinement
from .sinenet import SineNet
from .t1 import T1
from .unet import UNet

__all__ = [
    "FNO",
    "T1",
    "FNO1d",
    "FNO2d",
    "SineNet",
    "SpaceTimeFNO",
    "UNet",
    "freeze_for_spectral_refinement",
]

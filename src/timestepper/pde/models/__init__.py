"""Neural surrogates: Fourier Neural Operators (1-D, 2-D) and a modern U-Net (1-D, 2-D)."""

from .fno import FNO, FNO1d, FNO2d
from .unet import UNet

__all__ = ["FNO", "FNO1d", "FNO2d", "UNet"]

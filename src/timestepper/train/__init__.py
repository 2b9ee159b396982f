"""Training: objectives (denoising score matching, flow matching, reflow), reference networks,
EMA, the training loop, checkpoints, shipped data sets, the digits quality metric and MMD
fine-tuning for a fixed step budget (MMD-DDM)."""

from .checkpoint import load_denoiser, load_model, make_model, read_config, save_checkpoint
from .data import digits, toy_2d
from .ema import EMA
from .generate import generate, reflow_pairs, straightness
from .loop import TrainResult, train
from .mmd import mmd_finetune
from .model import DenoisingModel
from .networks import MLP, NETWORKS, UNet, build_network
from .objectives import DenoisingObjective, flow_matching, reflow, sample_times

__all__ = [
    "EMA",
    "MLP",
    "NETWORKS",
    "DenoisingModel",
    "DenoisingObjective",
    "TrainResult",
    "UNet",
    "build_network",
    "digits",
    "flow_matching",
    "generate",
    "load_denoiser",
    "load_model",
    "make_model",
    "mmd_finetune",
    "read_config",
    "reflow",
    "reflow_pairs",
    "sample_times",
    "save_checkpoint",
    "straightness",
    "toy_2d",
    "train",
]

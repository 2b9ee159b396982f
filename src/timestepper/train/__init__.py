"""Training: objectives (denoising score matching, flow matching, reflow), reference networks,
EMA, the training loop, checkpoints, shipped data sets, the digits quality metric, MMD
fine-tuning for a fixed step budget (MMD-DDM), and distillation: BOOT and Rectified Diffusion."""

from .boot import BootStudent, boot_distill, boot_sample
from .checkpoint import load_denoiser, load_model, make_model, read_config, save_checkpoint
from .data import digits, toy_2d
from .ema import EMA
from .generate import generate, reflow_pairs, straightness
from .loop import TrainResult, train
from .mmd import mmd_finetune
from .model import DenoisingModel
from .networks import MLP, NETWORKS, UNet, build_network
from .objectives import DenoisingObjective, flow_matching, reflow, sample_times
from .rectified import first_order_deviation, flow_straightness, rectified_pairs, rectify

__all__ = [
    "EMA",
    "BootStudent",
    "MLP",
    "NETWORKS",
    "DenoisingModel",
    "DenoisingObjective",
    "TrainResult",
    "UNet",
    "boot_distill",
    "boot_sample",
    "build_network",
    "digits",
    "first_order_deviation",
    "flow_matching",
    "flow_straightness",
    "generate",
    "load_denoiser",
    "load_model",
    "make_model",
    "mmd_finetune",
    "read_config",
    "reflow",
    "reflow_pairs",
    "rectified_pairs",
    "rectify",
    "sample_times",
    "save_checkpoint",
    "straightness",
    "toy_2d",
    "train",
]

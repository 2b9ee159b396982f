"""Tiny random diffusers pipelines built in code (no downloads, no text encoders: prompts enter
as embeddings)."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")  # diffusers' Stable Diffusion pipelines need it importable


def _seeded(fn):
    def build(*args, **kwargs):
        torch.manual_seed(0)
        return fn(*args, **kwargs).eval()
    return build


@_seeded
def unet2d(channels: int = 3) -> diffusers.UNet2DModel:
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))


@_seeded
def unet_cond(in_channels: int = 4, **extra) -> diffusers.UNet2DConditionModel:
    return diffusers.UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
        norm_num_groups=2, attention_head_dim=2, **extra)


@_seeded
def vae(latent_channels: int = 4, **extra) -> diffusers.AutoencoderKL:
    return diffusers.AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=latent_channels, norm_num_groups=2, sample_size=16, **extra)


SD_SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
               "steps_offset": 1, "timestep_spacing": "leading"}


def sd(pipeline_cls=diffusers.StableDiffusionPipeline, in_channels: int = 4, scheduler=None):
    scheduler = scheduler or diffusers.PNDMScheduler(skip_prk_steps=True, **SD_SCHEDULE)
    pipe = pipeline_cls(vae=vae(), text_encoder=None, tokenizer=None, unet=unet_cond(in_channels),
                        scheduler=scheduler, safety_checker=None, feature_extractor=None,
                        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt(batch: int = 1, dim: int = 8) -> dict:
    g = torch.Generator().manual_seed(5)
    return {"prompt_embeds": torch.randn(batch, 4, dim, generator=g)}


def image(seed: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@_seeded
def sd3_transformer() -> diffusers.SD3Transformer2DModel:
    return diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=8,
        pooled_projection_dim=8, out_channels=4)


@_seeded
def flux_transformer() -> diffusers.FluxTransformer2DModel:
    return diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=8, pooled_projection_dim=8,
        axes_dims_rope=[4, 4, 8])


def sd3(scheduler):
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=sd3_transformer(), scheduler=scheduler, vae=vae(shift_factor=0.06, scaling_factor=1.5),
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux(scheduler):
    pipe = diffusers.FluxPipeline(
        transformer=flux_transformer(), scheduler=scheduler,
        vae=vae(latent_channels=1, shift_factor=0.06, scaling_factor=1.5),
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pooled(dim: int = 8) -> dict:
    g = torch.Generator().manual_seed(6)
    return {"prompt_embeds": torch.randn(1, 4, dim, generator=g),
            "pooled_prompt_embeds": torch.randn(1, dim, generator=g)}


def sdxl(scheduler, refiner: bool = False):
    unet = unet_cond(addition_embed_type="text_time", addition_time_embed_dim=4,
                     projection_class_embeddings_input_dim=6 * 4 + 8)
    cls = diffusers.StableDiffusionXLImg2ImgPipeline if refiner else diffusers.StableDiffusionXLPipeline
    extra = {"requires_aesthetics_score": False} if refiner else {}
    pipe = cls(vae=vae(), text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
               unet=unet, scheduler=scheduler, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe

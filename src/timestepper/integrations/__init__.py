"""Interop with other libraries. These modules never import the peers themselves: diffusers and
k-diffusion are only needed to build the models handed to them."""

from . import diffusers, k_diffusion

__all__ = ["diffusers", "k_diffusion"]

"""Warped Diffusion engine: GP noise, noise warping, optical flow, guided sampler, models."""

from __future__ import annotations

__version__ = "0.1.0"

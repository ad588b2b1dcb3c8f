"""Denoiser adapters behind one interface (:mod:`warpcore.models.base`).

``load_denoiser(spec, task)`` is the entry point; the SDXL adapter imports diffusers only when
an SDXL model is loaded.
"""

from __future__ import annotations

from warpcore.models.base import Condition, Denoiser, Task
from warpcore.models.registry import load_denoiser

__all__ = ["Condition", "Denoiser", "Task", "load_denoiser"]

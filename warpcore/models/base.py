"""The one denoiser interface, ``D(x, sigma, cond) -> x0`` (METHOD.md section 3).

Every model sits behind an adapter implementing :class:`Denoiser`. The sampler, the guidance and
the clip restorer know nothing else about a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch

Task = Literal["inpaint", "upscale"]


@dataclass(frozen=True)
class Condition:
    """What the clip restorer hands a model for one frame (model-agnostic).

    ``image``: (3, H, W) in [0, 1]. For ``inpaint`` the input frame at output resolution; for
    ``upscale`` the low-resolution frame (output is ``scale`` times larger).
    ``mask``: (1, H, W), 1 = region to fill; inpaint only.
    ``filled``: inpaint: ``image``'s hole is already filled by the model's own ``whole_frame``
    (a tiler calls it before cutting tiles); the model must not fill it again.
    ``detail_weight``: upscale: the start's detail weight the model's ``whole_frame`` measured
    on the whole frame (None: the model measures it on what it is given).
    """

    task: Task
    image: torch.Tensor
    mask: torch.Tensor | None = None
    scale: int = 1
    filled: bool = False
    detail_weight: float | None = None
    prompt: str = ""
    negative_prompt: str = ""
    cfg_scale: float = 1.0


@runtime_checkable
class Denoiser(Protocol):
    """A model behind the denoiser interface.

    ``x`` lives on the model grid: ``channels`` channels at output pixels / ``downscale``
    (8 for SDXL latents, 1 for pixel-space models).
    """

    name: str
    channels: int
    downscale: int
    sigma_min: float
    sigma_max: float
    device: torch.device
    dtype: torch.dtype
    tasks: tuple[Task, ...]

    def prepare(self, cond: Condition) -> Any:
        """Encode a frame's condition once (VAE, text encoders, masks at model resolution)."""
        ...

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prepared: Any) -> torch.Tensor:
        """Denoised estimate E[x0 | x, cond] for x (N, C, h, w) at noise level sigma (N,).

        Differentiable with respect to ``x`` (the guidance backpropagates through it).
        """
        ...

    def start(self, prepared: Any) -> torch.Tensor | None:
        """Clean point a partial-strength run starts from (zero-shot SR), or None for pure noise."""
        ...

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] -> model grid (N, channels, H/downscale, W/downscale)."""
        ...

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model grid -> images (N, 3, H, W) in [0, 1]."""
        ...

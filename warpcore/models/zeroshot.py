"""Zero-shot super-resolution with an off-the-shelf (4-channel) model, for users without an SR
fine-tune.

The run starts from the clean latent of the bicubic-upsampled frame (``start``), which the
sampler noises to the first sigma of a schedule truncated at ``strength`` (< 1 is required: at
strength 1 the frame would be forgotten). At every step the denoised estimate is made consistent
with the low-resolution frame: ``x0_img = decode(D(x))``, ``x0_img += up(lr - down(x0_img))``
(the orthogonal projection for the box-average degradation, :mod:`warpcore.models.conditions`),
then re-encoded. Everything stays differentiable in ``x`` so self-guidance can backpropagate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from warpcore.errors import InvalidInput
from warpcore.models.base import Condition, Task
from warpcore.models.conditions import check_condition, project_lowres, upsample_lowres


class DifferentiableCodec(Protocol):
    """A denoiser whose encode/decode also exist without ``no_grad`` (images in [0, 1])."""

    def encode_differentiable(self, image: torch.Tensor) -> torch.Tensor: ...

    def decode_differentiable(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ZeroShotPrepared:
    inner: Any  # the wrapped model's own prepared condition (text, time ids)
    lowres: torch.Tensor  # (1, 3, h, w) in [0, 1]
    scale: int
    start: torch.Tensor  # (1, C, H / downscale, W / downscale): the encoded upsampled frame


class ZeroShotSR:
    """Wrap a plain denoiser (no condition channels) into a super-resolution denoiser."""

    tasks: tuple[Task, ...] = ("upscale",)
    default_strength = 0.5  # the run starts from the noised upsampled frame: must be < 1

    def __init__(self, inner: Any, *, project: bool = True) -> None:
        for method in ("encode_differentiable", "decode_differentiable"):
            if not callable(getattr(inner, method, None)):
                raise InvalidInput(
                    f"zero-shot super-resolution: model {getattr(inner, 'name', inner)!r} has no "
                    f"{method}(); it needs a differentiable encode/decode pair"
                )
        self.inner = inner
        self.project = project
        self.name = f"zeroshot-sr:{inner.name}"
        self.channels, self.downscale = inner.channels, inner.downscale
        self.sigma_min, self.sigma_max = inner.sigma_min, inner.sigma_max
        self.device, self.dtype = inner.device, inner.dtype

    @torch.no_grad()
    def prepare(self, cond: Condition) -> ZeroShotPrepared:
        lowres = check_condition(cond, self.tasks, self.name).to(self.device)
        start = self.inner.encode(upsample_lowres(lowres, cond.scale))
        return ZeroShotPrepared(self.inner.prepare(cond), lowres, cond.scale, start)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, prepared: Any) -> torch.Tensor:
        denoised = self.inner(x, sigma, prepared.inner)
        if not self.project:
            return denoised
        image = self.inner.decode_differentiable(denoised)
        image = project_lowres(image, prepared.lowres.to(image.dtype), prepared.scale)
        return self.inner.encode_differentiable(image).to(x.dtype)

    def start(self, prepared: Any) -> torch.Tensor | None:
        """The clean latent of the bicubic-upsampled low-resolution frame."""
        return prepared.start

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner.encode(image)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(x)

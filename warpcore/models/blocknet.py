"""The built-in model's super-resolution estimator: a residual CNN on blocks of pixels.

The one-call estimate of upscaling, ``E[x0 | b]`` with ``b`` the bicubic upsample, needs no
noise level and no mask, and most of its work is per low-resolution pixel. The UNet does it at
output resolution with 16 channels at the top level; this network works on ``block`` x
``block`` blocks of ``b`` stacked as channels (``pixel_unshuffle``: 48 channels on a grid 4x
smaller each way, the low-resolution grid at 4x), so the same CPU time buys far more width and
depth where the detail is decided (EDSR's plan, Lim et al. 2017: plain residual blocks, no
normalisation, a zero-initialised last layer, so the untrained network returns ``b``):

``estimate(b) = b + pixel_shuffle(tail(h + body(h)))``, ``h = head(pixel_unshuffle(b))``.

It serves every scale: at x2 and x8 the blocks are finer or coarser than the input's pixels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from warpcore.errors import InvalidInput

DEFAULT_ESTIMATOR: dict[str, int] = {"width": 64, "blocks": 8, "block": 4}


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class BlockNet(nn.Module):
    """``b`` (N, 3, H, W) in [-1, 1] -> the estimate, same shape; any H, W (edge-replicated at
    the bottom and right to a multiple of ``block``, cropped back)."""

    def __init__(self, width: int = 64, blocks: int = 8, block: int = 4) -> None:
        super().__init__()
        for name, value in (("width", width), ("blocks", blocks), ("block", block)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"estimator {name}: expected an integer >= 1, got {value!r}")
        self.block = block
        channels = 3 * block * block
        self.head = nn.Conv2d(channels, width, 3, padding=1)
        self.body = nn.Sequential(*[_Residual(width) for _ in range(blocks)])
        self.tail = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BlockNet:
        """From config.json's ``"estimator"`` (keys of :data:`DEFAULT_ESTIMATOR`)."""
        unknown = sorted(set(config) - set(DEFAULT_ESTIMATOR))
        if unknown:
            raise InvalidInput(
                f"config.json: estimator has unknown keys {unknown}; "
                f"accepted: {', '.join(DEFAULT_ESTIMATOR)}"
            )
        return cls(**{**DEFAULT_ESTIMATOR, **config})

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        h, w = b.shape[-2:]
        ph, pw = (-h) % self.block, (-w) % self.block
        x = F.pad(b, (0, pw, 0, ph), mode="replicate") if ph or pw else b
        feat = self.head(F.pixel_unshuffle(x, self.block))
        detail = F.pixel_shuffle(self.tail(feat + self.body(feat)), self.block)
        return b + detail[..., :h, :w]

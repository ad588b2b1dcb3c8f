"""Smooth hole filling, for conditioning and for flow estimation around a removed object."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def push_pull_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill the hole (``mask`` 1) smoothly from the known pixels: a push-pull pyramid.

    Push: average the known pixels and their weight over 2x2 cells down to 1 pixel. Pull: from
    the coarsest level up, each level keeps its own average where it has known pixels, blended
    by their fraction, and takes the upsampled coarser estimate elsewhere. Known pixels are
    returned unchanged; a frame with no known pixel becomes mid-grey.
    """
    known = 1.0 - mask
    levels = [(image * known, known)]
    while min(levels[-1][1].shape[-2:]) > 1:
        img, w = levels[-1]
        levels.append((F.avg_pool2d(img, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)))
    img, w = levels[-1]
    est = torch.where(w > 0, img / w.clamp_min(1e-8), torch.full_like(img, 0.5))
    for img, w in reversed(levels[:-1]):
        up = F.interpolate(est, size=img.shape[-2:], mode="bilinear", align_corners=False)
        est = img / w.clamp_min(1e-8) * w + up * (1.0 - w)
    return known * image + mask * est

"""Optical flow between frames, flow composition, occlusion masks and bilinear warping.

Conventions (ARCHITECTURE.md): a flow is (2, H, W), channel 0 = dx, 1 = dy, in pixels;
``flow_ab`` lives on frame a's grid and sends pixel x of a to ``x + flow_ab(x)`` in b.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Padding = Literal["zeros", "border"]


def sample_points(flow: torch.Tensor) -> torch.Tensor:
    """Absolute pixel coordinates ``x + flow(x)`` as (..., 2, H, W) with (x, y) order."""
    h, w = flow.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    return flow + torch.stack((xs, ys))


def warp(
    image: torch.Tensor,
    flow: torch.Tensor,
    mode: Literal["bilinear", "nearest"] = "bilinear",
    padding: Padding = "zeros",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``image`` (frame b) at ``x + flow(x)`` for every pixel x of frame a.

    ``image``: (C, H, W) or (N, C, H, W); ``flow``: (2, H', W') or (N, 2, H', W') on frame a's
    grid (H', W' may differ from image's). Returns ``(warped, valid)`` where ``valid`` is
    (1, H', W') / (N, 1, H', W'), 1 where the sample point lies inside frame b
    (between its outer pixel centres).
    Differentiable with respect to ``image``.
    """
    batched = image.dim() == 4
    img = image if batched else image.unsqueeze(0)
    fl = flow if flow.dim() == 4 else flow.unsqueeze(0)
    if fl.shape[0] != img.shape[0]:
        fl = fl.expand(img.shape[0], -1, -1, -1)
    h, w = img.shape[-2:]
    pts = sample_points(fl.to(img.dtype))
    # align_corners=True: -1 and 1 are the centres of the corner pixels.
    gx = pts[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = pts[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(img, grid, mode=mode, padding_mode=padding, align_corners=True)
    # Valid only where the bilinear footprint is wholly inside b (no padding mixed in).
    tol = 1e-4
    inside = (
        (pts[:, 0] >= -tol)
        & (pts[:, 0] <= w - 1 + tol)
        & (pts[:, 1] >= -tol)
        & (pts[:, 1] <= h - 1 + tol)
    )
    valid = inside.unsqueeze(1).to(img.dtype)
    return (out, valid) if batched else (out[0], valid[0])

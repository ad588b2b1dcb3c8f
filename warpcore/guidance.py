"""Equivariance self-guidance (paper eq. 8 and Algorithm 1, step 2).

The warping error of the current denoised estimate against the previous frame's estimate at
the same step, ``e_k = || M * (h_k o T_j - h_k^(j-1)) ||^2``, and the normalised gradient step
``u_{k+1} -= lambda / sqrt(e_k) * grad_{u_k} e_k`` (a DPS-style step, rule "dps"), or the
"blend" step (the default, docs/guidance.md): the previous estimate warped onto the current
grid, ``p = h_k^(j-1) o T_j^-1``, and ``u_{k+1} += lambda * W * (p - h_k)`` with ``W`` the
per-pixel reliability of that warp (1 on whole-pixel motion, less where bilinear sampling blurs,
0 where occluded or out of frame): lambda is the fraction of the residual removed per step,
whatever the grid or the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from warpcore.flow import warp

# "network": the gradient goes through the denoiser, as in the paper (one extra backward pass).
# "output": the denoiser's Jacobian is taken as the identity, so the gradient only goes through
# the warp; it costs no backward pass through the network (a cheaper approximation).
GradMode = Literal["network", "output"]


# "dps": the paper's normalised step, lambda / sqrt(e_k) * grad e_k: a fixed length 2 lambda
#   |J^T r^| whatever the error, so its effect per pixel shrinks with the grid size and it
#   oscillates at a floor ~ (2 lambda)^2 / N once the error is small.
# "newton": a Gauss-Newton (Polyak) step, 2 lambda e_k / |grad e_k|^2 * grad e_k: with an
#   identity Jacobian lambda = 1 removes the whole residual, lambda = 0.5 half of it; it shrinks
#   with the error and does not depend on the grid size. Its RMS per element is capped at
#   max(sigma_k, 1) (a trust region: never move u by more than the noise it still carries or
#   the data's unit scale), which matters at high noise where the denoiser barely depends on u.
# "blend": pull the estimate toward the previous estimate warped onto the current grid,
#   u_{k+1} += lambda * W * (h_k^(j-1) o T_j^-1 - h_k): no gradient, no adjoint warp (so no
#   low-pass that the step would chase), lambda = the fraction of the residual removed per step.
# "band": blend's step, but the residual is compared in the band the warp represents: its low
#   band (a normalised Gaussian low-pass of the masked residual, where bilinear sampling is
#   faithful at any sub-pixel offset) is always corrected, its high band only as far as the
#   sub-pixel weight trusts it (docs/guidance.md). Equal to blend on whole-pixel motion.
StepRule = Literal["dps", "newton", "blend", "band"]
# Rules that solve on the current frame's grid (they need the backward flow and its mask, and
# the sampler stores the estimate they moved to).
CURRENT_GRID_RULES = ("blend", "band")
BAND_SIGMA = 1.0  # model-grid pixels: the low band's Gaussian (bilinear bias < 0.1, GUIDANCE.md)


def subpixel_weight(flow: torch.Tensor) -> torch.Tensor:
    """(1, H, W) in [0, 1]: how faithfully bilinear sampling at ``x + flow(x)`` reproduces a
    signal. Per axis ``1 - 4 f (1 - f)`` with ``f`` the fractional part of the displacement:
    1 on whole pixels, 0 half-way (where bilinear interpolation halves white-noise power:
    ``(1 - f)^2 + f^2`` falls from 1 to 0.5, and this is that loss rescaled to [0, 1])."""
    f = flow - torch.floor(flow)
    g = 1.0 - 4.0 * f * (1.0 - f)
    return (g[0] * g[1]).clamp(0.0, 1.0)[None]


def low_band(values: torch.Tensor, weight: torch.Tensor, sigma: float = BAND_SIGMA) -> torch.Tensor:
    """Normalised convolution: the Gaussian (std ``sigma`` px) low-pass of ``values`` over the
    pixels where ``weight`` > 0, ``G * (weight values) / G * weight`` (0 where no weight is near).
    ``values`` (..., C, H, W); ``weight`` (..., 1, H, W) or (1, H, W), broadcast over channels."""
    shape = values.shape
    w = weight.to(values).expand(*shape[:-3], 1, *shape[-2:])
    hw = shape[-2:]
    blurred = _gaussian_blur(torch.cat([(values * w).reshape(-1, 1, *hw), w.reshape(-1, 1, *hw)]),
                             sigma)  # fmt: skip
    n = values.numel() // (hw[0] * hw[1])
    num = blurred[:n].reshape(shape)
    den = blurred[n:].reshape(w.shape)
    return torch.where(den > 1e-3, num / den.clamp_min(1e-3), torch.zeros_like(num))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W), zero outside the frame."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    x = F.conv2d(x, g.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(x, g.view(1, 1, -1, 1), padding=(radius, 0))


@dataclass(frozen=True)
class EquivarianceGuidance:
    """Guidance for frame j given frame j-1's denoised outputs at every step.

    ``forward``: flow from frame j-1 to frame j on the model grid, (2, h, w).
    ``mask``: (1, h, w), 1 on pixels of frame j-1 that stay in frame and are not occluded.
    ``previous``: (K, C, h, w), frame j-1's denoised estimate ``h_k^(j-1)`` for each step k.
    ``active``: the steps k where guidance applies.
    ``backward``: flow from frame j to frame j-1 on frame j's model grid (2, h, w) and
    ``backward_mask`` (1, h, w) on frame j's grid: what the "blend" rule needs.
    """

    strength: float
    forward: torch.Tensor
    mask: torch.Tensor
    previous: torch.Tensor
    active: frozenset[int]
    grad_mode: GradMode = "network"
    rule: StepRule = "dps"
    backward: torch.Tensor | None = None
    backward_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.on_current_grid and (self.backward is None or self.backward_mask is None):
            raise ValueError(f"the {self.rule} rule needs the backward flow and its mask")

    def applies(self, k: int) -> bool:
        return self.strength > 0 and k in self.active

    @property
    def needs_network_grad(self) -> bool:
        """Whether the step backpropagates through the denoiser (the sampler then keeps its
        graph)."""
        return self.grad_mode == "network" and not self.on_current_grid

    @property
    def on_current_grid(self) -> bool:
        """Whether the rule moves the estimate on frame j's grid (blend, band): the sampler then
        stores the moved estimate for the next frame."""
        return self.rule in CURRENT_GRID_RULES

    def blend(self, denoised: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
        """The "blend" correction ``lambda * W * (p - h_k)`` and ``sum W (p - h_k)^2``."""
        assert self.backward is not None and self.backward_mask is not None
        h = denoised.detach()
        target, inside = warp(self.previous[k].to(h), self.backward.to(h))
        weight = self.backward_mask.to(h) * inside * subpixel_weight(self.backward).to(h)
        residual = target - h
        value = float((weight * residual.double() ** 2).sum())
        return min(self.strength, 1.0) * weight * residual, value

    def band(self, denoised: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
        """The "band" correction ``lambda * M * (L r + S (r - L r))``, ``r = p - h_k``, ``L`` the
        masked low-pass, ``S`` the sub-pixel weight; and ``sum M (L r)^2`` (the in-band error)."""
        assert self.backward is not None and self.backward_mask is not None
        h = denoised.detach()
        target, inside = warp(self.previous[k].to(h), self.backward.to(h))
        m = self.backward_mask.to(h) * inside
        residual = target - h
        low = low_band(residual, m)
        s = subpixel_weight(self.backward).to(h)
        correction = m * (low + s * (residual - low))
        value = float((m * low.double() ** 2).sum())
        return min(self.strength, 1.0) * correction, value

    def error(self, denoised: torch.Tensor, k: int) -> torch.Tensor:
        """e_k: squared warping error over the valid pixels (a 0-dim tensor)."""
        warped, inside = warp(denoised, self.forward)  # h_k o T_j, on frame j-1's grid
        m = self.mask * inside
        return ((m * (warped - self.previous[k])) ** 2).sum()

    def step(
        self, x: torch.Tensor, denoised: torch.Tensor, k: int, sigma: float
    ) -> tuple[torch.Tensor, float]:
        """The correction (``-lambda / sqrt(e_k) * grad e_k`` for "dps") and e_k itself.

        ``x`` must require grad and ``denoised`` must depend on it when grad_mode == "network".
        """
        if self.rule == "blend":
            return self.blend(denoised, k)
        if self.rule == "band":
            return self.band(denoised, k)
        if self.grad_mode == "output":
            denoised = denoised.detach().requires_grad_(True)
            wrt = denoised
        else:
            wrt = x
        e = self.error(denoised, k)
        (grad,) = torch.autograd.grad(e, wrt)
        value = float(e.detach())
        if value <= 0.0:
            return torch.zeros_like(x), 0.0
        if self.rule == "newton":
            norm2 = float((grad.double() ** 2).sum())
            step = 2.0 * self.strength * value / max(norm2, 1e-30) * grad
            rms = float(step.double().pow(2).mean().sqrt())
            return -step * min(1.0, max(sigma, 1.0) / max(rms, 1e-30)), value
        return -self.strength / value**0.5 * grad, value


def active_steps(n_steps: int, start: float, stop: float) -> frozenset[int]:
    """Steps k in [0, n_steps) with k / n_steps in [start, stop)."""
    return frozenset(k for k in range(n_steps) if start <= k / n_steps < stop)

"""Equivariance self-guidance (paper eq. 8 and Algorithm 1, step 2).

The warping error of the current denoised estimate against the previous frame's estimate at
the same step, ``e_k = || M * (h_k o T_j - h_k^(j-1)) ||^2``, and the normalised gradient step
``u_{k+1} -= lambda / sqrt(e_k) * grad_{u_k} e_k`` (the paper's DPS-style step, rule "dps",
inpainting's default); or the steps on the current grid (docs/guidance.md): the previous
estimate warped onto it, ``p = h_k^(j-1) o T_j^-1``, and ``u_{k+1} += lambda * M * (p - B~ h_k)``
("band", upscaling's default: ``B~`` the blur the bilinear warp gave ``p``, so both sides are
low-passed alike) or ``lambda * M * S * (p - h_k)`` ("blend": whole-pixel motion only). There
lambda is the fraction of the residual removed per step, whatever the grid or the model.
"""

from __future__ import annotations

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
# "band": blend's step with both sides low-passed alike: the previous estimate warped by
#   bilinear sampling (which blurs by the fractional offset f) is compared with the current
#   estimate through a zero-phase blur of the same strength, u_{k+1} += lambda * M * (p - B~_f h),
#   so the blur of the warp is never imported and only the band the warp reproduces is matched
#   (docs/guidance.md). Equal to blend on whole-pixel motion.
StepRule = Literal["dps", "newton", "blend", "band"]
# Rules that solve on the current frame's grid (they need the backward flow and its mask, and
# the sampler stores the estimate they moved to).
CURRENT_GRID_RULES = ("blend", "band")


def subpixel_weight(flow: torch.Tensor) -> torch.Tensor:
    """(1, H, W) in [0, 1]: how faithfully bilinear sampling at ``x + flow(x)`` reproduces a
    signal. Per axis ``1 - 4 f (1 - f)`` with ``f`` the fractional part of the displacement:
    1 on whole pixels, 0 half-way (where bilinear interpolation halves white-noise power:
    ``(1 - f)^2 + f^2`` falls from 1 to 0.5, and this is that loss rescaled to [0, 1])."""
    f = flow - torch.floor(flow)
    g = 1.0 - 4.0 * f * (1.0 - f)
    return (g[0] * g[1]).clamp(0.0, 1.0)[None]


def matched_blur(values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """The zero-phase blur that bilinear sampling at ``x + flow(x)`` applies, per pixel: per axis
    the symmetric 3-tap ``[a, 1 - 2a, a]`` with ``a = f (1 - f) / 2`` (``f`` the fractional part
    of the displacement). Its response ``1 - 2a (1 - cos w)`` matches bilinear's magnitude
    ``sqrt(1 - 4a (1 - cos w))`` to first order and is never below it (docs/guidance.md).
    ``values`` (..., C, H, W), ``flow`` (2, H, W); edges replicated."""
    f = flow - torch.floor(flow)
    a = (0.5 * f * (1.0 - f)).to(values)
    out = values
    for axis, weight in ((-1, a[0]), (-2, a[1])):
        n = out.shape[axis]
        prev = torch.cat([out.narrow(axis, 0, 1), out.narrow(axis, 0, n - 1)], axis)
        nxt = torch.cat([out.narrow(axis, 1, n - 1), out.narrow(axis, n - 1, 1)], axis)
        out = out + weight * (prev + nxt - 2.0 * out)
    return out


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
    # blend/band on a pixel-grid model doing super-resolution by this factor: the correction is
    # projected onto the null space of the area downsample (its block means removed), so the
    # guidance never moves what the low-resolution input already fixes (docs/guidance.md).
    measurement_scale: int = 1
    # blend/band for inpainting: (1, h, w), 1 on the region the output takes from the model (the
    # hole): the correction's mean there is removed, per channel, so the guidance never shifts
    # the fill's mean colour, which the hole's surroundings fix, not the previous frame
    # (docs/guidance.md, session 10).
    keep_mean_in: torch.Tensor | None = None

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
        return self._mean_kept(min(self.strength, 1.0) * weight * residual, weight), value

    def band(self, denoised: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
        """The "band" correction ``lambda * M * (p - B~_f h_k)``, ``p`` the previous estimate
        warped onto this grid and ``B~_f`` the blur bilinear sampling gave it; and
        ``sum M (p - B~_f h_k)^2``."""
        assert self.backward is not None and self.backward_mask is not None
        h = denoised.detach()
        backward = self.backward.to(h)
        target, inside = warp(self.previous[k].to(h), backward)
        m = self.backward_mask.to(h) * inside
        residual = target - matched_blur(h, backward)
        value = float((m * residual.double() ** 2).sum())
        correction = self._mean_kept(min(self.strength, 1.0) * m * residual, m)
        return self._null_space(correction), value

    def _mean_kept(self, correction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """With ``keep_mean_in``: ``correction`` less its per-channel mean over the pixels of
        that region it moves (``weight`` > 0), taken from those pixels only; else
        ``correction`` itself."""
        if self.keep_mean_in is None:
            return correction
        moved = ((weight > 0) & (self.keep_mean_in.to(weight) > 0.5)).to(correction)
        count = moved.sum(dim=(-2, -1), keepdim=True)
        if float(count.min()) <= 0:
            return correction
        mean = (correction * moved).sum(dim=(-2, -1), keepdim=True) / count
        return correction - moved * mean

    def _null_space(self, correction: torch.Tensor) -> torch.Tensor:
        """``correction`` minus its block means (``measurement_scale`` px blocks): what the
        area-downsampled input does not see. Frames not divisible by the scale keep it as is."""
        s = self.measurement_scale
        h, w = correction.shape[-2:]
        if s <= 1 or h % s or w % s:
            return correction
        flat = correction.reshape(-1, 1, h, w)
        means = F.interpolate(F.avg_pool2d(flat, s), scale_factor=s, mode="nearest")
        return (flat - means).reshape(correction.shape)

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

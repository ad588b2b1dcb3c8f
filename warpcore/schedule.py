"""Noise-level schedules: plain tensors with a trailing zero, as in k-diffusion."""

from __future__ import annotations

import torch

from warpcore.errors import InvalidInput


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """The EDM schedule (Karras et al. 2022, eq. 5): ``n`` decreasing sigmas and a final 0."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"steps: expected an integer >= 1, got {n!r}")
    if not 0.0 < sigma_min < sigma_max:
        raise InvalidInput(
            f"sigma range: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
        )
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def truncate(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """Keep the last ``strength`` fraction of the steps (img2img-style partial start)."""
    if not 0.0 < strength <= 1.0:
        raise InvalidInput(f"strength: expected a number in (0, 1], got {strength!r}")
    n = len(sigmas) - 1
    return sigmas[n - kept_steps(n, strength) :]


def kept_steps(n_steps: int, strength: float) -> int:
    """How many of ``n_steps`` a run of ``strength`` takes (at least one)."""
    return max(1, round(n_steps * strength))

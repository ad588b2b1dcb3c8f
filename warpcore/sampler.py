"""The probability-flow ODE sampler with equivariance self-guidance (paper Algorithm 1).

Stateless, k-diffusion style: ``denoise(x, sigma) -> x0`` is the model with its condition bound;
``sigmas`` is a decreasing schedule with a trailing zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from warpcore.errors import Cancelled
from warpcore.guidance import EquivarianceGuidance
from warpcore.progress import ShouldStop, never_stop

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Method = Literal["euler", "heun"]

# At or below this noise level the denoiser's call is skipped: ``D(u, sigma) - u`` is ``sigma``
# times a unit-scale prediction (the noise, or EDM's ``c_out F`` with c_out <= sigma). It is the
# last step (the Karras schedule's sigma_min, 0.002) of every built-in partial run, where the
# model moved pixels by 0.05-0.13 of an 8-bit level on the mean (at most 1.4) on the real clips
# of its bench: a whole network call a frame for that (upscaling 0.55x the time, removal 0.71x;
# warpcore/assets/builtin/TRAINING.md, session 8). SDXL's last sigma (0.029) is above it.
# The skipped call returns the estimate the ODE carries (``u_k = h_{k-1} + sigma_k eps``, the
# Euler step's form; at the first step of a partial run ``u_0 = start + sigma_0 eps``), not
# ``u_k`` itself: the noise added for the step (a quarter of a grey level) is the sampler's own
# and tells nothing about the frame; left in, it was grain that cost 0.29 dB on a 48 dB clip
# (TRAINING.md, session 9).
IDENTITY_SIGMA = 0.0025


@dataclass(frozen=True)
class StepInfo:
    """What the per-step callback receives."""

    k: int
    n_steps: int
    sigma: float
    denoised: torch.Tensor
    warp_error: float | None


@dataclass(frozen=True)
class SampleResult:
    x: torch.Tensor  # the final sample (at sigma = 0)
    denoised: torch.Tensor  # (K, ...) the estimate h_k of every step: kept for the next frame
    warp_errors: tuple[float | None, ...]  # e_k where guidance applied


def sample(
    denoise: DenoiseFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    method: Method = "euler",
    guidance: EquivarianceGuidance | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    should_stop: ShouldStop = never_stop,
    start: torch.Tensor | None = None,
) -> SampleResult:
    """Integrate the PF-ODE from ``x`` at ``sigmas[0]`` down to ``sigmas[-1] == 0``.

    ``start``: the clean point a partial-strength run was noised from (``x = start + sigma_0
    noise``, :func:`start_noise`), if any.

    Per step k (Algorithm 1, step 2): h_k = D(u_k, sigma_k); Euler step
    u_{k+1} = u_k + (sigma_{k+1} - sigma_k) (u_k - h_k) / sigma_k (METHOD.md section 3), or
    Heun's correction; then, where guidance applies, u_{k+1} -= lambda / sqrt(e_k) grad e_k
    (or the "blend"/"band" correction, which also moves the stored estimate h_k:
    warpcore.guidance). At sigma_k <= IDENTITY_SIGMA there is no call: h_k is u_k less the noise
    the ODE carries, sigma_k times the previous step's direction (so the previous estimate plus
    any guidance since), or ``start`` at the first step (``u_k`` itself without either), with
    the identity as its Jacobian for the network-gradient guidance.
    """
    n = len(sigmas) - 1
    history, errors = [], []
    # The ODE's direction (u_k - h_k) / sigma_k: the noise it carries (Euler form)
    direction = None if start is None else (x - start.to(x)).detach() / sigmas[0]
    for k in range(n):
        if should_stop():
            raise Cancelled(f"stopped before step {k + 1} of {n}")
        s, s_next = sigmas[k], sigmas[k + 1]
        guided = guidance is not None and guidance.applies(k)
        through_net = guided and guidance.needs_network_grad
        x_k = x.detach().requires_grad_(through_net)
        if s <= IDENTITY_SIGMA:
            h = x_k if through_net else x_k.detach()
            if direction is not None:  # u_k less the noise the ODE carries; dh/du = I
                h = h - s * direction
        else:
            with torch.enable_grad() if through_net else torch.no_grad():
                h = denoise(x_k, _batch_sigma(s, x_k))
        with torch.no_grad():
            x_next = _ode_step(denoise, x_k.detach(), h.detach(), s, s_next, method)
            direction = (x_next - x_k.detach()) / (s_next - s)  # the step's, before guidance
        e = None
        if guided:
            correction, e = guidance.step(x_k, h, k, float(s))
            x_next = x_next + correction
            if guidance.on_current_grid:  # the estimate blend/band moved to is what the next
                h = h.detach() + correction  # frame must match (at the last step: the output)
        x = x_next.detach()
        history.append(h.detach())
        errors.append(e)
        if callback is not None:
            callback(StepInfo(k, n, float(s), history[-1], e))
    return SampleResult(x, torch.stack(history), tuple(errors))


def _ode_step(
    denoise: DenoiseFn,
    x: torch.Tensor,
    h: torch.Tensor,
    s: torch.Tensor,
    s_next: torch.Tensor,
    method: Method,
) -> torch.Tensor:
    d = (x - h) / s  # dx/dsigma of the PF-ODE
    x_next = x + (s_next - s) * d
    if method == "heun" and s_next > 0:
        h2 = denoise(x_next, _batch_sigma(s_next, x))
        d2 = (x_next - h2) / s_next
        x_next = x + (s_next - s) * 0.5 * (d + d2)
    return x_next


def _batch_sigma(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return s.to(device=x.device, dtype=torch.float32).expand(x.shape[0])


def noise_reaches_output(sigmas: torch.Tensor, start: torch.Tensor | None) -> bool:
    """Whether the noise a run starts from can change its output: not when it has a clean
    ``start`` and every step is at sigma <= IDENTITY_SIGMA, where :func:`sample` removes the
    noise it carries (the built-in model's upscale default: its estimate plus the guidance)."""
    return start is None or bool((sigmas[:-1] > IDENTITY_SIGMA).any())


def start_noise(
    noise: torch.Tensor, sigmas: torch.Tensor, start: torch.Tensor | None = None
) -> torch.Tensor:
    """u at the first sigma: ``sigma_0 * noise`` (Algorithm 1 step 1), or ``start + sigma_0 *
    noise`` for a partial-strength run from a clean start point."""
    x = sigmas[0].to(noise) * noise
    return x if start is None else start.to(noise) + x


__all__ = [
    "IDENTITY_SIGMA",
    "SampleResult",
    "StepInfo",
    "noise_reaches_output",
    "sample",
    "start_noise",
]

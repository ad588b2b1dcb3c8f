"""Shared condition helpers of the denoiser adapters: validation and low-resolution operators.

The super-resolution degradation model is the box (area) average over ``scale x scale`` blocks:
``down = avg_pool(scale)``; its adjoint-based projection ``x + up_nearest(lr - down(x))`` is the
orthogonal projection onto ``{x : down(x) = lr}`` (``down`` times its adjoint is ``I / scale^2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from warpcore.errors import InvalidInput
from warpcore.models.base import Condition


def upsample_lowres(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling of (3, h, w) or (N, 3, h, w) frames by ``scale``, clamped to [0, 1].

    The super-resolution condition of the paper (4.1) before VAE encoding; training builds its
    condition latents with this same function.
    """
    batch = image if image.ndim == 4 else image[None]
    up = F.interpolate(batch.float(), scale_factor=scale, mode="bicubic", align_corners=False)
    return up.clamp(0, 1)


def sigma_batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """sigma as a float32 (N,) tensor on x's device; accepts a scalar or (N,)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise InvalidInput(
            f"sigma: expected a scalar or shape ({x.shape[0]},), got {tuple(sigma.shape)}"
        )
    return sigma


def output_size(cond: Condition) -> tuple[int, int]:
    """The output frame (H, W): the image's size, times ``scale`` for upscaling."""
    factor = cond.scale if cond.task == "upscale" else 1
    return cond.image.shape[-2] * factor, cond.image.shape[-1] * factor


def check_condition(cond: Condition, tasks: tuple[str, ...], name: str) -> torch.Tensor:
    """Validate a condition for a model serving ``tasks`` (empty: any); return its image batch."""
    if tasks and cond.task not in tasks:
        raise InvalidInput(
            f"{name}: task {cond.task!r} does not fit this model, which serves {', '.join(tasks)}; "
            "inpainting needs a 9-channel inpainting UNet, super-resolution an 8-channel SR "
            "fine-tune or a 4-channel model with strength < 1 (zero-shot)"
        )
    image = cond.image
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InvalidInput(f"{name}: condition image: expected (3, H, W) in [0, 1], got {got}")
    if cond.task == "inpaint":
        mask = cond.mask
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (1, *image.shape[1:]):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else mask
            raise InvalidInput(
                f"{name}: inpainting mask: expected (1, {image.shape[1]}, {image.shape[2]}) "
                f"with 1 = region to fill, got {got}"
            )
    if cond.task == "upscale" and (not isinstance(cond.scale, int) or cond.scale < 1):
        raise InvalidInput(f"{name}: scale: expected an integer >= 1, got {cond.scale!r}")
    return image.float()[None]


def check_images(image: torch.Tensor, name: str) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InvalidInput(f"{name}: encode expects images (N, 3, H, W) in [0, 1], got {got}")


def box_down(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Area average over ``scale x scale`` blocks: the low-res measurement of (N, C, H, W)."""
    return F.avg_pool2d(image, scale) if scale > 1 else image


def project_lowres(image: torch.Tensor, lowres: torch.Tensor, scale: int) -> torch.Tensor:
    """``image + up(lowres - down(image))``: afterwards ``box_down(result) == lowres`` exactly.

    Differentiable in ``image``; ``lowres`` is (1 or N, C, H / scale, W / scale).
    """
    residual = lowres - box_down(image, scale)
    if scale > 1:
        residual = residual.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return image + residual

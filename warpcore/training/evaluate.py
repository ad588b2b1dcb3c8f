"""Score built-in weights on the held-out validation crops (``warpdiff train --evaluate W``).

Reports, per task, the PSNR of: Heun samplings of a few lengths from fixed GP-like noise, the
one-call estimate ``D(b, sigma_max)`` (:meth:`EDMUNet.estimate`, the posterior mean), runs at
partial strength (the last steps only, from the noised start point the product uses: the
estimate, or for weights that predate it the base ``b``) and the classical baseline (OpenCV
Telea inpainting, bicubic upsampling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from warpcore.models.builtin import load_net, start_mode
from warpcore.training.batches import validation_batches
from warpcore.training.builtin_backend import _cond, cv2_inpaint, heun_sample, masked_psnr
from warpcore.training.data import NoiseBank, load_photos, split


@torch.no_grad()
def evaluate_weights(
    weights: str | Path | None = None,
    steps: tuple[int, ...] = (10, 25),
    n: int = 16,
    crop: int = 64,
    seed: int = 4321,
    strengths: dict[str, tuple[float, ...]] | None = None,
) -> dict[str, Any]:
    """PSNRs (dB) on ``n`` held-out ``crop``-pixel crops per task; see the module docstring."""
    strengths = strengths or {"inpaint": (0.3, 0.5), "upscale": (0.3, 0.5)}
    net = load_net(weights).eval()
    _train, val_photos = split(load_photos())
    batches = validation_batches(val_photos, n, crop)
    out: dict[str, Any] = {"weights": str(weights or "shipped"), "crops": n, "crop": crop}
    bank = NoiseBank("gp", 3, crop, count=n, seed=seed)  # GP noise, 2/pi px, as in training
    for task, batch in batches.items():
        cond, mask = _cond(batch), (batch.mask if task == "inpaint" else None)
        noise = bank.sample(n, torch.Generator().manual_seed(seed))

        for k in steps:
            sample = heun_sample(net, noise, cond, batch.task, k)
            out[f"{task}_heun{k}_psnr"] = _score(sample, batch.clean, mask)
        estimate = net.estimate(cond, batch.task)
        start = estimate if start_mode(net.config, task) == "estimate" else cond[:, :3]
        for strength in strengths[task]:  # partial runs from the noised start point
            sample = heun_sample(net, noise, cond, batch.task, steps[0], strength, start=start)
            out[f"{task}_heun{steps[0]}_strength{strength:g}_psnr"] = _score(
                sample, batch.clean, mask
            )
        out[f"{task}_mean_psnr"] = _score(estimate, batch.clean, mask)
        baseline = cv2_inpaint(batch) if task == "inpaint" else batch.image
        out[f"{task}_baseline_psnr"] = _score(2.0 * baseline - 1.0, batch.clean, mask)
    return out


def _score(x: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor | None) -> float:
    """PSNR of model-grid output ``x`` ([-1, 1]); inpainting is composited on the known pixels."""
    img = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
    if mask is not None:
        img = mask * img + (1.0 - mask) * clean
    return round(masked_psnr(img, clean, mask), 2)

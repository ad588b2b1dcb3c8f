"""The built-in model's side of training: EDM loss with GP noise, validation by sampling.

Loss (METHOD.md section 3): ``E lambda(sigma) || D(x0 + sigma e, sigma, c) - x0 ||^2`` with
``e`` from the GP noise bank, ``ln sigma ~ N(p_mean, p_std^2)`` and EDM's weight
``lambda = (sigma^2 + sd^2) / (sigma sd)^2``. A share ``mean_fraction`` of the samples trains
the one-call estimate instead: ``sigma = sigma_max`` and ``x = b`` (the base itself, no noise),
whose loss is the plain regression ``|| F - (x0 - b) / sd ||^2``: the posterior mean the
product starts from (:meth:`warpcore.models.builtin.EDMUNet.estimate`). The lognormal alone
reaches ``sigma_max`` in under 1% of the samples, which left that estimate barely trained.

With ``part = "estimator"`` only the upscale estimator trains (the UNet of ``init`` is kept):
an L1 regression of the clean crop on its bicubic upsample, as EDSR trains (L1 converged to a
higher PSNR than L2 in their study).

Validation scores what the product runs: the one-call estimate and the default partial run
(the default strength's last steps from the estimate), against Telea / bicubic.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from warpcore.models.blocknet import DEFAULT_ESTIMATOR, BlockNet
from warpcore.models.builtin import (
    DEFAULT_CONFIG,
    DEFAULT_STEPS,
    ESTIMATOR_DEFAULTS,
    EDMUNet,
    condition_tensor,
    load_net,
    save_weights,
    start_mode,
)
from warpcore.sampler import sample, start_noise
from warpcore.schedule import karras_sigmas, truncate
from warpcore.training.batches import Batch
from warpcore.training.config import TrainConfig
from warpcore.training.data import NoiseBank


def _cond(batch: Batch) -> torch.Tensor:
    inpaint = condition_tensor("inpaint", batch.image, batch.mask)
    upscale = condition_tensor("upscale", batch.image)
    return torch.where((batch.task == 0).reshape(-1, 1, 1, 1), inpaint, upscale)


class BuiltinBackend:
    """Trains :class:`warpcore.models.builtin.EDMUNet`; ``model`` is the trainable UNet."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        if cfg.init:
            self.net = load_net(cfg.init)
            # trained here with the one-call estimate: the product starts from it
            # (and the product's other defaults: the structure fill, the calibrated upscale
            # weight; with an estimator, its own: ESTIMATOR_DEFAULTS)
            self.net.config.update(
                {
                    k: DEFAULT_CONFIG[k]
                    for k in ("start", "strength", "estimate_weight", "calibrate", "fill")
                }
            )
        else:
            torch.manual_seed(cfg.seed)
            self.net = EDMUNet(
                {
                    "block_out_channels": list(cfg.block_out_channels),
                    "layers_per_block": cfg.layers_per_block,
                }
            )
        self.model: torch.nn.Module = self.net.unet
        if cfg.part == "estimator":
            if self.net.estimator is None:
                torch.manual_seed(cfg.seed)
                shape = {"width": cfg.estimator_width, "blocks": cfg.estimator_blocks}
                self.net.config["estimator"] = {**DEFAULT_ESTIMATOR, **shape}
                self.net.estimator = BlockNet.from_config(self.net.config["estimator"])
            self.net.unet.requires_grad_(False)
            self.model = self.net.estimator
        if self.net.estimator is not None:  # its detail is used whole, uncalibrated
            self.net.config.update(copy.deepcopy(ESTIMATOR_DEFAULTS))
        self.bank = NoiseBank(cfg.noise, 3, cfg.crop, cfg.bank_size, cfg.seed)

    def loss(self, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        if cfg.part == "estimator":  # every sample is upscale: b is the upsampled input
            b = 2.0 * batch.image - 1.0
            return (self.net.estimator(b) - (2.0 * batch.clean - 1.0)).abs().mean()
        sd = self.net.sigma_data[batch.task].reshape(-1, 1, 1, 1)
        n = batch.clean.shape[0]
        x0 = 2.0 * batch.clean - 1.0
        sigma = (torch.randn(n, generator=gen) * cfg.p_std + cfg.p_mean).exp()
        one_call = torch.rand(n, generator=gen) < cfg.mean_fraction
        sigma = torch.where(one_call, float(self.net.config["sigma_max"]), sigma)
        e = self.bank.sample(n, gen)
        s = sigma.reshape(-1, 1, 1, 1)
        cond = _cond(batch)
        x = torch.where(one_call.reshape(-1, 1, 1, 1), self.net.base(cond), x0 + s * e)
        denoised = self.net(x, sigma, cond, batch.task)
        weight = (s**2 + sd**2) / (s * sd) ** 2
        return (weight * (denoised - x0) ** 2).mean()

    @torch.no_grad()
    def validate(
        self, val: dict[str, Batch], ema: dict[str, torch.Tensor] | None
    ) -> dict[str, Any]:
        """PSNR of the one-call estimate and of the default partial run (the default strength's
        last steps of a ``DEFAULT_STEPS`` schedule, from the estimate) against the classical
        baselines, per task. ``score``: the mean margin over the baselines of both."""
        net = self.net
        if ema is not None:
            net = EDMUNet(self.net.config)
            net.load_state_dict(self.net.state_dict())
            (net.estimator if self.cfg.part == "estimator" else net.unet).load_state_dict(ema)
        net.eval()
        out: dict[str, Any] = {}
        margins = []
        for task, batch in val.items():
            if task not in self.cfg.tasks:
                continue
            cond = _cond(batch)
            noise = _fixed_noise(self.bank, batch.clean.shape, seed=4321)
            estimate = net.estimate(cond, batch.task)
            strength = float(net.config["strength"][task])
            start = estimate if start_mode(net.config, task) == "estimate" else cond[:, :3]
            sample = heun_sample(net, noise, cond, batch.task, DEFAULT_STEPS, strength, start=start)
            mask = batch.mask if task == "inpaint" else None
            base = cv2_inpaint(batch) if task == "inpaint" else batch.image
            out[f"{task}_baseline_psnr"] = masked_psnr(base, batch.clean, mask)
            for name, x in (("psnr", sample), ("mean_psnr", estimate)):
                result = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
                if mask is not None:
                    result = mask * result + (1.0 - mask) * batch.clean
                out[f"{task}_{name}"] = masked_psnr(result, batch.clean, mask)
                margins.append(out[f"{task}_{name}"] - out[f"{task}_baseline_psnr"])
        out["score"] = float(np.mean(margins))
        net.train()
        return out

    def export(self, folder: Path, state: dict[str, torch.Tensor]) -> Path:
        return save_weights(self.net, state, folder, part=self.cfg.part)


def _fixed_noise(bank: NoiseBank, shape: torch.Size, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if shape[-1] != bank.crop or shape[-2] != bank.crop:
        return torch.randn(shape, generator=gen)
    return bank.sample(shape[0], gen)


def heun_sample(
    net: EDMUNet,
    noise: torch.Tensor,
    cond: torch.Tensor,
    task: torch.Tensor,
    steps: int,
    strength: float = 1.0,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """The engine's PF-ODE sampler (Heun, no churn) on the Karras schedule, from sigma_max; or,
    for ``strength`` < 1, the last steps only, from ``start`` (default: the base ``b``) noised,
    as the restorer does."""
    sigmas = karras_sigmas(steps, float(net.config["sigma_min"]), float(net.config["sigma_max"]))
    sigmas = truncate(sigmas, strength)
    n = noise.shape[0]
    if strength < 1.0 and start is None:
        start = cond[:, :3]
    clean = start if strength < 1.0 else None
    x = start_noise(noise, sigmas, clean)
    result = sample(
        lambda u, s: net(u, s.expand(n), cond, task), x, sigmas, method="heun", start=clean
    )
    return result.x


def masked_psnr(result: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Mean over images of the PSNR (dB, peak 1) on the masked pixels (all pixels if None)."""
    err = (result - clean) ** 2
    if mask is None:
        mse = err.mean(dim=(1, 2, 3))
    else:
        mse = (err * mask).sum(dim=(1, 2, 3)) / (3 * mask.sum(dim=(1, 2, 3))).clamp_min(1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def cv2_inpaint(batch: Batch, radius: int = 3) -> torch.Tensor:
    """The classical baseline: OpenCV's Telea inpainting of each masked frame."""
    out = []
    for img, m in zip(batch.image, batch.mask, strict=True):
        u8 = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        hole = (m[0].numpy() > 0.5).astype(np.uint8)
        filled = cv2.inpaint(u8, hole, radius, cv2.INPAINT_TELEA)
        out.append(torch.from_numpy(filled.astype(np.float32) / 255.0).permute(2, 0, 1))
    return torch.stack(out)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant or cosine decay to 5% of ``lr`` at ``steps``."""
    lr = float(cfg.lr)
    if cfg.warmup and step < cfg.warmup:
        return lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return lr
    t = min(1.0, (step - (cfg.warmup or 0)) / max(1, cfg.steps - (cfg.warmup or 0)))
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

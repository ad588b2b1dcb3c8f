"""Training and validation batches: clean crops plus their inpainting / super-resolution inputs.

A batch is a function of (photos, config, step seed) only, so a resumed run sees the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from warpcore.models.builtin import TASK_INDEX
from warpcore.models.conditions import upsample_lowres
from warpcore.training.data import P_SOFT, Photo, degrade, random_crop, soften
from warpcore.training.masks import random_mask


@dataclass(frozen=True)
class Batch:
    """``clean`` (N, 3, H, W) in [0, 1]; ``image``: masked frame (inpaint) or upsampled low-res
    frame (upscale), (N, 3, H, W) in [0, 1]; ``mask`` (N, 1, H, W), zeros for upscale;
    ``task`` (N,) long (0 inpaint, 1 upscale); ``scale`` (N,) long (1 for inpaint)."""

    clean: torch.Tensor
    image: torch.Tensor
    mask: torch.Tensor
    task: torch.Tensor
    scale: torch.Tensor


def _sample(
    rng: np.random.Generator,
    photo: Photo,
    task: str,
    crop: int,
    scale: int,
    augment: bool,
    soft: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    clean = random_crop(rng, photo, crop, augment)
    if task == "inpaint":
        mask = random_mask(rng, crop, crop)
        return clean, clean * (1.0 - mask[..., None]), mask
    if soft:  # the target itself is soft (data.P_SOFT): footage is not always sharp
        clean = soften(rng, clean, scale)
    low = degrade(rng, clean, scale) if augment else _plain_lowres(clean, scale)
    up = upsample_lowres(torch.from_numpy(low).permute(2, 0, 1)[None], scale)[0]
    return clean, up.permute(1, 2, 0).numpy(), np.zeros((crop, crop), np.float32)


def _plain_lowres(clean: np.ndarray, scale: int) -> np.ndarray:
    h, w = clean.shape[:2]
    return cv2.resize(clean, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


def make_batch(
    rng: np.random.Generator,
    photos: list[Photo],
    n: int,
    crop: int,
    tasks: tuple[str, ...],
    scales: tuple[int, ...] = (4,),
    scale_weights: tuple[float, ...] = (1.0,),
    augment: bool = True,
    soft_every: int = 0,
) -> Batch:
    """``n`` random samples: a random photo, task (alternating when both) and SR scale each.
    Super-resolution targets are soft (:func:`warpcore.training.data.soften`) with probability
    ``P_SOFT`` when ``augment``, else every ``soft_every``-th sample (0: never)."""
    p = np.asarray(scale_weights, dtype=np.float64)
    p = p / p.sum()
    items, labels, factors = [], [], []
    for i in range(n):
        task = tasks[(i + int(rng.integers(len(tasks)))) % len(tasks)]
        scale = int(rng.choice(scales, p=p)) if task == "upscale" else 1
        photo = photos[int(rng.integers(len(photos)))]
        soft = rng.random() < P_SOFT if augment else soft_every > 0 and i % soft_every == 1
        items.append(_sample(rng, photo, task, crop, scale, augment, soft))
        labels.append(TASK_INDEX[task])
        factors.append(scale)
    clean, image, mask = (np.stack([it[k] for it in items]) for k in range(3))
    return Batch(
        clean=torch.from_numpy(clean).permute(0, 3, 1, 2).contiguous(),
        image=torch.from_numpy(np.ascontiguousarray(image)).permute(0, 3, 1, 2).contiguous(),
        mask=torch.from_numpy(mask)[:, None].contiguous(),
        task=torch.tensor(labels, dtype=torch.long),
        scale=torch.tensor(factors, dtype=torch.long),
    )


def validation_batches(
    photos: list[Photo], n: int, crop: int, seed: int = 12345
) -> dict[str, Batch]:
    """Fixed held-out crops per task: inpaint masks and plain area-downsampled x4 inputs, every
    other super-resolution crop with a soft target (footage soft at its own resolution)."""
    out = {}
    for task in ("inpaint", "upscale"):
        rng = np.random.default_rng([seed, TASK_INDEX[task]])
        out[task] = make_batch(
            rng, photos, n, crop, (task,), (4,), (1.0,), augment=False, soft_every=2
        )
    return out

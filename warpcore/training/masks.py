"""Random inpainting masks of varied shapes: strokes, boxes, blobs, polygons, silhouettes.

Every mask is a float32 (H, W) array, 1 = region to fill, drawn from a ``numpy`` Generator so a
training step's masks depend only on its seed.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from warpcore.errors import InvalidInput

Mask = np.ndarray


def strokes(rng: np.random.Generator, h: int, w: int) -> Mask:
    """Thick free-hand strokes (random walks drawn with round caps)."""
    m = np.zeros((h, w), np.uint8)
    size = min(h, w)
    for _ in range(rng.integers(1, 4)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        width = int(rng.uniform(0.04, 0.15) * size) + 1
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(2, 7)):
            angle += rng.normal(0, 0.8)
            length = rng.uniform(0.1, 0.4) * size
            nx = float(np.clip(x + length * np.cos(angle), 0, w - 1))
            ny = float(np.clip(y + length * np.sin(angle), 0, h - 1))
            cv2.line(m, (int(x), int(y)), (int(nx), int(ny)), 1, width, lineType=cv2.LINE_8)
            x, y = nx, ny
    return m.astype(np.float32)


def boxes(rng: np.random.Generator, h: int, w: int) -> Mask:
    """One to three axis-aligned rectangles."""
    m = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(1, 4)):
        bh = int(rng.uniform(0.1, 0.5) * h) + 1
        bw = int(rng.uniform(0.1, 0.5) * w) + 1
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        m[y : y + bh, x : x + bw] = 1.0
    return m


def blobs(rng: np.random.Generator, h: int, w: int) -> Mask:
    """Thresholded smooth noise: organic blobs covering roughly 10-40% of the frame."""
    sigma = rng.uniform(0.06, 0.15) * min(h, w)
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
    level = np.quantile(noise, 1.0 - rng.uniform(0.1, 0.4))
    return (noise >= level).astype(np.float32)


def polygon(rng: np.random.Generator, h: int, w: int) -> Mask:
    """A star-shaped random polygon, like an object silhouette, optionally with a 'limb'."""
    m = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    radius = rng.uniform(0.12, 0.35) * min(h, w)
    n = int(rng.integers(5, 14))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.5, 1.2, n)
    aspect = rng.uniform(0.5, 2.0)
    pts = np.stack([cx + radii * np.cos(angles), cy + aspect * radii * np.sin(angles)], axis=1)
    cv2.fillPoly(m, [pts.astype(np.int32)], 1)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        end = (int(cx + 2 * radius * np.cos(a)), int(cy + 2 * radius * np.sin(a)))
        cv2.line(m, (int(cx), int(cy)), end, 1, max(1, int(radius * 0.4)))
    return m.astype(np.float32)


def ellipses(rng: np.random.Generator, h: int, w: int) -> Mask:
    """One or two rotated ellipses (round objects, heads, balls)."""
    m = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 3)):
        center = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(0.08, 0.3) * w) + 1, int(rng.uniform(0.08, 0.3) * h) + 1)
        cv2.ellipse(m, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(np.float32)


SHAPES: dict[str, Callable[[np.random.Generator, int, int], Mask]] = {
    "strokes": strokes,
    "boxes": boxes,
    "blobs": blobs,
    "polygon": polygon,
    "ellipses": ellipses,
}


def random_mask(rng: np.random.Generator, h: int, w: int, shape: str | None = None) -> Mask:
    """A random mask of a random (or the named) shape; never empty, never the whole frame."""
    if h < 4 or w < 4:
        raise InvalidInput(f"mask size: expected h, w >= 4, got {h}x{w}")
    if shape is not None and shape not in SHAPES:
        raise InvalidInput(f"mask shape: got {shape!r}; accepted: {', '.join(SHAPES)}")
    names = list(SHAPES)
    for _ in range(8):
        name = shape or names[int(rng.integers(len(names)))]
        m = SHAPES[name](rng, h, w)
        if 0.02 < m.mean() < 0.75:
            return m
    m = np.zeros((h, w), np.float32)  # degenerate draws: fall back to a central box
    m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
    return m

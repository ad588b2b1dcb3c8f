"""``warpdiff bench propagate``: seconds per frame of inpainting propagation, and its accuracy.

A camera pan over a photograph with 3-pixel grain added (3.1 px right, 1.2 px down a frame at
1080p, scaled with the frame) with a grey square crossing it (a sixth of the frame's height,
12 px a frame at 1080p): per frame size, the median seconds of :meth:`Propagator.fill` once
its window is warm (one new consecutive plate flow a frame), the share of hole pixels filled,
and their PSNR against the clean plate. One CPU thread (the model has the rest).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import cv2
import numpy as np

from warpcore.bench.common import machine
from warpcore.bench.schema import MACHINE, MapOf

SIZES = ((540, 960), (1080, 1920))
RADIUS = 8


def _clip(h: int, w: int, n: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    from skimage import data

    k = h / 1080
    side = int(2.3 * max(h, w))
    photo = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC) / 255.0
    grain = np.random.default_rng(0).random((side // 3, side // 3, 1))  # 3 px detail, as film
    grain = cv2.resize(grain, (side, side), interpolation=cv2.INTER_CUBIC)[..., None]
    photo = np.clip(0.85 * photo + 0.15 * grain, 0, 1).astype(np.float32)
    pairs, plates = [], []
    q = h // 6
    for t in range(n):
        shift = np.float32([[1, 0, -0.05 * side - 3.1 * k * t], [0, 1, -0.1 * side - 1.2 * k * t]])
        plate = cv2.warpAffine(photo, shift, (w, h), flags=cv2.INTER_LINEAR)
        mask = np.zeros((h, w), np.float32)
        x0 = int(w / 3 + 12 * k * t)
        mask[2 * q : 4 * q, x0 : x0 + 2 * q] = 1.0
        pairs.append((plate * (1 - mask[..., None]) + 0.5 * mask[..., None], mask))
        plates.append(plate)
    return pairs, plates


SMOKE_SIZE = (90, 160)

# {"machine", "radius", "frames", "sizes": {"HxW": {...}}}
SCHEMA = {
    "machine": MACHINE,
    "radius": int,
    "frames": int,
    "sizes": MapOf(
        {
            "median_s_per_frame": float,
            "first_frame_s": float,
            "filled_share": float,
            "filled_psnr_db": float,
        }
    ),
}


def run_benchmark(quick: bool = False, smoke: bool = False) -> dict[str, Any]:
    """Propagation timing and accuracy per frame size; ``smoke``: one tiny size, 6 frames."""
    import torch

    from warpcore.propagate import Propagator

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    sizes = (SMOKE_SIZE,) if smoke else SIZES[:1] if quick else SIZES
    n = 6 if quick or smoke else 14
    result: dict[str, Any] = {"machine": machine(), "radius": RADIUS, "frames": n, "sizes": {}}
    for h, w in sizes:
        pairs, plates = _clip(h, w, n)
        propagator = Propagator(lambda i, p=pairs: p[i] if i < len(p) else None, n, RADIUS)
        seconds, filled, hole, errors = [], 0, 0, []
        for t in range(n):
            t0 = time.perf_counter()
            out, left = propagator.fill(t)
            seconds.append(time.perf_counter() - t0)
            got = (pairs[t][1] > 0.5) & (left < 0.5)
            filled, hole = filled + int(got.sum()), hole + int((pairs[t][1] > 0.5).sum())
            errors.append(float(np.mean((out[got] - plates[t][got]) ** 2)) if got.any() else 0.0)
        warm = seconds[RADIUS // 2 :] if n > RADIUS // 2 + 1 else seconds
        mse = float(np.mean(errors))
        result["sizes"][f"{h}x{w}"] = {
            "median_s_per_frame": round(statistics.median(warm), 3),
            "first_frame_s": round(seconds[0], 3),
            "filled_share": round(filled / max(hole, 1), 3),
            "filled_psnr_db": round(10 * np.log10(1.0 / max(mse, 1e-12)), 2),
        }
    return result


def format_result(result: dict[str, Any]) -> str:
    lines = [f"propagation, radius {result['radius']}, {result['frames']} frames, 1 thread"]
    for size, r in result["sizes"].items():
        lines.append(
            f"  {size}: {r['median_s_per_frame']} s/frame (first frame {r['first_frame_s']} s), "
            f"{100 * r['filled_share']:.0f}% of the hole filled at {r['filled_psnr_db']} dB"
        )
    return "\n".join(lines)

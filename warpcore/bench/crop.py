"""Crop vs whole-frame inpainting, side by side in one process (speed, and quality on a clip).

``python -m warpcore.bench.crop --size 1080x1920 --hole 120 --frames 2`` removes a square hole
(moving 4 px a frame) from a panning photograph at that size, with the request's defaults
except ``propagate`` (0 by default: every hole pixel is generated, the worst case), once through
the crop window and once whole-frame (``--order``), and prints seconds per
frame for both (wall and this process's CPU time), their ratio, the load average and the torch
threads. Both runs are scored against the original frames inside the hole (masked PSNR and
SSIM) and for temporal consistency (``warpcore.metrics``: warping errors of the whole frame, and
``warp_hole``: the warping error's map averaged over the hole). ``--video PATH`` uses the first
frames of a video instead (resized to ``--size``). ``--mask PNG`` takes a still matte (white =
remove), resized to the frame, instead of the square. ``--modes crop`` runs one mode only;
``--threads N`` sets torch's threads. ``--save DIR`` writes a side-by-side still (input | crop |
whole-frame) of the last frame.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from warpcore.metrics import ClipScorer
from warpcore.models import load_denoiser
from warpcore.request import RestoreRequest
from warpcore.restore import restore_clip


def _photo_clip(h: int, w: int, n: int) -> list[np.ndarray]:
    from skimage import data

    photo = data.astronaut().astype(np.float32) / 255.0
    big = cv2.resize(photo, (w + 8 * n, h + 4 * n), interpolation=cv2.INTER_CUBIC)
    return [
        np.ascontiguousarray(np.clip(big[2 * j : 2 * j + h, 8 * j : 8 * j + w], 0, 1))
        for j in range(n)
    ]


def _video_clip(path: str, h: int, w: int, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(path)
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        frames.append(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA))
    cap.release()
    if not frames:
        raise SystemExit(f"--video: no frames read from {path}")
    return frames


def _masks(args: argparse.Namespace, h: int, w: int, n: int) -> list[np.ndarray]:
    if args.mask:
        m = cv2.imread(args.mask, cv2.IMREAD_GRAYSCALE)
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) > 127
        return [m.astype(np.float32)] * n
    masks = []
    for j in range(n):
        m = np.zeros((h, w), np.float32)
        y, x = int(h * 0.55) - args.hole // 2, int(w * 0.45) - args.hole // 2 + 4 * j
        m[y : y + args.hole, x : x + args.hole] = 1.0
        masks.append(m)
    return masks


def _scores(
    outs: list[np.ndarray], frames: list[np.ndarray], masks: list[np.ndarray]
) -> dict[str, Any]:
    """Means of the metrics' values, plus ``warp_hole``: the warping error inside the hole."""
    scorer, in_hole = ClipScorer(), []
    for out, frame, mask in zip(outs, frames, masks, strict=True):
        scorer.add(out, frame, frame, mask)
        if scorer.error_map is not None:
            hole = torch.from_numpy(mask > 0.5)
            in_hole.append(float(scorer.error_map[0][hole].mean()))
    means = scorer.summary()["mean"]
    means["warp_hole"] = float(np.mean(in_hole)) if in_hole else None
    return means


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    frames = (
        _video_clip(args.video, h, w, args.frames) if args.video else _photo_clip(h, w, args.frames)
    )
    masks = _masks(args, h, w, len(frames))
    denoiser = load_denoiser("builtin", "inpaint")
    base = RestoreRequest(task="inpaint", propagate=args.propagate)
    modes = {"crop": base, "whole": replace(base, crop=False)}
    chosen = [m.strip() for m in args.modes.split(",")]
    if not chosen or any(m not in modes for m in chosen):
        raise SystemExit(f"--modes: got {args.modes!r}; accepted: crop, whole, crop,whole")
    order = chosen if args.order == "crop-first" else chosen[::-1]
    result: dict[str, Any] = {
        "size": [h, w],
        "frames": len(frames),
        "propagate": args.propagate,
        "torch_threads": torch.get_num_threads(),
        "load_before": os.getloadavg()[0],
    }
    outputs: dict[str, list[np.ndarray]] = {}
    for name in order:
        start, cpu = time.perf_counter(), time.process_time()
        outputs[name] = [o for _, o in restore_clip(modes[name], denoiser, frames, masks)]
        result[f"{name}_s_per_frame"] = (time.perf_counter() - start) / len(frames)
        result[f"{name}_cpu_s_per_frame"] = (time.process_time() - cpu) / len(frames)
    result["load_after"] = os.getloadavg()[0]
    if len(outputs) == 2:
        result["speedup"] = result["whole_s_per_frame"] / result["crop_s_per_frame"]
    for name, outs in outputs.items():
        result[f"{name}_scores"] = _scores(outs, frames, masks)
    if args.save and len(outputs) == 2:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        trio = np.concatenate(
            [frames[-1] * (1 - masks[-1][..., None])] + [outputs[k][-1] for k in ("crop", "whole")],
            axis=1,
        )
        path = Path(args.save) / "crop_vs_whole.png"
        cv2.imwrite(
            str(path), cv2.cvtColor((trio * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
        )
        result["still"] = str(path)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1080x1920", help="HxW")
    parser.add_argument("--hole", type=int, default=120, help="square hole side, pixels")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--propagate", type=int, default=0)
    parser.add_argument("--video", default=None)
    parser.add_argument("--mask", default=None)
    parser.add_argument("--order", default="crop-first", choices=("crop-first", "whole-first"))
    parser.add_argument("--modes", default="crop,whole", help="crop, whole or crop,whole")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument("--save", default=None)
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()

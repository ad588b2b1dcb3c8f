"""Crop vs whole-frame inpainting, side by side in one process (speed, and quality on a clip).

``python -m warpcore.bench.crop --size 1080x1920 --hole 120 --frames 2`` removes a square hole
from a panning photograph at that size, with the request's defaults except ``propagate`` (0 by
default: every hole pixel is generated, the worst case), once through the crop window and once
whole-frame, alternating the order per repeat, and prints seconds per frame for both and their
ratio. ``--video PATH`` uses the first frames of a video instead (resized to ``--size``), and
then also scores both runs against the original frames inside the hole (masked PSNR) and for
temporal consistency (``warpcore.metrics``: warping errors). ``--mask PNG`` takes a still matte
(white = remove), resized to the frame, instead of the square. ``--save DIR`` writes a
side-by-side still (input | crop | whole-frame) of the last frame.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from warpcore.metrics import score_clip
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    h, w = (int(v) for v in args.size.lower().split("x"))
    frames = (
        _video_clip(args.video, h, w, args.frames) if args.video else _photo_clip(h, w, args.frames)
    )
    masks = _masks(args, h, w, len(frames))
    denoiser = load_denoiser("builtin", "inpaint")
    base = RestoreRequest(task="inpaint", propagate=args.propagate)
    modes = {"crop": base, "whole": replace(base, crop=False)}
    result: dict[str, Any] = {"size": [h, w], "frames": len(frames), "propagate": args.propagate}
    outputs: dict[str, list[np.ndarray]] = {}
    for name in ("crop", "whole") if args.order == "crop-first" else ("whole", "crop"):
        start = time.perf_counter()
        outputs[name] = [o for _, o in restore_clip(modes[name], denoiser, frames, masks)]
        result[f"{name}_s_per_frame"] = (time.perf_counter() - start) / len(frames)
    result["speedup"] = result["whole_s_per_frame"] / result["crop_s_per_frame"]
    if args.video:
        for name, outs in outputs.items():
            scores = score_clip(outs, frames, frames, masks)
            result[f"{name}_scores"] = scores["mean"]
    if args.save:
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
    parser.add_argument("--save", default=None)
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()

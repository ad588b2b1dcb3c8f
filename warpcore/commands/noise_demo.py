"""``warpdiff noise-demo -o DIR``: every noise scheme following a synthetic camera move.

A photograph (scikit-image's astronaut) is filmed by a camera that pans, zooms in and rolls
slightly; the flows are known analytically. Each tile shows one scheme's noise (first three
channels as RGB), one tile shows the camera's view. In the video, ``fixed`` sticks to the
screen, ``resample`` boils, ``bilinear`` blurs, and ``gp`` / ``integral`` move with the image;
a caption under the tiles says so (:data:`CAPTION`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from warpcore.errors import InvalidInput
from warpcore.video import write_video
from warpcore.warps import SCHEMES, make_warper

CAPTION = (
    "Watch the noise against the camera: fixed sticks to the screen, resample boils, "
    "bilinear blurs; gp and integral move with the image (what the model needs)."
)
_PHOTO_SPAN = 0.55  # the frame covers this fraction of the photograph's width at frame 0
_LABEL_H = 18


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help="folder for the video and PNGs")
    parser.add_argument("--frames", type=int, default=24, help="number of frames (default 24)")
    parser.add_argument("--size", type=int, default=48, help="noise grid size (default 48)")
    parser.add_argument("--scale", type=int, default=4, help="display pixels per noise pixel")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--fps", type=float, default=12.0, help="video frame rate")


def camera(j: int, size: int, photo: int) -> np.ndarray:
    """2x3 affine map from frame j's grid pixels to photograph pixels (pan, zoom-in, roll)."""
    s = _PHOTO_SPAN * photo / size / (1.0 + 0.012 * j)
    a = math.radians(0.5 * j)
    centre = np.array([0.5 * photo - 60.0 + 3.0 * j, 0.42 * photo + 1.0 * j])
    m = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = (size - 1) / 2.0
    return np.concatenate([m, (centre - m @ np.array([c, c]))[:, None]], axis=1)


def flows(a: np.ndarray, b: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward, backward) flows between frames with cameras a (earlier) and b (later)."""
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    pts = np.stack([xs, ys, np.ones_like(xs)], axis=-1)

    def between(src: np.ndarray, dst: np.ndarray) -> torch.Tensor:
        world = pts @ src.T  # (H, W, 2) photo pixels
        inv = np.linalg.inv(np.vstack([dst, [0.0, 0.0, 1.0]]))[:2]
        moved = np.concatenate([world, np.ones_like(xs)[..., None]], axis=-1) @ inv.T
        return torch.from_numpy((moved - pts[..., :2]).transpose(2, 0, 1).astype(np.float32))

    return between(a, b), between(b, a)


def _noise_tile(noise: torch.Tensor, scale: int) -> np.ndarray:
    rgb = noise[:3].permute(1, 2, 0).numpy() if noise.shape[0] >= 3 else noise[:1].repeat(3, 1, 1)
    rgb = np.clip(0.5 + 0.2 * np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def _labelled(tile: np.ndarray, text: str) -> np.ndarray:
    band = np.zeros((_LABEL_H, tile.shape[1], 3), np.uint8)  # putText draws on 8-bit only
    cv2.putText(band, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255,) * 3, 1, cv2.LINE_AA)
    return np.concatenate([band.astype(np.float32) / 255.0, tile], axis=0)


def _mosaic(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    blank = np.zeros_like(tiles[0])
    tiles = tiles + [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    out = np.concatenate(rows, axis=0)
    return out[: out.shape[0] // 2 * 2, : out.shape[1] // 2 * 2]  # yuv420p needs even sizes


def render(frames: int, size: int, scale: int, seed: int) -> list[np.ndarray]:
    """The demo's frames, (H, W, 3) float32 in [0, 1]."""
    from skimage import data

    photo = data.astronaut().astype(np.float32) / 255.0
    warpers = {name: make_warper(name, 4, size, size, seed) for name in SCHEMES}
    view = size * scale
    # Display pixel u sits at grid coordinate (u + 0.5) / scale - 0.5.
    to_grid = np.array([[1 / scale, 0, 0.5 / scale - 0.5], [0, 1 / scale, 0.5 / scale - 0.5]])
    out = []
    for j in range(frames):
        cam = camera(j, size, photo.shape[1])
        if j == 0:
            noise = {name: w.first() for name, w in warpers.items()}
        else:
            fwd, bwd = flows(camera(j - 1, size, photo.shape[1]), cam, size)
            noise = {name: w.next(fwd, bwd) for name, w in warpers.items()}
        affine = cam @ np.vstack([to_grid, [0.0, 0.0, 1.0]])
        shot = cv2.warpAffine(
            photo, affine, (view, view), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        )
        tiles = [_labelled(shot, "camera")]
        tiles += [_labelled(_noise_tile(noise[n], scale), n) for n in SCHEMES]
        out.append(_captioned(_mosaic(tiles, columns=5), CAPTION))
    return out


def _captioned(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with ``text`` in a band below it, wrapped to the image's width."""
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if line and cv2.getTextSize(trial, font, size, 1)[0][0] > image.shape[1] - 8:
            lines.append(line)
            trial = word
        line = trial
    lines.append(line)
    band = np.zeros((_LABEL_H * len(lines) + 4, image.shape[1], 3), np.uint8)
    for i, row in enumerate(lines):
        y = 13 + i * _LABEL_H
        cv2.putText(band, row, (4, y), font, size, (255,) * 3, 1, cv2.LINE_AA)
    out = np.concatenate([image, band.astype(np.float32) / 255.0], axis=0)
    return out[: out.shape[0] // 2 * 2]  # yuv420p needs even sizes


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.frames <= 1000:
        raise InvalidInput(f"--frames: expected an integer in [2, 1000], got {args.frames}")
    if not 16 <= args.size <= 512:
        raise InvalidInput(f"--size: expected an integer in [16, 512], got {args.size}")
    if not 1 <= args.scale <= 8:
        raise InvalidInput(f"--scale: expected an integer in [1, 8], got {args.scale}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    frames = render(args.frames, args.size, args.scale, args.seed)
    write_video(out / "noise_schemes.mp4", frames, fps=args.fps)
    for j in sorted({int(round(k)) for k in np.linspace(0, len(frames) - 1, 4)}):
        rgb = (np.clip(frames[j], 0, 1) * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(str(out / f"noise_schemes_{j:03d}.png"), rgb[..., ::-1])
    print(f"wrote {out / 'noise_schemes.mp4'} ({len(frames)} frames) and PNGs to {out}")
    print(CAPTION)
    return 0

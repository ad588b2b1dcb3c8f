"""Evaluation suites: deterministic clips with exact ground truth (METHOD.md section 6).

Every synthetic clip is rendered from a photograph that scikit-image ships, so nothing is
downloaded, and every clip is a pure function of (suite, config, clip index): the same seed
gives the same arrays, bit for bit.

- ``shift-inpaint`` (paper Table 2): a crop of a photograph moving by an integer number of
  pixels per frame, with a random mask attached to the scene (it moves with the content).
  Frame t is an exact slice of the source canvas; the exact flows are constant.
- ``shift-sr``: the super-resolution twin of ``shift-inpaint``: a crop panning by a whole number
  of LOW-resolution cells per frame (so the input moves by exact whole pixels too), input the
  area downsample of the ground truth by ``scales[0]`` (4 by default).
- ``motion-inpaint`` / ``motion-sr``: sub-pixel pans, zooms and rotations. Frame t is rendered
  from a source at least twice its resolution through an affine map ``A_t`` (frame pixel ->
  source pixel): ``cv2.warpAffine`` (cubic) onto a 4x supersampled grid, then an area average.
  The exact flow between frames is ``A_{t+1}^-1 A_t``. Super-resolution inputs are the area
  downsample of the ground truth by 4 or 8 (clips alternate).
- ``demo``: a photograph under a camera pan and slow zoom with an object cut from another
  photograph (an elliptical matte) moving slowly over it (less than its own width over the
  clip, so part of the background is never seen and must be generated): the matte is the mask,
  the clean plate the ground truth; plus the clean plate downscaled 4x for super-resolution.
- :func:`video_suite`: the user's own footage, no synthetic ground truth (see its docstring).

Conventions (ARCHITECTURE.md): frames (H, W, 3) float32 in [0, 1]; masks (H, W), 1 = remove;
flows (2, H, W) in pixels, ``forward[t]`` = flow t -> t+1 on frame t's grid, ``backward[t]`` =
flow t+1 -> t on frame t+1's grid, both at the OUTPUT (ground-truth) resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from warpcore.errors import InvalidInput

SUITES = ("shift-inpaint", "motion-inpaint", "motion-sr", "demo", "shift-sr")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
SUPERSAMPLE = 4  # rendering grid per output pixel (each axis) for the affine suites
MIN_SOURCE_PX = 2.0  # source pixels per output pixel, at least: ground truth stays clean
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
_SUITE_IDS = {name: i + 1 for i, name in enumerate(SUITES)}


class Frames(Protocol):
    """A sized iterable of frames (a numpy array (T, ...) or a lazy video reader)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[np.ndarray]: ...


@dataclass(frozen=True)
class SuiteConfig:
    """Sizes of a suite's clips. ``size`` is the OUTPUT (ground-truth) size (H, W)."""

    clips: int = 2
    frames: int = 8
    size: tuple[int, int] = (64, 64)
    seed: int = 0
    scales: tuple[int, ...] = (4, 8)  # motion-sr: clip i uses scales[i % len(scales)]

    def __post_init__(self) -> None:
        for name, value, lo, hi in (
            ("clips", self.clips, 1, 1000),
            ("frames", self.frames, 2, 10_000),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InvalidInput(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
        h, w = self.size
        if min(h, w) < 16 or max(h, w) > 2048:
            raise InvalidInput(f"size: expected (H, W) with sides in [16, 2048], got {self.size}")
        if not self.scales or any(s not in (2, 4, 8) or h % s or w % s for s in self.scales):
            raise InvalidInput(
                f"scales: expected factors from (2, 4, 8) dividing the size {self.size}, "
                f"got {self.scales}"
            )


@dataclass(frozen=True, eq=False)
class Clip:
    """One clip of a suite. ``inputs`` is what a method sees (low-res for ``upscale``)."""

    name: str
    suite: str
    task: str  # "inpaint" or "upscale"
    inputs: Frames
    scale: int = 1
    masks: Frames | None = None  # inpaint: (T, H, W), 1 = remove
    truth: Frames | None = None  # (T, H, W, 3): the clean frames at output resolution
    forward: np.ndarray | None = None  # (T-1, 2, H, W) exact flow t -> t+1 (None: unknown)
    backward: np.ndarray | None = None  # (T-1, 2, H, W) exact flow t+1 -> t
    fps: float = 12.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.inputs)

    @property
    def exact_flows(self) -> bool:
        return self.forward is not None and self.backward is not None


# ---------------------------------------------------------------------------------------------
# Sources


def photo(name: str) -> np.ndarray:
    """A scikit-image photograph as (H, W, 3) float32 in [0, 1]."""
    import skimage.data

    if name not in PHOTOS:
        raise InvalidInput(f"photo: got {name!r}; accepted: {', '.join(PHOTOS)}")
    image = getattr(skimage.data, name)()
    return np.ascontiguousarray(image[..., :3], dtype=np.float32) / 255.0


def _resized(image: np.ndarray, short_side: int) -> np.ndarray:
    """``image`` scaled (area / cubic) so that its shorter side is ``short_side``."""
    h, w = image.shape[:2]
    f = short_side / min(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    return np.clip(cv2.resize(image, size, interpolation=interp), 0, 1).astype(np.float32)


def _rng(seed: int, suite: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SUITE_IDS.get(suite, 0), index])


# ---------------------------------------------------------------------------------------------
# Masks


def random_mask(
    rng: np.random.Generator, size: tuple[int, int], coverage: tuple[float, float] = (0.1, 0.25)
) -> np.ndarray:
    """A random (H, W) float32 mask of boxes, ellipses and brush strokes (1 = remove).

    Shapes are added until the covered fraction reaches a target drawn from ``coverage``.
    """
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    target = rng.uniform(*coverage)
    while mask.mean() < target:
        kind = rng.integers(3)
        cx, cy = int(rng.uniform(0.15, 0.85) * w), int(rng.uniform(0.15, 0.85) * h)
        if kind == 0:
            bw, bh = (int(rng.uniform(0.1, 0.3) * s) for s in (w, h))
            cv2.rectangle(mask, (cx - bw // 2, cy - bh // 2), (cx + bw // 2, cy + bh // 2), 1, -1)
        elif kind == 1:
            axes = (int(rng.uniform(0.06, 0.18) * w), int(rng.uniform(0.06, 0.18) * h))
            cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            pts = [(cx, cy)]
            for _ in range(int(rng.integers(2, 5))):
                step = rng.uniform(0.08, 0.2) * min(h, w)
                angle = rng.uniform(0, 2 * np.pi)
                x = int(np.clip(pts[-1][0] + step * np.cos(angle), 0, w - 1))
                y = int(np.clip(pts[-1][1] + step * np.sin(angle), 0, h - 1))
                pts.append((x, y))
            thick = max(2, int(rng.uniform(0.03, 0.07) * min(h, w)))
            cv2.polylines(mask, [np.array(pts, np.int32)], False, 1, thick)
    return mask.astype(np.float32)


def _grey_holes(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Inputs of the inpainting suites: the hole is unknown, shown as mid-grey."""
    m = masks[..., None] > 0.5
    return np.where(m, np.float32(0.5), frames).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# shift-inpaint: integer shifts, exact slices


def shift_clip(config: SuiteConfig, index: int, cell: int = 1) -> Clip:
    """Clip ``index`` of ``shift-inpaint``: frame t = canvas[oy - vy t : +H, ox - vx t : +W].

    ``cell`` > 1 (``shift-sr``): the speed is a whole number of ``cell`` x ``cell`` blocks a
    frame, -1..1 blocks per axis, and the clip is a super-resolution clip by ``cell``."""
    suite = "shift-inpaint" if cell == 1 else "shift-sr"
    rng = _rng(config.seed, suite, index)
    name = PHOTOS[index % len(PHOTOS)]
    h, w = config.size
    speed = np.array([0, 0])
    while not speed.any():
        speed = rng.integers(-3, 4, size=2) if cell == 1 else cell * rng.integers(-1, 2, size=2)
    vx, vy = int(speed[0]), int(speed[1])
    travel_x, travel_y = abs(vx) * (config.frames - 1), abs(vy) * (config.frames - 1)
    short = int(max(h + travel_y, w + travel_x, 2.5 * max(h, w)))
    canvas = _resized(photo(name), short)
    ch, cw = canvas.shape[:2]
    # Origins of every crop must stay inside the canvas.
    oy = int(
        rng.integers(
            max(0, vy) * (config.frames - 1), ch - h - max(0, -vy) * (config.frames - 1) + 1
        )
    )
    ox = int(
        rng.integers(
            max(0, vx) * (config.frames - 1), cw - w - max(0, -vx) * (config.frames - 1) + 1
        )
    )
    canvas_mask = np.zeros((ch, cw), np.float32)
    canvas_mask[oy : oy + h, ox : ox + w] = random_mask(rng, (h, w))
    frames, masks = [], []
    for t in range(config.frames):
        y, x = oy - vy * t, ox - vx * t
        frames.append(canvas[y : y + h, x : x + w])
        masks.append(canvas_mask[y : y + h, x : x + w])
    truth, masks_arr = np.stack(frames), np.stack(masks)
    fwd = np.broadcast_to(
        np.array([vx, vy], np.float32)[None, :, None, None], (config.frames - 1, 2, h, w)
    )
    info = {"photo": name, "shift_px": [vx, vy], "canvas_origin": [ox, oy], "canvas": canvas}
    if cell > 1:
        return Clip(
            name=f"shift-{index:02d}-{name}-x{cell}", suite=suite, task="upscale",
            inputs=downsample(truth, cell), scale=cell, truth=truth,
            forward=np.ascontiguousarray(fwd), backward=np.ascontiguousarray(-fwd), info=info,
        )  # fmt: skip
    return Clip(
        name=f"shift-{index:02d}-{name}",
        suite="shift-inpaint",
        task="inpaint",
        inputs=_grey_holes(truth, masks_arr),
        masks=masks_arr,
        truth=truth,
        forward=np.ascontiguousarray(fwd),
        backward=np.ascontiguousarray(-fwd),
        info=info,
    )


# ---------------------------------------------------------------------------------------------
# Affine rendering (motion suites and demo)


@dataclass(frozen=True)
class Motion:
    """A camera move: frame pixel p -> source pixel A_t p (pixel-centre coordinates).

    ``A_t p = centre + m0 * zoom^-t * R(angle0 + spin t) (p - c) + pan * t`` with c the frame
    centre: the view moves by ``pan`` source pixels a frame, turns by ``spin`` degrees and
    magnifies by ``zoom`` a frame (zoom > 1: the content grows).
    """

    centre: tuple[float, float]  # source pixel the frame centre shows at t = 0
    m0: float  # source pixels per frame pixel at t = 0
    pan: tuple[float, float] = (0.0, 0.0)  # source pixels per frame
    spin: float = 0.0  # degrees per frame
    zoom: float = 1.0  # magnification per frame
    angle0: float = 0.0


def affine(motion: Motion, t: int, size: tuple[int, int]) -> np.ndarray:
    """The 3x3 matrix A_t: frame pixel (x, y, 1) -> source pixel."""
    h, w = size
    m = motion.m0 * motion.zoom ** (-t)
    a = np.deg2rad(motion.angle0 + motion.spin * t)
    rot = m * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    shift = np.array(motion.centre) + np.array(motion.pan) * t - rot @ c
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = rot, shift
    return out


def render(
    source: np.ndarray, matrix: np.ndarray, size: tuple[int, int], border: str = "reflect"
) -> np.ndarray:
    """Frame (H, W, C) of ``source`` under ``matrix`` (frame pixel -> source pixel).

    Cubic sampling on a SUPERSAMPLE x finer grid, then an area average: the frame pixel is the
    mean of the source over its footprint (no aliasing when the source is finer than the frame).
    ``border``: "reflect" (a photograph) or "zero" (a matte: nothing outside it).
    """
    h, w = size
    k = SUPERSAMPLE
    off = 0.5 / k - 0.5  # supersampled pixel X sits at frame coordinate (X + 0.5) / k - 0.5
    sup = np.array([[1 / k, 0, off], [0, 1 / k, off], [0, 0, 1]])
    m = (matrix @ sup)[:2].astype(np.float64)
    fine = cv2.warpAffine(
        source, m, (w * k, h * k), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101 if border == "reflect" else cv2.BORDER_CONSTANT,
    )  # fmt: skip
    out = cv2.resize(fine, (w, h), interpolation=cv2.INTER_AREA)
    out = out.reshape(h, w, *source.shape[2:])  # OpenCV drops a single channel axis
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def affine_flows(
    motion: Motion, frames: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (forward, backward) flows (T-1, 2, H, W) of a camera move, float32."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])
    fwd, bwd = [], []
    for t in range(frames - 1):
        a, b = affine(motion, t, size), affine(motion, t + 1, size)
        for to, src, dst in ((fwd, a, b), (bwd, b, a)):
            q = np.linalg.solve(dst, src) @ pts  # p of one frame -> the other frame's pixel
            to.append((q[:2] - pts[:2]).reshape(2, h, w))
    return np.stack(fwd).astype(np.float32), np.stack(bwd).astype(np.float32)


def _random_motion(
    rng: np.random.Generator,
    kind: str,
    source_shape: tuple[int, int],
    size: tuple[int, int],
    frames: int,
) -> Motion:
    """A sub-pixel move of ``kind`` (pan, zoom, rotate, mixed) that keeps inside the source."""
    sh, sw = source_shape
    h, w = size
    m0 = max(MIN_SOURCE_PX, rng.uniform(0.25, 0.4) * min(sh, sw) / max(h, w))
    speed = rng.uniform(0.4, 1.6) * m0  # frame pixels per frame, in source pixels
    angle = rng.uniform(0, 2 * np.pi)
    pan = (speed * np.cos(angle), speed * np.sin(angle)) if kind in ("pan", "mixed") else (0, 0)
    spin = rng.choice([-1, 1]) * rng.uniform(0.6, 1.8) if kind in ("rotate", "mixed") else 0.0
    zoom = 1 + rng.choice([-1, 1]) * rng.uniform(0.01, 0.025) if kind in ("zoom", "mixed") else 1.0
    # Keep the view (with its travel) inside the source: start so that it ends centred.
    travel = np.array(pan) * (frames - 1)
    centre = (sw / 2 - travel[0] / 2, sh / 2 - travel[1] / 2)
    return Motion(centre=centre, m0=float(m0), pan=pan, spin=float(spin), zoom=float(zoom))


def render_clip(
    source: np.ndarray, motion: Motion, frames: int, size: tuple[int, int]
) -> np.ndarray:
    """(T, H, W, C) frames of ``source`` under a camera move."""
    return np.stack([render(source, affine(motion, t, size), size) for t in range(frames)])


def downsample(frames: np.ndarray, scale: int) -> np.ndarray:
    """Area downsample (T, H, W, 3) by ``scale`` (the mean of each scale x scale block)."""
    t, h, w, c = frames.shape
    blocks = frames.reshape(t, h // scale, scale, w // scale, scale, c)
    return blocks.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


MOTION_KINDS = ("pan", "zoom", "rotate", "mixed")


def motion_clip(config: SuiteConfig, index: int, task: str) -> Clip:
    """Clip ``index`` of ``motion-inpaint`` (task inpaint) or ``motion-sr`` (task upscale)."""
    suite = "motion-inpaint" if task == "inpaint" else "motion-sr"
    rng = _rng(config.seed, suite, index)
    name = PHOTOS[index % len(PHOTOS)]
    kind = MOTION_KINDS[index % len(MOTION_KINDS)]
    source = _resized(photo(name), int(MIN_SOURCE_PX * 2.5 * max(config.size)))
    motion = _random_motion(rng, kind, source.shape[:2], config.size, config.frames)
    truth = render_clip(source, motion, config.frames, config.size)
    fwd, bwd = affine_flows(motion, config.frames, config.size)
    info = {"photo": name, "motion": kind, **_motion_info(motion)}
    if task == "inpaint":
        masks = _scene_masks(random_mask(rng, config.size), source.shape[:2], motion, config)
        return Clip(
            name=f"motion-{index:02d}-{kind}-{name}", suite=suite, task="inpaint",
            inputs=_grey_holes(truth, masks), masks=masks, truth=truth, forward=fwd,
            backward=bwd, info=info,
        )  # fmt: skip
    scale = config.scales[index % len(config.scales)]
    return Clip(
        name=f"motion-{index:02d}-{kind}-{name}-x{scale}", suite=suite, task="upscale",
        inputs=downsample(truth, scale), scale=scale, truth=truth, forward=fwd, backward=bwd,
        info=info,
    )  # fmt: skip


def _scene_masks(
    mask0: np.ndarray, source_shape: tuple[int, int], motion: Motion, config: SuiteConfig
) -> np.ndarray:
    """Masks (T, H, W) of a shape drawn on frame 0 and attached to the scene (moves with it)."""
    a0 = affine(motion, 0, config.size)[:2]
    on_source = cv2.warpAffine(
        mask0, a0, (source_shape[1], source_shape[0]), flags=cv2.INTER_LINEAR
    )  # frame 0 -> source: a forward map
    frames = [render(on_source[..., None], affine(motion, t, config.size), config.size, "zero")
              for t in range(config.frames)]  # fmt: skip
    frames = np.stack(frames)[..., 0]
    return (frames > 0.5).astype(np.float32)


def _motion_info(motion: Motion) -> dict[str, Any]:
    return {
        "pan_px_per_frame": [round(p / motion.m0, 3) for p in motion.pan],
        "spin_deg_per_frame": round(motion.spin, 3),
        "zoom_per_frame": round(motion.zoom, 4),
    }


# ---------------------------------------------------------------------------------------------
# demo: a camera move over a photograph, with an object cut from another photograph


@dataclass(frozen=True)
class DemoConfig:
    """The bundled demo clip. ``size`` (H, W) must be divisible by ``scale``."""

    size: tuple[int, int] = (96, 128)
    frames: int = 12
    scale: int = 4
    background: str = "coffee"
    cutout: str = "chelsea"
    seed: int = 0
    # How far the object moves across the frame over the clip (a fraction of the width). Less
    # than its own width (0.32 of it): the middle of its path stays hidden in every frame, so
    # there the background must be generated, and generated the same way in every frame.
    travel: float = 0.15

    def __post_init__(self) -> None:
        h, w = self.size
        if min(h, w) < 16 or h % self.scale or w % self.scale or self.scale not in (2, 4, 8):
            raise InvalidInput(
                f"size: expected (H, W) >= 16 divisible by the scale {self.scale} (2, 4 or 8), "
                f"got {self.size}"
            )
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 2:
            raise InvalidInput(f"frames: expected an integer >= 2, got {self.frames!r}")


def demo_clips(config: DemoConfig = DemoConfig()) -> list[Clip]:
    """The demo's two clips: remove the moving cut-out (inpaint), and the plate 4x (upscale)."""
    h, w = config.size
    m0 = 2.5  # source pixels per frame pixel: the plate is rendered from a finer photograph
    source = _resized(photo(config.background), int(round(h * m0 / 0.6)))
    sh, sw = source.shape[:2]
    pan = (0.6 * m0, 0.15 * m0)  # about 0.6 px a frame to the right, a little down
    travel = np.array(pan) * (config.frames - 1)
    motion = Motion(
        centre=(sw / 2 - travel[0] / 2, sh / 2 - travel[1] / 2), m0=m0, pan=pan, zoom=1.006
    )
    plate = render_clip(source, motion, config.frames, config.size)
    fwd, bwd = affine_flows(motion, config.frames, config.size)
    texture, matte = _cutout(config.cutout)
    alphas, objects = [], []
    for t in range(config.frames):
        matrix = _object_affine(t, config, texture.shape[:2])
        objects.append(render(texture, matrix, config.size))
        alphas.append(render(matte[..., None], matrix, config.size, border="zero")[..., 0])
    alpha = np.stack(alphas)[..., None]
    composite = (alpha * np.stack(objects) + (1 - alpha) * plate).astype(np.float32)
    grow = np.ones((5, 5), np.uint8)  # the matte's soft edge and 2 px more are removed
    masks = np.stack([cv2.dilate((a > 0.01).astype(np.uint8), grow) for a in alpha[..., 0]])
    info = {"photo": config.background, "cutout": config.cutout, **_motion_info(motion)}
    common = {"suite": "demo", "truth": plate, "forward": fwd, "backward": bwd, "info": info}
    return [
        Clip(name="demo-inpaint", task="inpaint", inputs=composite,
             masks=masks.astype(np.float32), **common),
        Clip(name=f"demo-upscale-x{config.scale}", task="upscale",
             inputs=downsample(plate, config.scale), scale=config.scale, **common),
    ]  # fmt: skip


def _cutout(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A square crop of ``name`` and its elliptical matte (antialiased edge)."""
    image = photo(name)
    side = int(min(image.shape[:2]) * 0.8)
    y0 = (image.shape[0] - side) // 2
    x0 = (image.shape[1] - side) // 2
    texture = np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side])
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    r = np.hypot((xs - side / 2) / (0.5 * side), (ys - side / 2) / (0.38 * side))
    matte = np.clip((1.0 - r) * side * 0.25, 0.0, 1.0).astype(np.float32)  # ~4 px soft edge
    return texture, matte


def _object_affine(t: int, config: DemoConfig, texture_shape: tuple[int, int]) -> np.ndarray:
    """Frame pixel -> texture pixel for the cut-out at frame t: it drifts right, bobbing."""
    h, w = config.size
    u = t / (config.frames - 1)
    travel = config.travel
    pos = np.array([w * (0.5 - travel / 2 + travel * u), h * (0.5 - 0.12 * np.sin(np.pi * u))])
    size_px = 0.42 * h  # the object's width in frame pixels
    s = texture_shape[1] / size_px  # texture pixels per frame pixel
    a = np.deg2rad(-10 + 20 * u)
    rot = s * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    centre = np.array([(texture_shape[1] - 1) / 2, (texture_shape[0] - 1) / 2])
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = rot, centre - rot @ pos
    return out


# ---------------------------------------------------------------------------------------------
# Suites by name, and the user's own footage


def suite_clips(name: str, config: SuiteConfig | None = None) -> list[Clip]:
    """Every clip of suite ``name`` (one of :data:`SUITES`)."""
    if name not in SUITES:
        raise InvalidInput(f"suite: got {name!r}; accepted: {', '.join(SUITES)} (or --videos DIR)")
    if name == "demo":
        return demo_clips(DemoConfig(seed=config.seed if config else 0))
    config = config or SuiteConfig()
    if name == "shift-inpaint":
        return [shift_clip(config, i) for i in range(config.clips)]
    if name == "shift-sr":
        return [shift_clip(config, i, config.scales[0]) for i in range(config.clips)]
    task = "inpaint" if name == "motion-inpaint" else "upscale"
    return [motion_clip(config, i, task) for i in range(config.clips)]


class _LazyFrames:
    """A sized, re-iterable view of a frame stream: at most ``limit`` frames, each mapped."""

    def __init__(self, make: Any, length: int, limit: int | None, fn: Any = None) -> None:
        self._make, self._fn = make, fn
        self._len = length if limit is None else min(length, limit)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[np.ndarray]:
        for i, frame in enumerate(self._make()):
            if i >= self._len:
                return
            yield frame if self._fn is None else self._fn(frame)


def video_suite(folder: str | Path, scale: int = 4, max_frames: int | None = None) -> list[Clip]:
    """Clips from the user's footage: every video file or frame folder in ``folder``.

    A clip with a mask beside it (``CLIP_mask.*`` or a folder ``CLIP_mask``) is an inpainting
    clip: no ground truth exists, so only the temporal metrics are computed. A clip without one
    is a super-resolution clip: its frames (cropped to a multiple of ``scale``) are the ground
    truth and their area downsample by ``scale`` the input, so PSNR/SSIM are real.
    """
    from warpcore.video import open_frames, open_masks

    root = Path(folder)
    if not root.is_dir():
        raise InvalidInput(f"videos: {root} is not a folder; expected a folder of clips")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    clips = []
    for path in entries:
        if path.stem.endswith("_mask") or not (path.is_dir() or path.suffix.lower() in VIDEO_EXTS):
            continue
        source = open_frames(path)
        mask_path = next((p for p in entries if p.stem == f"{path.stem}_mask"), None)
        n = len(source)
        if mask_path is not None:
            masks = open_masks(mask_path, source)
            clips.append(Clip(
                name=path.stem, suite="videos", task="inpaint", fps=source.fps,
                inputs=_LazyFrames(source.rgb, n, max_frames),
                masks=_LazyFrames(masks.__iter__, n, max_frames),
                info={"path": str(path), "mask": str(mask_path)},
            ))  # fmt: skip
            continue
        hh, ww = source.height // scale * scale, source.width // scale * scale
        if min(hh, ww) < 2 * scale:
            raise InvalidInput(f"videos: {path} is too small to downscale by {scale}")
        truth = _LazyFrames(source.rgb, n, max_frames, lambda f, a=hh, b=ww: f[:a, :b, :3])
        low = _LazyFrames(
            source.rgb,
            n,
            max_frames,
            lambda f, a=hh, b=ww: downsample(f[None, :a, :b, :3], scale)[0],
        )
        clips.append(Clip(
            name=path.stem, suite="videos", task="upscale", inputs=low, scale=scale, truth=truth,
            fps=source.fps, info={"path": str(path)},
        ))  # fmt: skip
    if not clips:
        raise InvalidInput(
            f"videos: {root} holds no clips; expected video files ({', '.join(VIDEO_EXTS)}) or "
            "folders of frames, with CLIP_mask.* beside a clip to inpaint it"
        )
    return clips

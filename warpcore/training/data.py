"""Training data: real still photographs that packages ship, crops, degradations, GP noise bank.

Sources (stills only): scikit-image's bundled images, Debian ``opencv-doc`` example photographs
and Debian ``mate-backgrounds`` nature photographs. Images are held in memory as uint8 with the
long side at most ``max_side``. A fixed, name-hashed subset is held out for validation.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from warpcore.errors import InvalidInput

OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
MATE_DIR = Path("/usr/share/backgrounds/mate/nature")
DEBIAN_PACKAGES = ("opencv-doc", "mate-backgrounds")
SKIMAGE_NAMES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
    "clock",
)
OPENCV_SKIP = (
    "left",
    "right",
    "chessboard",
    "digits",
    "imagetext",
    "linuxlogo",
    "windowslogo",
    "opencv-logo",
    "sudoku",
    "gradient",
    "ml.",
    "notes",
    "pca_test",
    "pic",
    "mask.",
    "detect_blob",
    "ellipses",
    "aloegt",
    "licenseplate",
    "box",
    "blox",
    "cards",
    "smarties",
)


@dataclass(frozen=True)
class Photo:
    """One still: ``name`` (source/file) and ``pixels`` uint8 (H, W, 3) RGB; ``held_out``: True
    / False to place it in validation / training, None to decide by a hash of the name."""

    name: str
    pixels: np.ndarray
    held_out: bool | None = None


# Debian opencv-doc's videos. vtest.avi and tree.avi are never trained on: they are the real-
# video evaluation (warpcore.bench.builtin). Megamind.avi's last fifth is validation.
TRAIN_VIDEOS = ("Megamind.avi",)
EVAL_VIDEOS = ("vtest.avi", "tree.avi")
VIDEO_EVERY = 6  # every 6th frame
VIDEO_VAL_FROM = 0.8  # frames after this share of a clip are held out


def _video_photos(folder: Path, names: tuple[str, ...], every: int) -> list[Photo]:
    """Frames of the training videos at their native size (random zoom-out adds the scales)."""
    photos = []
    for name in names:
        cap = cv2.VideoCapture(str(folder / name))
        if not cap.isOpened():
            continue
        count = max(1, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % every == 0 and min(bgr.shape[:2]) >= MIN_SIDE:
                held = index >= VIDEO_VAL_FROM * count
                pixels = np.ascontiguousarray(bgr[..., ::-1])
                photos.append(Photo(f"video/{name}#{index:04d}", pixels, held_out=held))
            index += 1
        cap.release()
    return photos


def ensure_debian_packages(log: Callable[[str], None] = print) -> None:
    """Install the Debian image packages when missing and possible; otherwise say so."""
    if OPENCV_DIR.is_dir() and MATE_DIR.is_dir():
        return
    can = shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0
    if not can:
        log(
            f"data: {OPENCV_DIR} / {MATE_DIR} missing and apt-get unavailable (not root); "
            "continuing with scikit-image's images only"
        )
        return
    log(f"data: installing Debian packages {' '.join(DEBIAN_PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", *DEBIAN_PACKAGES]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            log("data: apt-get install failed; continuing with the images that are there")


def _fit(pixels: np.ndarray, max_side: int) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    pixels = pixels[..., :3]
    if pixels.dtype != np.uint8:
        scaled = pixels.astype(np.float64) * (255.0 if pixels.max() <= 1.0 else 1.0)
        pixels = np.clip(scaled, 0, 255).astype(np.uint8)
    h, w = pixels.shape[:2]
    if max(h, w) > max_side:
        f = max_side / max(h, w)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(pixels)


def _skimage_photos(max_side: int) -> list[Photo]:
    import skimage.data

    photos = []
    for name in SKIMAGE_NAMES:
        try:
            photos.append(Photo(f"skimage/{name}", _fit(getattr(skimage.data, name)(), max_side)))
        except Exception:  # noqa: BLE001 - images fetched through pooch fail offline: skip them
            continue
    return photos


MIN_SIDE = 96  # a still smaller than this cannot give a training crop


def _folder_photos(
    folder: Path, prefix: str, skip: tuple[str, ...], max_side: int, problems: list[str]
) -> list[Photo]:
    """The stills of ``folder``; files that cannot be used are appended to ``problems``."""
    photos = []
    if not folder.is_dir():
        return photos
    for path in sorted(folder.iterdir()):
        low = path.name.lower()
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or low.startswith(skip):
            continue
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            problems.append(f"{path}: not a readable JPEG/PNG image")
        elif min(bgr.shape[:2]) < MIN_SIDE:
            problems.append(f"{path}: {bgr.shape[1]}x{bgr.shape[0]}, smaller than {MIN_SIDE} px")
        else:
            photos.append(Photo(f"{prefix}/{path.name}", _fit(bgr[..., ::-1], max_side)))
    return photos


def load_photos(
    max_side: int = 512,
    extra_dirs: tuple[str, ...] = (),
    log: Callable[[str], None] = print,
    videos: bool = True,
) -> list[Photo]:
    """Every available still, sorted by name (the order is part of the data's determinism).

    A file in one of the user's ``extra_dirs`` that cannot be used (unreadable, or smaller than
    the training crops) is an error naming it; one in the packages' folders is skipped with a
    line in ``log`` (a package may ship an odd file; the user cannot fix it).
    """
    photos = _skimage_photos(max_side)
    shipped: list[str] = []
    photos += _folder_photos(OPENCV_DIR, "opencv", OPENCV_SKIP, max_side, shipped)
    photos += _folder_photos(MATE_DIR, "mate", (), max_side, shipped)
    if videos:
        photos += _video_photos(OPENCV_DIR, TRAIN_VIDEOS, VIDEO_EVERY)
    for problem in shipped:
        log(f"training data: skipped {problem}")
    for d in extra_dirs:
        if not Path(d).is_dir():
            raise InvalidInput(f"extra_data: {d!r} is not a folder of JPEG/PNG images")
        theirs: list[str] = []
        photos += _folder_photos(Path(d), Path(d).name, (), max_side, theirs)
        if theirs:
            raise InvalidInput(
                "extra_data: these files cannot be used for training (remove or fix them): "
                + "; ".join(theirs)
            )
    return sorted(photos, key=lambda p: p.name)


def is_validation(name: str, fraction: float = 0.12) -> bool:
    """A stable, name-hashed hold-out: the same images are validation on every machine."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def split(photos: list[Photo], fraction: float = 0.12) -> tuple[list[Photo], list[Photo]]:
    """(train, validation); at least one of each when there are two or more photos."""
    held = [
        p.held_out if p.held_out is not None else is_validation(p.name, fraction) for p in photos
    ]
    train = [p for p, h in zip(photos, held, strict=True) if not h]
    val = [p for p, h in zip(photos, held, strict=True) if h]
    if not val and len(train) > 1:
        val = [train.pop()]
    if not train:
        raise InvalidInput("data: no training images found; install opencv-doc/mate-backgrounds")
    return train, val


def random_crop(
    rng: np.random.Generator, photo: Photo, size: int, augment: bool = True
) -> np.ndarray:
    """A (size, size, 3) float32 crop in [0, 1], with random zoom-out and horizontal flip."""
    h, w = photo.pixels.shape[:2]
    short = min(h, w)
    zoom = rng.uniform(1.0, max(1.0, min(2.5, short / size))) if augment else 1.0
    side = min(short, max(1, round(size * zoom)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo.pixels[y : y + side, x : x + side]
    if side != size:
        interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
        crop = cv2.resize(crop, (size, size), interpolation=interp)
    if augment and rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop, dtype=np.float32) / 255.0


# The degradation of use (the eval's and a user's: an 8-bit frame, area-downscaled) most of the
# time, with mild variations. The first weights trained on half blurred and 40% bicubic-
# downsampled inputs: their estimate sharpened area-downscaled frames into ringing (TRAINING.md).
P_BLUR, BLUR_SIGMA = 0.2, (0.3, 0.8)  # mild optical blur before the downscale (in HR pixels)
P_AREA = 0.9  # else bicubic downsampling
P_NOISE, NOISE_STD = 0.1, 0.01
P_JPEG, JPEG_QUALITY = 0.3, (60, 95)  # else plain 8-bit rounding
# Soft targets (issue 17, session 4): real footage is often soft at its own resolution (fog,
# smoke, defocus, motion blur), while every training photograph was sharp, so the estimate
# learned that the full-resolution frame always has sharp detail and invented it: on a photograph
# blurred by 3 px the estimate fell 13 dB below bicubic; on the running_car clip (fog) 2 dB.
# This share of super-resolution crops is blurred BEFORE it becomes the target (clean and
# input alike), by a Gaussian of this standard deviation in output pixels per unit of scale / 4.
P_SOFT, SOFT_SIGMA = 0.3, (0.5, 3.0)


def soften(rng: np.random.Generator, clean: np.ndarray, scale: int) -> np.ndarray:
    """A soft target: ``clean`` blurred by a Gaussian of ``SOFT_SIGMA * scale / 4`` pixels."""
    sigma = rng.uniform(*SOFT_SIGMA) * scale / 4.0
    return np.ascontiguousarray(cv2.GaussianBlur(clean, (0, 0), sigma), dtype=np.float32)


def degrade(rng: np.random.Generator, image: np.ndarray, scale: int) -> np.ndarray:
    """A low-resolution 8-bit version (h/scale, w/scale, 3): mostly the area downscale of use;
    sometimes mild blur first, bicubic instead, a little noise, JPEG instead of 8-bit rounding."""
    h, w = image.shape[:2]
    if h % scale or w % scale:
        raise InvalidInput(f"degrade: size {h}x{w} is not a multiple of scale {scale}")
    img = image
    if rng.random() < P_BLUR:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*BLUR_SIGMA))
    interp = cv2.INTER_AREA if rng.random() < P_AREA else cv2.INTER_CUBIC
    low = cv2.resize(img, (w // scale, h // scale), interpolation=interp)
    if rng.random() < P_NOISE:
        low = low + rng.normal(0.0, rng.uniform(0.0, NOISE_STD), low.shape).astype(np.float32)
    u8 = np.clip(np.round(low * 255.0), 0, 255).astype(np.uint8)
    if rng.random() < P_JPEG:
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(u8), params)
        if ok:
            u8 = cv2.imdecode(data, cv2.IMREAD_UNCHANGED).reshape(u8.shape)
    return u8.astype(np.float32) / 255.0


def gp_field(
    channels: int, size: int, seed: int, n_features: int = 3000, truncation: float = 2.0
) -> torch.Tensor:
    """One GP noise field (channels, size, size), length scale ``2 / (pi * size)`` on [0,1]^2
    (``warpcore.noise.GPNoise``, METHOD.md section 1): ``2 / pi`` pixels."""
    from warpcore.noise import GPNoise

    noise = GPNoise(channels, n_features=n_features, res=size, truncation=truncation, seed=seed)
    return noise.grid(size, size).float().cpu()


class NoiseBank:
    """Training noise ``e``: white N(0, I) or GP fields cut from a precomputed bank.

    Drawing a 3000-feature RFF field per sample is costly on CPU, so ``count`` fields of side
    ``2 * crop`` are drawn once (length scale ``2 / pi`` pixels, i.e. ``eps = 2 / (pi * res)``
    with ``res`` = the crop size on the crop's own unit square) and each sample is a random
    window of one of them, with a random flip/transpose, sign and channel permutation. Each
    stays an exact sample of the same GP: the squared-exponential kernel is stationary (any
    window of a field is distributed like the field), isotropic (invariant under the dihedral
    flips and transposes), the channels are i.i.d. (permutable) and the process is zero-mean
    Gaussian (``-e`` ~ ``e``). Wrap-around rolls would put a seam in the field and are NOT
    used: integer translations come from the window offsets instead. Samples cut from the same
    field are correlated with each other, which only adds variance to the loss estimate.
    """

    def __init__(self, kind: str, channels: int, crop: int, count: int = 64, seed: int = 0) -> None:
        if kind not in ("gp", "white"):
            raise InvalidInput(f"noise: got {kind!r}; accepted: gp, white")
        self.kind, self.channels, self.crop = kind, channels, crop
        self.fields: torch.Tensor | None = None
        if kind == "gp":
            side = 2 * crop
            fields = [gp_field(channels, side, seed * 100003 + i) for i in range(count)]
            self.fields = torch.stack(fields)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, channels, crop, crop) unit-variance noise, a function of ``generator`` only."""
        c = self.crop
        if self.fields is None:
            return torch.randn(n, self.channels, c, c, generator=generator)
        count, _, side, _ = self.fields.shape
        picks = torch.randint(0, count, (n,), generator=generator).tolist()
        offsets = torch.randint(0, side - c + 1, (n, 2), generator=generator).tolist()
        flips = torch.randint(0, 2, (n, 4), generator=generator).tolist()
        out = []
        for i in range(n):
            y, x = offsets[i]
            e = self.fields[picks[i], :, y : y + c, x : x + c]
            if flips[i][0]:
                e = e.flip(-1)
            if flips[i][1]:
                e = e.flip(-2)
            if flips[i][2]:
                e = e.transpose(-1, -2)
            perm = torch.randperm(self.channels, generator=generator)
            out.append(e[perm] * (-1.0 if flips[i][3] else 1.0))
        return torch.stack(out).contiguous()

    def state(self) -> dict[str, torch.Tensor]:
        return {} if self.fields is None else {"fields": self.fields}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.kind == "gp":
            self.fields = tensors["fields"]

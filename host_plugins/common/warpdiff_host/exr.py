"""Float EXR frames and numbered sequences, with OpenEXR and numpy only (no torch, no cv2).

A sequence is a printf pattern with one frame number, ``/shots/a/plate.%04d.exr``; Nuke's
``plate.####.exr`` is accepted everywhere a pattern is. Frames are numpy (H, W, C) float32;
channels R, G, B and, when present, A (a file holding only A reads as (H, W, 1)).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from warpdiff_host.errors import HostError

_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%0?(\d*)d")


def _openexr():  # noqa: ANN202 - the module
    try:
        import OpenEXR
    except ImportError:
        raise HostError(
            "the OpenEXR Python package is missing in this host's Python; install it with "
            "`python -m pip install OpenEXR` using the host's Python (see the README)"
        ) from None
    return OpenEXR


def to_printf(pattern: str) -> str:
    """``plate.####.exr`` -> ``plate.%04d.exr``; printf patterns are returned as they are."""
    if _PRINTF.search(pattern):
        return pattern
    match = _HASHES.search(pattern)
    if match is None:
        raise HostError(
            f"{pattern}: not a frame sequence pattern; expected one frame number as #### or %04d"
        )
    return pattern[: match.start()] + f"%0{len(match.group())}d" + pattern[match.end() :]


def frame_file(pattern: str, frame: int) -> Path:
    """The file of ``frame`` in a sequence pattern."""
    return Path(to_printf(pattern) % frame)


def is_sequence(path: str) -> bool:
    return bool(_PRINTF.search(path) or _HASHES.search(path))


def read_exr(path: str | os.PathLike[str]) -> np.ndarray:
    """One EXR file as (H, W, C) float32: RGB, RGBA, or A alone as (H, W, 1)."""
    openexr = _openexr()
    try:
        with openexr.File(str(path), separate_channels=True) as f:
            channels = {name: ch.pixels for name, ch in f.channels().items()}
    except Exception as exc:  # OpenEXR raises plain Exception subclasses
        raise HostError(f"{path}: cannot read it as EXR ({exc})") from None
    names = [n for n in ("R", "G", "B", "A") if n in channels]
    if names not in (["R", "G", "B"], ["R", "G", "B", "A"], ["A"]):
        raise HostError(f"{path}: EXR channels {sorted(channels)}; expected R, G, B (and A) or A")
    return np.dstack([channels[n].astype(np.float32) for n in names])


def write_exr(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write (H, W, 1|3|4) floats as a 32-bit float ZIP EXR, atomically (temp name + rename)."""
    openexr = _openexr()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise HostError(f"{path}: expected an (H, W, 1|3|4) image, got shape {arr.shape}")
    names = {1: "A", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    channels = {n: np.ascontiguousarray(arr[..., i], dtype=np.float32) for i, n in enumerate(names)}
    header = {"compression": openexr.ZIP_COMPRESSION, "type": openexr.scanlineimage}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.exr")
    with openexr.File(header, channels) as f:
        f.write(str(tmp))
    os.replace(tmp, path)


def read_sequence(pattern: str, frames: Iterable[int]) -> list[np.ndarray]:
    """The frames of a sequence, in order; a missing file is an error naming it."""
    out = []
    for n in frames:
        file = frame_file(pattern, n)
        if not file.is_file():
            raise HostError(f"{file}: frame {n} of {pattern} is missing")
        out.append(read_exr(file))
    return out

"""A parsed ``submit`` -> a shot with its content-hash key, and reading a shot's inputs.

The shot key is a BLAKE3 hash (:mod:`server.hashing`) of the request's key (every
output-relevant parameter, not the device), the mask mode and the bytes, dtypes and shapes of
every input frame and matte (or the bytes of the input files). The same shot and parameters
always give the same key; a changed parameter or a changed input pixel gives a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.bodies import MIN_SIDE, PathsInput, Policy, Submit, check_pixels
from server.bodies import parse_submit as parse_submit_body
from server.cache import ShotCache, ShotMeta
from server.hashing import hex_key, new_hash, update_array
from server.protocol import Message, ProtocolError
from warpcore.errors import InvalidInput
from warpcore.request import RestoreRequest

KEY_PREFIX = b"warpdiff-shot-v1"


@dataclass
class ShotSpec:
    """A validated submit: the shot's meta and its input arrays (views of the message parts)."""

    meta: ShotMeta
    frames: list[np.ndarray]
    masks: list[np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.frames, *self.masks))


def prepare(submit: Submit, roots: Sequence[Path] = ()) -> ShotSpec:
    """Pixel checks, file sources and the content hash of a parsed submit.

    Reads every input byte: the server runs it on the intake thread, never on the loop.
    """
    request = submit.request
    if isinstance(submit.source, PathsInput):
        return _from_paths(submit.source, request, roots)
    source = submit.source
    check_pixels(source)
    key = shot_key(request, source.mask_mode, [*source.frames, *source.masks])
    height, width = source.frames[0].shape[:2]
    meta = ShotMeta(
        key, request.to_dict(), len(source.frames), height, width, source.mask_mode, "parts"
    )
    return ShotSpec(meta, list(source.frames), list(source.masks))


def parse_submit(
    body: dict[str, Any], parts: Sequence[memoryview], default_model: str, device: str
) -> ShotSpec:
    """A raw submit body -> validated shot (tests and tools; the server parses in two halves)."""
    models = tuple(sorted({default_model, "builtin", "gaussian"}))
    policy = Policy((), models, default_model, device)
    return prepare(parse_submit_body(Message("submit", "x", None, body, list(parts)), policy))


def shot_key(request: RestoreRequest, mask_mode: str, arrays: Sequence[np.ndarray]) -> str:
    """Content hash of the parameters and every input array (dtype, shape and bytes)."""
    h = new_hash(KEY_PREFIX)
    h.update(f"{request.key()}|{mask_mode}|{len(arrays)}".encode())
    for a in arrays:
        update_array(h, a)
    return hex_key(h)


def _hash_file_tree(h: Any, path: Path, roots: Sequence[Path]) -> None:
    """Hash every file of a folder (or the one file). A file whose real path leaves the
    allowed roots (a symlink out) refuses the shot: the reader would follow it, and skipping it
    here would give different shots one key."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        real = p.resolve()
        if roots and not any(real.is_relative_to(root) for root in roots):
            raise ProtocolError(
                "bad_request",
                "paths: a file of the folder links outside the folders this server may read "
                "(--allow-paths); send the frames as binary parts",
            )
        h.update(f"|{p.relative_to(path) if path.is_dir() else p.name}|".encode())
        with open(real, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)


def _open_source(path: Path, what: str) -> Any:
    try:
        from warpcore.video import open_frames
    except ImportError:
        raise ProtocolError(
            "bad_body",
            "paths: this server cannot read files (warpcore.video is missing); "
            "send the frames as binary parts",
        ) from None
    try:
        return open_frames(path)
    except (InvalidInput, OSError, ValueError) as exc:
        raise ProtocolError("bad_request", f"paths.{what}: {exc}") from None


def _from_paths(source: PathsInput, request: RestoreRequest, roots: Sequence[Path]) -> ShotSpec:
    frames = _open_source(source.frames, "frames")
    n_frames = len(frames)
    height, width, channels = np.shape(frames.read(0))
    if min(height, width) < MIN_SIDE:
        raise ProtocolError(
            "bad_request",
            f"paths.frames: {height}x{width} is too small for optical flow; accepted: at "
            f"least {MIN_SIDE} pixels a side",
        )
    mask_mode = "none" if request.task == "upscale" else "masks"
    if source.alpha and request.task == "inpaint":
        if channels != 4:
            raise ProtocolError("bad_body", "masks: 'alpha' needs RGBA input frames")
        mask_mode = "alpha"
    elif mask_mode == "masks" and source.masks is not None:
        masks = _open_source(source.masks, "masks")
        if len(masks) != n_frames or np.shape(masks.read(0))[:2] != (height, width):
            raise ProtocolError(
                "bad_body", f"paths.masks: expected {n_frames} mattes of {height}x{width}"
            )
    h = new_hash(KEY_PREFIX)
    h.update(f"{request.key()}|{mask_mode}|paths".encode())
    kept: dict[str, str | None] = {"frames": str(source.frames), "masks": None}
    _hash_file_tree(h, source.frames, roots)
    if mask_mode == "masks" and source.masks is not None:
        kept["masks"] = str(source.masks)
        _hash_file_tree(h, source.masks, roots)
    meta = ShotMeta(
        hex_key(h), request.to_dict(), n_frames, height, width, mask_mode, "paths", kept
    )
    return ShotSpec(meta, [], [])


def to_float(array: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float16 / float32 -> float32 (integers scaled to [0, 1])."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    return array.astype(np.float32)


class ShotInputs:
    """Reads frame ``i`` (H, W, 3) float32 and its mask (H, W) float32 or None, for the worker."""

    def __init__(self, cache: ShotCache, meta: ShotMeta) -> None:
        self.cache, self.meta = cache, meta
        self._frames = self._masks = None
        if meta.source == "paths":
            from warpcore.video import open_frames

            self._frames = open_frames(meta.paths["frames"])
            if meta.paths.get("masks"):
                self._masks = open_frames(meta.paths["masks"])

    def __len__(self) -> int:
        return self.meta.n_frames

    def _raw_frame(self, i: int) -> np.ndarray:
        if self._frames is not None:
            return np.asarray(self._frames.read(i))
        return self.cache.input_frame(self.meta.key, i)

    def frame_and_mask(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        raw = to_float(self._raw_frame(i))
        rgb = np.ascontiguousarray(raw[..., :3])
        if self.meta.mask_mode == "alpha":
            return rgb, np.ascontiguousarray(raw[..., 3])
        if self.meta.mask_mode == "masks":
            raw_mask = (
                self._masks.read(i) if self._masks else self.cache.input_mask(self.meta.key, i)
            )
            return rgb, np.ascontiguousarray(to_float(np.asarray(raw_mask))[..., 0])
        return rgb, None


def request_for_device(meta: ShotMeta, device: str) -> RestoreRequest:
    """The stored request, run on this server's device."""
    return RestoreRequest.from_dict({**meta.request, "device": device})

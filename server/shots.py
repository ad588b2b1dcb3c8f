"""A ``submit`` body -> a validated shot with its content-hash key, and reading a shot's inputs.

The shot key is a blake2b hash of the request's key (every output-relevant parameter, not the
device), the mask mode and the bytes, dtypes and shapes of every input frame and matte (or the
bytes of the input files). The same shot and parameters always give the same key; a changed
parameter or a changed input pixel gives a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.cache import ShotCache, ShotMeta
from server.protocol import ProtocolError, body_field, unpack_array
from warpcore.errors import InvalidInput
from warpcore.request import RestoreRequest

MAX_FRAMES = 100_000
KEY_PREFIX = b"warpdiff-shot-v1"


@dataclass
class ShotSpec:
    """A parsed submit: the shot's meta and its input arrays (views of the message parts)."""

    meta: ShotMeta
    frames: list[np.ndarray]
    masks: list[np.ndarray]


def parse_request(data: Any, default_model: str, device: str) -> RestoreRequest:
    """The body's ``request`` map -> RestoreRequest (server model by default, server device)."""
    if not isinstance(data, dict):
        raise ProtocolError(
            "bad_body", "request: expected a map of restoration parameters with at least 'task'"
        )
    values = dict(data)
    values.setdefault("model", default_model)
    values["device"] = device
    try:
        return RestoreRequest.from_dict(values)
    except InvalidInput as exc:
        raise ProtocolError("bad_request", str(exc)) from None
    except TypeError as exc:  # a value of a type the dataclass cannot take
        raise ProtocolError("bad_request", f"request: {exc}") from None


def parse_submit(
    body: dict[str, Any], parts: Sequence[memoryview], default_model: str, device: str
) -> ShotSpec:
    """Validate a submit body and build its shot (no compute, no model)."""
    request = parse_request(body.get("request"), default_model, device)
    if "frames" in body and "paths" in body:
        raise ProtocolError("bad_body", "give either 'frames' (binary parts) or 'paths', not both")
    if body.get("paths") is not None:
        return _from_paths(body, request)
    descs = body_field(body, "frames", list, "a list of {part, dtype, shape}, or 'paths'")
    if not 0 < len(descs) <= MAX_FRAMES:
        raise ProtocolError(
            "bad_body", f"frames: expected 1 to {MAX_FRAMES} frames, got {len(descs)}"
        )
    frames = [unpack_array(d, parts, f"frames[{i}]") for i, d in enumerate(descs)]
    height, width, channels = frames[0].shape
    for i, f in enumerate(frames):
        if f.shape != frames[0].shape or channels not in (3, 4):
            raise ProtocolError(
                "bad_body",
                f"frames[{i}]: every frame must be [H, W, 3] or [H, W, 4] of one size; "
                f"frames[0] is {list(frames[0].shape)}, frames[{i}] is {list(f.shape)}",
            )
    mask_mode, masks = _masks(body, parts, request, len(frames), (height, width), channels)
    key = shot_key(request, mask_mode, [*frames, *masks])
    meta = ShotMeta(key, request.to_dict(), len(frames), height, width, mask_mode, "parts")
    return ShotSpec(meta, frames, masks)


def _masks(
    body: dict[str, Any],
    parts: Sequence[memoryview],
    request: RestoreRequest,
    n_frames: int,
    size: tuple[int, int],
    channels: int,
) -> tuple[str, list[np.ndarray]]:
    masks = body.get("masks")
    if request.task == "upscale":
        if masks is not None:
            raise ProtocolError("bad_body", "masks: the upscale task takes no masks; leave it out")
        return "none", []
    if masks == "alpha":
        if channels != 4:
            raise ProtocolError(
                "bad_body",
                f"masks: 'alpha' needs RGBA frames [H, W, 4]; the frames have {channels} channels",
            )
        return "alpha", []
    if not isinstance(masks, list) or len(masks) != n_frames:
        raise ProtocolError(
            "bad_body",
            f"masks: inpaint needs one matte per frame ({n_frames} descriptors "
            "{part, dtype, shape [H, W, 1]}) or 'alpha' (1 = region to fill)",
        )
    arrays = [unpack_array(d, parts, f"masks[{i}]") for i, d in enumerate(masks)]
    for i, m in enumerate(arrays):
        if m.shape != (*size, 1):
            raise ProtocolError(
                "bad_body", f"masks[{i}]: expected shape {[*size, 1]}, got {list(m.shape)}"
            )
    return "masks", arrays


def shot_key(request: RestoreRequest, mask_mode: str, arrays: Sequence[np.ndarray]) -> str:
    """Content hash of the parameters and every input array (dtype, shape and bytes)."""
    h = hashlib.blake2b(KEY_PREFIX, digest_size=16)
    h.update(f"{request.key()}|{mask_mode}|{len(arrays)}".encode())
    for a in arrays:
        h.update(f"|{a.dtype.str}{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _hash_file_tree(h: Any, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(f"|{p.relative_to(path) if path.is_dir() else p.name}|".encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)


def _open_source(path: Any, what: str) -> Any:
    if not isinstance(path, str) or not Path(path).exists():
        raise ProtocolError(
            "bad_body",
            f"paths.{what}: expected a file or folder on the server machine, got {path!r}",
        )
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
        raise ProtocolError("bad_body", f"paths.{what}: {exc}") from None


def _from_paths(body: dict[str, Any], request: RestoreRequest) -> ShotSpec:
    paths = body_field(body, "paths", dict, "{frames: path, masks: path or null}")
    source = _open_source(paths.get("frames"), "frames")
    n_frames = len(source)
    height, width, channels = np.shape(source.read(0))
    mask_mode = "none" if request.task == "upscale" else "masks"
    if body.get("masks") == "alpha" and request.task == "inpaint":
        mask_mode = "alpha" if channels == 4 else ""
    elif mask_mode == "masks":
        masks = _open_source(paths.get("masks"), "masks")
        if len(masks) != n_frames or np.shape(masks.read(0))[:2] != (height, width):
            raise ProtocolError(
                "bad_body", f"paths.masks: expected {n_frames} mattes of {height}x{width}"
            )
    if not mask_mode:
        raise ProtocolError("bad_body", "masks: 'alpha' needs RGBA input frames")
    h = hashlib.blake2b(KEY_PREFIX, digest_size=16)
    h.update(f"{request.key()}|{mask_mode}|paths".encode())
    kept = {"frames": str(Path(paths["frames"]).resolve()), "masks": None}
    _hash_file_tree(h, Path(kept["frames"]))
    if mask_mode == "masks":
        kept["masks"] = str(Path(paths["masks"]).resolve())
        _hash_file_tree(h, Path(kept["masks"]))
    meta = ShotMeta(
        h.hexdigest(), request.to_dict(), n_frames, height, width, mask_mode, "paths", kept
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

"""Requests for the preview panel, so that it needs no torch, no cv2 and no PyAV.

- ``read_clip``: frames of a video or frame folder on the server machine (or a matte of one).
- ``analyze``: a shot's per-frame warping errors and flicker heat maps, as
  :class:`warpcore.metrics.ClipScorer` defines them (``warp_pixel_prev``, ``e_warp``, and the
  per-pixel map behind ``warp_pixel_prev``), plus that map's mean over the frame's matte
  (``warp_pixel_prev_matte``: the flicker of the generated region alone).
- ``export``: write a shot's finished frames to a video or frame folder (the CLI's writer).

Each body is parsed into a frozen dataclass first (a route's parser, as in ``server.bodies``);
a missing or mistyped field is ``bad_body`` naming it, a file that cannot be read or written
is ``bad_request`` naming it. Paths are read and written only under the server's allowed
folders (``--allow-paths``; the user's home for a loopback server), as ``submit``'s paths.
Their decoding, scoring and writing run on the intake thread (``server.intake``), never on the
message loop; each request is bounded (``MAX_READ_FRAMES``, ``MAX_ANALYZE_FRAMES``,
``MAX_REPLY_BYTES``): a client asks for a long clip in chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from server.bodies import Policy, allowed_path, shot_key
from server.protocol import (
    DTYPES,
    Message,
    ProtocolError,
    array_part,
    body_field,
    from_float,
    int_field,
)
from server.registry import Peer
from warpcore.errors import InvalidInput

if TYPE_CHECKING:
    from server.app import Server

MAX_READ_FRAMES = 64
MAX_ANALYZE_FRAMES = 64
MAX_REPLY_BYTES = 256 * 2**20
MAX_INDEX = 10**7


def _dtype(body: dict[str, Any], default: str) -> str:
    dtype = body_field(body, "dtype", str, f"one of {list(DTYPES)}", default)
    if dtype not in DTYPES:
        raise ProtocolError("bad_body", f"dtype: got {dtype!r}; accepted: {list(DTYPES)}")
    return dtype


def _path(body: dict[str, Any], name: str) -> str:
    value = body_field(body, name, str, "a file or folder path on the server machine")
    if not value or "\x00" in value:
        raise ProtocolError("bad_body", f"{name}: expected a non-empty path, got {value!r:.80}")
    return value


def _writable_path(value: str, name: str, policy: Policy) -> str:
    """An output path whose folder exists under the allowed roots (the file may not, yet)."""
    path = Path(value).expanduser()
    parent = allowed_path(str(path.parent), name, policy.allowed_roots)
    return str(parent / path.name)


@dataclass(frozen=True)
class ReadClip:
    """``read_clip`` body: frames ``[start, stop)`` of ``path`` (``matte``: as (H, W, 1))."""

    path: str
    start: int = 0
    stop: int | None = None
    matte: bool = False
    dtype: str = "float16"


def parse_read_clip(msg: Message, policy: Policy) -> ReadClip:
    body = msg.body
    start = int_field(body, "start", 0, MAX_INDEX, 0)
    stop = int_field(body, "stop", 0, MAX_INDEX, None)
    if stop is not None and stop < start:
        raise ProtocolError("bad_body", f"stop: expected >= start ({start}), got {stop}")
    matte = body_field(body, "matte", bool, "true or false", False)
    path = allowed_path(_path(body, "path"), "path", policy.allowed_roots)
    return ReadClip(str(path), start, stop, matte, _dtype(body, "float16"))


def _open(path: str, what: str) -> Any:
    from warpcore.video import open_frames

    try:
        return open_frames(path)
    except (InvalidInput, OSError, ValueError) as exc:
        raise ProtocolError("bad_request", f"{what}: cannot read {path!r}: {exc}") from None


def to_matte(frame: np.ndarray) -> np.ndarray:
    """A matte image -> (H, W, 1) in [0, 1], as ``warpdiff inpaint --mask`` reads it."""
    from warpcore.video import _to_mask

    return _to_mask(np.asarray(frame, np.float32))[..., None]


def _replier(server: Server, peer: Peer, msg: Message) -> Callable[..., None]:
    """The loop-thread callback of an intake job that returns ``(body, parts)``."""

    def done(result: Any, error: BaseException | None) -> None:
        if error is not None:
            server.on_intake_error(peer, msg, error)
        else:
            server.reply(peer, msg, *result)

    return done


def read_clip(server: Server, peer: Peer, msg: Message, req: ReadClip) -> None:
    """Decoding runs on the intake thread; the loop only hands the reply over."""
    server.intake.run(lambda: _read_clip(req), _replier(server, peer, msg))


def _read_clip(req: ReadClip) -> tuple[dict[str, Any], list[Any]]:
    source = _open(req.path, "path")
    n = len(source)
    channels = 1 if req.matte else source.channels
    frame_bytes = source.height * source.width * channels * DTYPES[req.dtype].itemsize
    most = max(1, min(MAX_READ_FRAMES, MAX_REPLY_BYTES // max(1, frame_bytes)))
    start = min(req.start, n)
    stop = min(n if req.stop is None else req.stop, n, start + most)
    frames, parts = [], []
    for i in range(start, stop):
        try:
            image = np.asarray(source.read(i), np.float32)
        except (InvalidInput, OSError, ValueError) as exc:
            raise ProtocolError("bad_request", f"path: frame {i} of {req.path!r}: {exc}") from None
        image = to_matte(image) if req.matte else np.clip(image, 0.0, 1.0)
        desc, buf = array_part(from_float(image, req.dtype), len(parts))
        frames.append(desc)
        parts.append(buf)
    body = {
        "path": str(Path(req.path).resolve()),
        "n_frames": n,
        "fps": float(source.fps),
        "height": source.height,
        "width": source.width,
        "channels": source.channels,
        "has_alpha": source.has_alpha,
        "start": start,
        "stop": stop,
        "frames": frames,
    }
    return body, parts


@dataclass(frozen=True)
class Analyze:
    """``analyze`` body: frames ``[start, stop)`` of shot ``key`` (finished ones only)."""

    key: str
    start: int = 0
    stop: int | None = None
    heatmaps: bool = False
    flow: str = "dis"


def parse_analyze(msg: Message, policy: Policy) -> Analyze:
    from warpcore.request import FLOW_METHODS

    body = msg.body
    key = shot_key(body.get("key"))
    start = int_field(body, "start", 0, MAX_INDEX, 0)
    stop = int_field(body, "stop", 0, MAX_INDEX, None)
    heatmaps = body_field(body, "heatmaps", bool, "true or false", False)
    flow = body_field(body, "flow", str, f"one of {list(FLOW_METHODS)}", "dis")
    if flow not in FLOW_METHODS:
        raise ProtocolError("bad_body", f"flow: got {flow!r:.40}; accepted: {list(FLOW_METHODS)}")
    return Analyze(key, start, stop, heatmaps, flow)


def analyze(server: Server, peer: Peer, msg: Message, req: Analyze) -> None:
    """Flows and metrics run on the intake thread; the loop only hands the reply over."""
    from server.handlers import _shot

    state = _shot(server, req.key)
    meta, done, summary = state.meta, state.done, state.summary()
    work = lambda: _analyze(server, req, meta, done, summary)  # noqa: E731
    server.intake.run(work, _replier(server, peer, msg))


def _analyze(
    server: Server, req: Analyze, meta: Any, done: int, summary: dict[str, Any]
) -> tuple[dict[str, Any], list[Any]]:
    from server.shots import ShotInputs
    from warpcore.metrics import E_WARP_KEY, ClipScorer

    stop = min(done, meta.n_frames if req.stop is None else req.stop)
    start = min(req.start, stop)
    stop = min(stop, start + MAX_ANALYZE_FRAMES)
    inputs = ShotInputs(server.cache, meta)
    scorer = ClipScorer(flow=req.flow)
    rows, parts = [], []
    for j in range(max(0, start - 1), stop):
        frame, mask = inputs.frame_and_mask(j)
        output = server.cache.read_frame(meta.key, j)
        row = scorer.add(output, frame, mask=mask)
        if j < start:
            continue  # the frame before the range: only its flow and output are needed
        entry: dict[str, Any] = {
            "frame": j,
            "warp_pixel_prev": row["warp_pixel_prev"],
            "e_warp": row[E_WARP_KEY],
            "warp_pixel_prev_matte": _in_matte(scorer.error_map, mask),
        }
        if req.heatmaps and scorer.error_map is not None:
            heat = scorer.error_map[0].numpy().astype(np.float16)
            entry["heatmap"], buf = array_part(heat, len(parts))
            parts.append(buf)
        rows.append(entry)
    return {**summary, "start": start, "stop": stop, "frames": rows}, parts


def _in_matte(error_map: Any, mask: np.ndarray | None) -> float | None:
    """The mean of the heat map over frame j's matte (where the frame was generated)."""
    if error_map is None or mask is None:
        return None
    inside = np.asarray(mask) > 0.5
    if not inside.any() or inside.shape != tuple(error_map.shape[1:]):
        return None
    return float(error_map[0].numpy()[inside].mean())


@dataclass(frozen=True)
class Export:
    """``export`` body: write the finished frames of shot ``key`` to ``path``."""

    key: str
    path: str
    fps: float = 24.0
    format: str | None = None


def parse_export(msg: Message, policy: Policy) -> Export:
    from warpcore.writers import FOLDER_FORMATS

    body = msg.body
    key = shot_key(body.get("key"))
    fps = body_field(body, "fps", (int, float), "a number in (0, 1000]", 24.0)
    if not 0 < fps <= 1000:  # also NaN
        raise ProtocolError("bad_body", f"fps: expected a number in (0, 1000], got {fps!r}")
    fmt = body_field(body, "format", str, f"one of {list(FOLDER_FORMATS)}", None)
    if fmt is not None and fmt not in FOLDER_FORMATS:
        raise ProtocolError(
            "bad_body", f"format: got {fmt!r:.40}; accepted: {list(FOLDER_FORMATS)}"
        )
    path = _writable_path(_path(body, "path"), "path", policy)
    return Export(key, path, float(fps), fmt)


def export(server: Server, peer: Peer, msg: Message, req: Export) -> None:
    from server.handlers import _shot
    from warpcore.writers import FrameWriter

    state = _shot(server, req.key)
    if state.done == 0:
        raise ProtocolError("not_ready", f"shot {req.key}: no finished frame to export yet")
    key, done = state.meta.key, state.done

    def work() -> tuple[dict[str, Any], list[Any]]:  # on the intake thread
        try:
            with FrameWriter(req.path, fps=req.fps, fmt=req.format) as writer:
                for i in range(done):
                    writer.write(server.cache.read_frame(key, i))
        except (InvalidInput, OSError, ValueError) as exc:
            raise ProtocolError("bad_request", f"path: cannot write {req.path!r}: {exc}") from None
        return {"key": req.key, "path": str(Path(req.path)), "frames": done}, []

    server.intake.run(work, _replier(server, peer, msg))


ROUTES: dict[str, tuple[Callable[[Message, Policy], Any], Callable[..., None]]] = {
    "read_clip": (parse_read_clip, read_clip),
    "analyze": (parse_analyze, analyze),
    "export": (parse_export, export),
}

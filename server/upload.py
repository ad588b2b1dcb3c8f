"""Chunked upload in bounded memory: ``open_shot`` -> ``add_frames`` ... -> ``start_shot``.

A timeline effect cannot send a 500-frame 1080p shot as one 4 GB message. It opens the shot
with its frame count, size and parameters, sends the frames (and mattes) in batches of a few,
and then starts it like ``submit``. Bodies are parsed into typed values here (the
:mod:`server.bodies` way); hashing, pixel checks and writing run on the intake thread
(:mod:`server.intake`), never on the socket loop, and ``add_frames_reply`` goes out once a
batch is stored. At most :data:`MAX_IN_FLIGHT` batches of one upload may wait there, so the
server holds a few frames per upload, and so does a client that waits for the replies.

The shot key of a chunked upload is a BLAKE3 hash (:mod:`server.hashing`) of the request's
key, the mask mode, the frame count and the hashes of every frame and matte (dtype, shape,
bytes) in order: the same shot and parameters give the same key; a changed parameter or pixel
gives a new one. Each frame is hashed while it is written.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from server.bodies import (
    MAX_FRAMES,
    MIN_SIDE,
    Listen,
    Policy,
    check_array,
    parse_request,
)
from server.cache import ShotMeta
from server.direct_write import save_npy
from server.hashing import digest, hash_while, hex_key, new_hash
from server.protocol import (
    DTYPES,
    MAX_SIDE,
    Message,
    ProtocolError,
    body_field,
    int_field,
    unpack_array,
)
from server.registry import Peer
from server.shots import KEY_PREFIX

if TYPE_CHECKING:
    from server.app import Server
    from warpcore.request import RestoreRequest

MAX_UPLOADS = 16  # open uploads per server; the oldest idle one is dropped beyond that
MAX_IN_FLIGHT = 2  # batches of one upload waiting on the intake thread
IDLE_S = 900.0  # an upload with no batch for this long is dropped
MASK_MODES = ("alpha", "masks")
_checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warpdiff-check")


# -- typed bodies ---------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenShot:
    request: RestoreRequest
    n_frames: int
    height: int
    width: int
    channels: int
    dtype: str
    mask_mode: str  # none, alpha, masks


@dataclass(frozen=True)
class AddFrames:
    token: str
    start: int
    frames: tuple[np.ndarray, ...]  # read-only views of the message's parts
    masks: tuple[np.ndarray, ...]
    mask_descs: bool  # the body named masks


@dataclass(frozen=True)
class StartShot:
    token: str
    listen: Listen | None


def _token(body: dict[str, Any]) -> str:
    token = body_field(body, "upload", str, "the upload token from open_shot_reply")
    if len(token) != 32 or not token.isalnum():
        raise ProtocolError("unknown_shot", f"upload: {token!r:.40} is not an upload token")
    return token


def parse_open_shot(msg: Message, policy: Policy) -> OpenShot:
    body = msg.body
    request = parse_request(body.get("request"), policy)
    n_frames = int_field(body, "n_frames", 1, MAX_FRAMES)
    height = int_field(body, "height", MIN_SIDE, MAX_SIDE)
    width = int_field(body, "width", MIN_SIDE, MAX_SIDE)
    channels = body_field(body, "channels", int, "3 (RGB) or 4 (RGBA)", 4)
    if channels not in (3, 4):
        raise ProtocolError("bad_body", f"channels: expected 3 (RGB) or 4 (RGBA), got {channels}")
    dtype = body_field(body, "dtype", str, f"one of {list(DTYPES)}", "float32")
    if dtype not in DTYPES:
        raise ProtocolError("bad_body", f"dtype: got {dtype!r:.40}; accepted: {list(DTYPES)}")
    masks = body.get("masks")
    if request.task == "upscale":
        if masks is not None:
            raise ProtocolError("bad_body", "masks: the upscale task takes no masks; leave it out")
        mode = "none"
    elif masks not in MASK_MODES:
        raise ProtocolError(
            "bad_body",
            f"masks: inpaint needs 'alpha' (the frames' alpha) or 'masks' (one [H, W, 1] matte "
            f"per frame in add_frames), got {masks!r:.80}",
        )
    elif masks == "alpha" and channels != 4:
        raise ProtocolError("bad_body", "masks: 'alpha' needs channels 4 (RGBA frames)")
    else:
        mode = masks
    return OpenShot(request, n_frames, height, width, channels, dtype, mode)


def parse_add_frames(msg: Message, policy: Policy) -> AddFrames:
    body = msg.body
    token = _token(body)
    start = int_field(body, "start", 0, MAX_FRAMES - 1)
    descs = body_field(body, "frames", list, "a list of {part, dtype, shape} (one per frame)")
    if not descs:
        raise ProtocolError("bad_body", "frames: expected at least one frame")
    mdescs = body.get("masks")
    if mdescs is not None and not isinstance(mdescs, list):
        raise ProtocolError("bad_body", "masks: expected a list of {part, dtype, shape [H, W, 1]}")
    used: list[int] = []
    frames = tuple(_array(d, msg.parts, f"frames[{i}]", used) for i, d in enumerate(descs))
    masks = tuple(_array(d, msg.parts, f"masks[{i}]", used) for i, d in enumerate(mdescs or []))
    if len(set(used)) != len(used) or len(used) != len(msg.parts):
        raise ProtocolError(
            "bad_body",
            f"the message has {len(msg.parts)} binary parts and the body names {sorted(used)}; "
            "accepted: every part described exactly once",
        )
    return AddFrames(token, start, frames, masks, mdescs is not None)


def _array(desc: Any, parts: Any, what: str, used: list[int]) -> np.ndarray:
    array = unpack_array(desc, parts, what)
    used.append(desc["part"])
    return array


def parse_start_shot(msg: Message, policy: Policy) -> StartShot:
    body = msg.body
    token = _token(body)
    subscribe = body_field(body, "subscribe", bool, "true or false", True)
    stream = body_field(body, "stream", bool, "true or false", True)
    previews = body_field(body, "previews", bool, "true or false", False)
    dtype = body_field(body, "dtype", str, f"one of {list(DTYPES)}", "float32")
    if dtype not in DTYPES:
        raise ProtocolError("bad_body", f"dtype: got {dtype!r:.40}; accepted: {list(DTYPES)}")
    return StartShot(token, Listen(stream, previews, dtype) if subscribe else None)


# -- open uploads ---------------------------------------------------------------------------
@dataclass
class Upload:
    """One open chunked upload: its shot's shape and parameters, and what has arrived."""

    token: str
    shot: OpenShot
    folder: Path
    accepted: int = 0  # frames validated and handed to the intake thread
    in_flight: int = 0
    touched: float = field(default_factory=time.monotonic)
    frame_hash: Any = field(default_factory=new_hash)
    mask_hash: Any = field(default_factory=new_hash)
    reserved: int = 0  # cache bytes reserved for the batches stored (intake thread)
    failed: str = ""

    def meta(self) -> ShotMeta:
        s = self.shot
        h = new_hash(KEY_PREFIX + b"-chunked")
        h.update(f"{s.request.key()}|{s.mask_mode}|{s.n_frames}|".encode())
        h.update(digest(self.frame_hash))
        h.update(digest(self.mask_hash))
        request = s.request.to_dict()
        return ShotMeta(hex_key(h), request, s.n_frames, s.height, s.width, s.mask_mode, "parts")


def _uploads(server: Server) -> dict[str, Upload]:
    uploads = getattr(server, "_uploads", None)
    if uploads is None:
        uploads = server._uploads = {}
    return uploads


def _get(server: Server, token: str) -> Upload:
    upload = _uploads(server).get(token)
    if upload is None:
        raise ProtocolError(
            "unknown_shot",
            f"upload: no open upload {token} (started already, dropped after {IDLE_S:g} s "
            "idle, or never opened); open the shot again with open_shot",
        )
    if upload.failed:
        raise ProtocolError("failed", f"upload {token}: {upload.failed}; open the shot again")
    upload.touched = time.monotonic()
    return upload


def _drop(server: Server, upload: Upload) -> None:
    _uploads(server).pop(upload.token, None)
    server.intake.run(lambda: _discard(server, upload), lambda *_: None)


def _discard(server: Server, upload: Upload) -> None:
    """On the intake thread: an upload that will not start leaves nothing behind."""
    shutil.rmtree(upload.folder, ignore_errors=True)
    server.cache.release(upload.reserved)
    upload.reserved = 0


def _expire(server: Server) -> None:
    uploads = _uploads(server)
    now = time.monotonic()
    stale = [u for u in uploads.values() if now - u.touched > IDLE_S and not u.in_flight]
    while len(uploads) - len(stale) >= MAX_UPLOADS:
        idle = [u for u in uploads.values() if u not in stale and not u.in_flight]
        if not idle:
            raise ProtocolError("queue_full", f"{MAX_UPLOADS} uploads are open and busy; retry")
        stale.append(min(idle, key=lambda u: u.touched))
    for u in stale:
        _drop(server, u)


# -- handlers (loop thread) -------------------------------------------------------------------
def open_shot(server: Server, peer: Peer, msg: Message, body: OpenShot) -> None:
    if server.stopping:
        raise ProtocolError("shutting_down", "the server is stopping; upload to another one")
    _expire(server)
    token = uuid.uuid4().hex
    folder = server.cache.root / f".upload-{token}.tmp"  # a killed server's leftover goes
    _uploads(server)[token] = Upload(token, body, folder)

    def make() -> Any:
        # Refused (over_memory) before a byte is stored; the planned tile is part of the key.
        planned = server.engine.plan(body.request, (body.height, body.width), body.n_frames)
        (folder / "inputs").mkdir(parents=True)
        (folder / "frames").mkdir()
        return planned

    def done(result: Any, error: BaseException | None) -> None:
        if error is not None:
            _uploads(server).pop(token, None)
            server.on_intake_error(peer, msg, error)
        else:
            upload = _uploads(server).get(token)
            if upload is not None and result != body.request:
                upload.shot = dataclasses.replace(upload.shot, request=result)
            reply = {"upload": token, "n_frames": body.n_frames, "batch_limit": MAX_IN_FLIGHT}
            server.reply(peer, msg, reply)

    server.intake.run(make, done)


def add_frames(server: Server, peer: Peer, msg: Message, body: AddFrames) -> None:
    upload = _get(server, body.token)
    shot = upload.shot
    if body.start != upload.accepted:
        raise ProtocolError(
            "bad_body",
            f"start: expected {upload.accepted} (frames arrive in order; "
            f"{upload.accepted} of {shot.n_frames} so far), got {body.start}",
        )
    left = shot.n_frames - upload.accepted
    if len(body.frames) > left:
        raise ProtocolError(
            "bad_body", f"frames: expected 1 to {left} frames (the rest), got {len(body.frames)}"
        )
    shape = (shot.height, shot.width, shot.channels)
    for i, f in enumerate(body.frames):
        if f.shape != shape or f.dtype != DTYPES[shot.dtype]:
            raise ProtocolError(
                "bad_body",
                f"frames[{i}]: expected {shot.dtype} {list(shape)} (as opened), "
                f"got {f.dtype} {list(f.shape)}",
            )
    if shot.mask_mode == "masks":
        if len(body.masks) != len(body.frames):
            raise ProtocolError(
                "bad_body",
                f"masks: expected {len(body.frames)} mattes (one per frame), got {len(body.masks)}",
            )
        for i, m in enumerate(body.masks):
            if m.shape != (*shape[:2], 1):
                raise ProtocolError(
                    "bad_body", f"masks[{i}]: expected shape {[*shape[:2], 1]}, got {list(m.shape)}"
                )
    elif body.mask_descs:
        raise ProtocolError("bad_body", f"masks: this upload's mask mode is {shot.mask_mode!r}")
    if upload.in_flight >= MAX_IN_FLIGHT:
        raise ProtocolError(
            "too_large", f"more than {MAX_IN_FLIGHT} batches in flight; wait for add_frames_reply"
        )
    upload.accepted += len(body.frames)
    upload.in_flight += 1
    start, frames, masks = body.start, body.frames, body.masks

    inputs = upload.folder / "inputs"
    items = [
        (f"frames[{i}]", upload.frame_hash, a, inputs / f"f{start + i:05d}.npy")
        for i, a in enumerate(frames)
    ]
    items += [
        (f"masks[{i}]", upload.mask_hash, a, inputs / f"m{start + i:05d}.npy")
        for i, a in enumerate(masks)
    ]
    # Checked on arrival (checker thread, in order), so a batch's check runs while the batch
    # before it is written; store() waits for each check before it reserves room for it.
    checks = [_checker.submit(check_array, a, name) for name, _, a, _ in items]

    def store() -> dict[str, Any]:
        try:
            _store_checked(server, upload, items, checks)
        except BaseException as exc:
            upload.failed = str(getattr(exc, "message", exc))
            raise
        received = start + len(frames)
        return {"upload": upload.token, "received": received, "n_frames": shot.n_frames}

    def done(result: Any, error: BaseException | None) -> None:
        upload.in_flight -= 1
        if error is not None:
            _drop(server, upload)
            server.on_intake_error(peer, msg, error)
        else:
            server.reply(peer, msg, result)

    server.intake.run(store, done)


def _store_checked(
    server: Server, upload: Upload, items: list[tuple[str, Any, Any, Path]], checks: list[Future]
) -> None:
    """Reserve room for, hash and write each (name, hasher, array, path) in order, once its
    check (``checks[k]``, running on the checker thread since the batch arrived) passed.

    Image k+1 is checked while image k is hashed (helper thread) and written (here, mostly
    waiting for the disk), and the next batch's images while this one's are; nothing is
    reserved or written for an image before its check passed, so a bad one evicts nothing
    from the cache (the good images before it in its batch were stored, as earlier batches
    were; the upload's folder and reservations go when it is dropped)."""
    for (_, h, array, path), checking in zip(items, checks, strict=True):
        checking.result()  # raises ProtocolError for bad pixels
        nbytes = array.nbytes + 128
        server.cache.reserve(nbytes)
        upload.reserved += nbytes
        _store(h, array, path)


def _store(h: Any, array: np.ndarray, path: Path) -> None:
    """Hash ``array`` into ``h`` while it is written to ``path`` (.npy, past the page cache)."""
    hash_while(h, array, lambda: save_npy(path, array))


def start_shot(server: Server, peer: Peer, msg: Message, body: StartShot) -> None:
    from server.handlers import _start, _subscriber

    if server.stopping:
        raise ProtocolError("shutting_down", "the server is stopping; submit to another one")
    upload = _get(server, body.token)
    n = upload.shot.n_frames
    if upload.accepted != n:
        raise ProtocolError(
            "bad_body",
            f"upload: {upload.accepted} of {n} frames sent; send the rest with add_frames "
            "before start_shot",
        )
    del _uploads(server)[upload.token]  # starts once

    def finish() -> str:  # after the batches: the intake thread runs jobs in order
        meta = upload.meta()
        reserved, upload.reserved = upload.reserved, 0
        server.cache.adopt(upload.folder, meta, reserved)
        return meta.key

    def done(key: Any, error: BaseException | None) -> None:
        if error is not None:
            server.intake.run(lambda: shutil.rmtree(upload.folder, True), lambda *_: None)
            server.on_intake_error(peer, msg, error)
            return
        state = server.registry.get(key)
        if state is None:
            server.send_error(peer, "internal", "the stored shot is missing", msg.id)
            return
        sub = _subscriber(peer, msg, body.listen) if body.listen is not None else None
        try:
            _start(server, peer, msg, state, sub)
        except ProtocolError as exc:
            server.send_error(peer, exc.code, exc.message, msg.id)

    server.intake.run(finish, done)


ROUTES = {
    "open_shot": (parse_open_shot, open_shot),
    "add_frames": (parse_add_frames, add_frames),
    "start_shot": (parse_start_shot, start_shot),
}

"""Chunked upload in bounded memory: ``open_shot`` -> ``add_frames`` ... -> ``start_shot``.

A timeline effect cannot send a 500-frame 1080p shot as one 4 GB message. It opens the shot
with its frame count, size and parameters, sends the frames (and mattes) in batches of a few,
waiting for each ``add_frames_reply`` before the next, and then starts it like ``submit``.

The socket loop only validates; hashing and writing the frames happen on one writer thread,
which tells the loop when a batch is stored through the server's inproc event socket (a message
of type ``upload``). So the server holds at most the batches in flight (at most
:data:`MAX_IN_FLIGHT` per upload) and the client holds one batch.

The shot key of a chunked upload is a blake2b hash of the request's key, the mask mode, the
frame count and the hashes of every frame and matte (dtype, shape, bytes) in order: the same
shot and parameters give the same key; a changed parameter or pixel gives a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from server.cache import META, ShotMeta
from server.protocol import (
    DTYPES,
    MAX_SIDE,
    Message,
    ProtocolError,
    body_field,
    encode,
    error_body,
    int_field,
    unpack_array,
)
from server.registry import Peer
from server.shots import KEY_PREFIX, MAX_FRAMES, parse_request

if TYPE_CHECKING:
    from server.app import Server

log = logging.getLogger("warpdiff.server.upload")

MAX_UPLOADS = 16  # open uploads per server; the oldest idle one is dropped beyond that
MAX_IN_FLIGHT = 2  # batches of one upload queued on the writer thread
IDLE_S = 900.0  # an upload with no batch for this long is dropped
MASK_MODES = ("alpha", "masks")


@dataclass
class Upload:
    """One open chunked upload: its shot's shape and parameters, and what has arrived."""

    token: str
    peer: Peer
    request: Any  # RestoreRequest
    n_frames: int
    height: int
    width: int
    channels: int
    dtype: str
    mask_mode: str  # "none" (upscale), "alpha" or "masks"
    folder: Path
    accepted: int = 0  # frames validated and queued for writing
    written: int = 0  # frames on disk (writer thread)
    in_flight: int = 0
    touched: float = field(default_factory=time.monotonic)
    frame_hash: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=16))
    mask_hash: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=16))
    failed: str = ""

    def key(self) -> str:
        h = hashlib.blake2b(KEY_PREFIX + b"-chunked", digest_size=16)
        h.update(f"{self.request.key()}|{self.mask_mode}|{self.n_frames}|".encode())
        h.update(self.frame_hash.digest())
        h.update(self.mask_hash.digest())
        return h.hexdigest()

    def meta(self) -> ShotMeta:
        return ShotMeta(
            self.key(),
            self.request.to_dict(),
            self.n_frames,
            self.height,
            self.width,
            self.mask_mode,
            "parts",
        )


class Uploads:
    """The open uploads of one server and the writer thread that stores their frames."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.root = Path(server.config.cache_dir)
        self.open: dict[str, Upload] = {}
        self.jobs: queue.SimpleQueue[tuple[Callable[[], dict[str, Any]], dict[str, Any]] | None]
        self.jobs = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="warpdiff-upload", daemon=True)
        self.thread.start()

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            work, route = job
            try:
                result = {"ok": work()}
            except ProtocolError as exc:
                result = {"code": exc.code, "message": exc.message}
            except Exception as exc:  # disk full, permissions: the client learns why
                log.exception("upload job failed")
                result = {"code": "internal", "message": f"storing the upload failed: {exc}"}
            if route.get("id") is not None:  # housekeeping (mkdir, removal) answers nobody
                self._notify({**route, **result})

    def _notify(self, body: dict[str, Any]) -> None:
        try:
            push = self.server.context.socket(zmq.PUSH)
        except zmq.ZMQError:  # the server is gone
            return
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(self.server.events_address)
        push.send_multipart(encode("upload", body))
        push.close()

    def submit(
        self, peer: Peer, msg: Message, upload: Upload, work: Callable[[], dict[str, Any]]
    ) -> None:
        """Run ``work`` on the writer thread; its result (or error) is the reply to ``msg``."""

        def guarded() -> dict[str, Any]:
            try:
                return work()
            except Exception as exc:
                upload.failed = f"{type(exc).__name__}: {exc}"
                raise

        options = {k: msg.body.get(k) for k in ("stream", "previews", "dtype")}
        route = {
            "identity": peer.identity,
            "req": peer.req,
            "id": msg.id,
            "type": msg.type,
            "upload": upload.token,
            "request_body": options,
        }
        self.jobs.put((guarded, route))

    # -- bookkeeping on the loop thread -------------------------------------------------------
    def get(self, body: dict[str, Any]) -> Upload:
        token = body_field(body, "upload", str, "the upload token from open_shot_reply")
        upload = self.open.get(token)
        if upload is None:
            raise ProtocolError(
                "unknown_shot",
                f"upload: no open upload {token!r:.80} (it was started, dropped after "
                f"{IDLE_S:g} s idle, or never opened); open the shot again with open_shot",
            )
        if upload.failed:
            raise ProtocolError("failed", f"upload {token}: {upload.failed}; open the shot again")
        upload.touched = time.monotonic()
        return upload

    def expire(self) -> None:
        now = time.monotonic()
        stale = [u for u in self.open.values() if now - u.touched > IDLE_S and not u.in_flight]
        while len(self.open) - len(stale) >= MAX_UPLOADS:
            idle = [u for u in self.open.values() if u not in stale and not u.in_flight]
            if not idle:
                raise ProtocolError(
                    "queue_full", f"{MAX_UPLOADS} uploads are open and busy; retry later"
                )
            stale.append(min(idle, key=lambda u: u.touched))
        for u in stale:
            self.drop(u)

    def drop(self, upload: Upload) -> None:
        self.open.pop(upload.token, None)
        folder = upload.folder
        self.jobs.put((lambda: shutil.rmtree(folder, ignore_errors=True) or {}, {"id": None}))


def uploads_of(server: Server) -> Uploads:
    """The server's uploads (created on first use)."""
    uploads = getattr(server, "_uploads", None)
    if uploads is None:
        uploads = Uploads(server)
        server._uploads = uploads
    return uploads


# -- handlers (loop thread) -------------------------------------------------------------------
def open_shot(server: Server, peer: Peer, msg: Message) -> None:
    if server.stopping:
        raise ProtocolError("shutting_down", "the server is stopping; upload to another one")
    body = msg.body
    request = parse_request(body.get("request"), server.engine.default_model, server.engine.device)
    n_frames = int_field(body, "n_frames", 1, MAX_FRAMES)
    height = int_field(body, "height", 1, MAX_SIDE)
    width = int_field(body, "width", 1, MAX_SIDE)
    channels = body_field(body, "channels", int, "3 (RGB) or 4 (RGBA)", 4)
    if channels not in (3, 4):
        raise ProtocolError("bad_body", f"channels: expected 3 (RGB) or 4 (RGBA), got {channels}")
    dtype = body_field(body, "dtype", str, f"one of {list(DTYPES)}", "float32")
    if dtype not in DTYPES:
        raise ProtocolError("bad_body", f"dtype: got {dtype!r}; accepted: {list(DTYPES)}")
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
    uploads = uploads_of(server)
    uploads.expire()
    token = uuid.uuid4().hex
    folder = uploads.root / f".upload-{token}.tmp"  # a killed server's leftover is removed
    upload = Upload(token, peer, request, n_frames, height, width, channels, dtype, mode, folder)
    uploads.open[token] = upload

    def make() -> dict[str, Any]:
        (folder / "inputs").mkdir(parents=True)
        (folder / "frames").mkdir()
        return {}

    uploads.jobs.put((make, {"id": None}))
    server.reply(peer, msg, {"upload": token, "n_frames": n_frames, "batch_limit": MAX_IN_FLIGHT})


def add_frames(server: Server, peer: Peer, msg: Message) -> None:
    uploads = uploads_of(server)
    upload = uploads.get(msg.body)
    body = msg.body
    start = int_field(body, "start", 0, upload.n_frames - 1)
    if start != upload.accepted:
        raise ProtocolError(
            "bad_body",
            f"start: expected {upload.accepted} (frames arrive in order; "
            f"{upload.accepted} of {upload.n_frames} so far), got {start}",
        )
    descs = body_field(body, "frames", list, "a list of {part, dtype, shape}")
    if not 0 < len(descs) <= upload.n_frames - start:
        raise ProtocolError(
            "bad_body",
            f"frames: expected 1 to {upload.n_frames - start} frames (the rest of the shot), "
            f"got {len(descs)}",
        )
    shape = (upload.height, upload.width, upload.channels)
    frames = [unpack_array(d, msg.parts, f"frames[{i}]") for i, d in enumerate(descs)]
    for i, f in enumerate(frames):
        if f.shape != shape or f.dtype != DTYPES[upload.dtype]:
            raise ProtocolError(
                "bad_body",
                f"frames[{i}]: expected {upload.dtype} {list(shape)} (as opened), "
                f"got {f.dtype} {list(f.shape)}",
            )
    masks: list[np.ndarray] = []
    if upload.mask_mode == "masks":
        mdescs = body_field(body, "masks", list, "one {part, dtype, shape [H, W, 1]} per frame")
        if len(mdescs) != len(frames):
            raise ProtocolError(
                "bad_body",
                f"masks: expected {len(frames)} mattes (one per frame), got {len(mdescs)}",
            )
        masks = [unpack_array(d, msg.parts, f"masks[{i}]") for i, d in enumerate(mdescs)]
        for i, m in enumerate(masks):
            if m.shape != (*shape[:2], 1):
                raise ProtocolError(
                    "bad_body", f"masks[{i}]: expected shape {[*shape[:2], 1]}, got {list(m.shape)}"
                )
    elif body.get("masks") is not None:
        raise ProtocolError("bad_body", f"masks: this upload's mask mode is {upload.mask_mode!r}")
    if upload.in_flight >= MAX_IN_FLIGHT:
        raise ProtocolError(
            "too_large",
            f"more than {MAX_IN_FLIGHT} batches in flight; wait for add_frames_reply",
        )
    upload.accepted += len(frames)
    upload.in_flight += 1

    def store() -> dict[str, Any]:
        inputs = upload.folder / "inputs"
        for i, (frame, mask) in enumerate(zip(frames, masks or [None] * len(frames), strict=True)):
            _hash(upload.frame_hash, frame)
            np.save(inputs / f"f{start + i:05d}.npy", frame, allow_pickle=False)
            if mask is not None:
                _hash(upload.mask_hash, mask)
                np.save(inputs / f"m{start + i:05d}.npy", mask, allow_pickle=False)
        upload.written = start + len(frames)
        return {"upload": upload.token, "received": upload.written, "n_frames": upload.n_frames}

    uploads.submit(peer, msg, upload, store)


def _hash(h: Any, array: np.ndarray) -> None:
    h.update(f"|{array.dtype.str}{array.shape}|".encode())
    h.update(np.ascontiguousarray(array).data)


def start_shot(server: Server, peer: Peer, msg: Message) -> None:
    from server.handlers import _subscriber

    if server.stopping:
        raise ProtocolError("shutting_down", "the server is stopping; submit to another one")
    uploads = uploads_of(server)
    upload = uploads.get(msg.body)
    if upload.accepted != upload.n_frames:
        raise ProtocolError(
            "bad_body",
            f"upload: {upload.accepted} of {upload.n_frames} frames sent; send the rest "
            "with add_frames before start_shot",
        )
    subscribe = body_field(msg.body, "subscribe", bool, "true or false", True)
    _subscriber(peer, msg)  # validates stream / previews / dtype now, on the loop thread
    del uploads.open[upload.token]

    def finish() -> dict[str, Any]:
        meta = upload.meta()
        final = uploads.root / meta.key
        (upload.folder / META).write_text(json.dumps(meta.to_json(), indent=1, sort_keys=True))
        if (final / META).is_file():  # the same shot exists: keep its finished frames
            shutil.rmtree(upload.folder, ignore_errors=True)
        else:
            shutil.rmtree(final, ignore_errors=True)  # a leftover folder without meta
            os.rename(upload.folder, final)
        return {"key": meta.key, "subscribe": subscribe}

    uploads.submit(peer, msg, upload, finish)


def on_done(server: Server, msg: Message) -> None:
    """On the loop thread: a writer-thread job finished; reply to its request."""
    from server.handlers import _start, _subscriber

    body = msg.body
    peer = Peer(bytes(body["identity"]), bool(body["req"]))
    request = Message(str(body["type"]), body["id"], None, body.get("request_body") or {})
    upload = uploads_of(server).open.get(body.get("upload"))
    if upload is not None:
        upload.in_flight = max(0, upload.in_flight - 1)
    if "code" in body:
        server.send(peer, "error", error_body(body["code"], body["message"]), (), body["id"])
        return
    result = body["ok"]
    if request.type == "add_frames":
        server.reply(peer, request, result)
        return
    state = server.registry.get(result["key"])
    if state is None:
        server.send(peer, "error", error_body("internal", "the stored shot vanished"), (), None)
        return
    sub = _subscriber(peer, request) if result["subscribe"] else None
    _start(server, peer, request, state, sub)


HANDLERS = {"open_shot": open_shot, "add_frames": add_frames, "start_shot": start_shot}

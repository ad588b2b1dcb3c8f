"""The wire protocol: a msgpack envelope and raw binary array parts (see ``PROTOCOL.md``).

A message is one ZeroMQ multipart message::

    [envelope, part 0, part 1, ...]

``envelope`` is a msgpack map ``{v, type, id, parent, body}``; every array (frame, matte,
preview) travels as its own raw part, described in the body by ``{part, dtype, shape}``.
Parts are sent with ``copy=False`` and read with ``np.frombuffer`` over the received frame: no
copy on either side beyond the kernel's. No base64, no pickle.

This module is shared by the server and the client: it imports pyzmq, msgpack and numpy only.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
}
CHANNELS = (1, 3, 4)  # matte/alpha, RGB, RGBA
MAX_SIDE = 16384

REQUEST_TYPES = (
    "hello",
    "heartbeat",
    "submit",
    "subscribe",
    "get_frame",
    "fetch",
    "cancel",
    "status",
    "list_shots",
    "shutdown",
    "echo",
    "open_shot",
    "add_frames",
    "start_shot",
)

# Error codes a server puts in an ``error`` body (stable across protocol versions).
ERROR_CODES = (
    "bad_envelope",  # not msgpack, not a map, or a missing/mistyped envelope field
    "bad_version",  # a protocol version the server does not speak
    "unknown_type",  # a message type the server does not know
    "bad_body",  # a body field missing, mistyped or out of range
    "truncated",  # a described binary part missing or shorter than its dtype and shape
    "too_large",  # over a size limit (parts, part bytes, total bytes, envelope bytes)
    "bad_request",  # the restoration parameters were rejected
    "unknown_shot",  # no shot with that key (submit it first)
    "not_ready",  # the frame is not finished and the request asked not to wait
    "queue_full",  # the worker queue is at its limit; retry later
    "over_memory",  # the request's estimated peak memory exceeds the server's budget
    "cancelled",  # the shot was cancelled before the frame was made
    "failed",  # the shot failed; the message says why
    "shutting_down",  # the server is stopping
    "disk_full",  # the shot cache is at its size limit (every shot in use) or the disk is full
    "internal",  # a server bug; the server keeps serving
)


class ProtocolError(Exception):
    """A message the server rejects; becomes an ``error`` reply with ``code`` and ``message``."""

    def __init__(self, code: str, message: str, parent: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.parent = parent


@dataclass(frozen=True)
class Limits:
    """Size limits checked on every received message before anything else is read."""

    max_parts: int = 4096
    max_part_bytes: int = 512 * 2**20
    max_total_bytes: int = 4 * 2**30
    max_envelope_bytes: int = 4 * 2**20

    def describe(self) -> str:
        return (
            f"at most {self.max_parts} binary parts, {self.max_part_bytes} bytes per part, "
            f"{self.max_total_bytes} bytes in all, {self.max_envelope_bytes} bytes of envelope"
        )


@dataclass
class Message:
    """A decoded message. ``parts`` are zero-copy views of the received binary parts."""

    type: str
    id: Any
    parent: Any = None
    body: dict[str, Any] = field(default_factory=dict)
    parts: list[memoryview] = field(default_factory=list)
    v: int = PROTOCOL_VERSION


def new_id() -> str:
    """A fresh message id (32 hex characters)."""
    return uuid.uuid4().hex


def encode(
    type: str,
    body: dict[str, Any] | None = None,
    *,
    id: Any = None,
    parent: Any = None,
    parts: Sequence[Any] = (),
    version: int = PROTOCOL_VERSION,
) -> list[Any]:
    """Envelope + parts, ready for ``socket.send_multipart(frames, copy=False)``."""
    envelope = {
        "v": version,
        "type": type,
        "id": new_id() if id is None else id,
        "parent": parent,
        "body": body or {},
    }
    return [msgpack.packb(envelope, use_bin_type=True), *parts]


def _buffer(frame: Any) -> memoryview:
    """A flat byte view of a part (zmq.Frame, bytes, numpy array, memoryview)."""
    buf = getattr(frame, "buffer", None)  # zmq.Frame received with copy=False
    view = buf if buf is not None else memoryview(frame)
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def check_limits(frames: Sequence[Any], limits: Limits) -> None:
    """Raise ``too_large`` before unpacking anything when a message is over a limit."""
    if len(frames) - 1 > limits.max_parts:
        raise ProtocolError(
            "too_large", f"{len(frames) - 1} binary parts; accepted: {limits.describe()}"
        )
    total = 0
    for i, frame in enumerate(frames):
        n = len(frame) if isinstance(frame, bytes) else _buffer(frame).nbytes
        cap = limits.max_envelope_bytes if i == 0 else limits.max_part_bytes
        if n > cap:
            what = "envelope" if i == 0 else f"part {i - 1}"
            raise ProtocolError("too_large", f"{what} is {n} bytes; accepted: {limits.describe()}")
        total += n
    if total > limits.max_total_bytes:
        raise ProtocolError("too_large", f"{total} bytes in all; accepted: {limits.describe()}")


def decode(frames: Sequence[Any], limits: Limits | None = None) -> Message:
    """Frames (bytes or ``zmq.Frame``) -> :class:`Message`; raises :class:`ProtocolError`."""
    if not frames:
        raise ProtocolError("bad_envelope", "empty message; expected [envelope, parts...]")
    check_limits(frames, limits or Limits())
    try:
        env = msgpack.unpackb(_buffer(frames[0]), raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # any malformed byte string: report, never crash
        raise ProtocolError(
            "bad_envelope", f"envelope is not valid msgpack ({type(exc).__name__})"
        ) from None
    if not isinstance(env, dict):
        raise ProtocolError(
            "bad_envelope",
            f"envelope must be a map {{v, type, id, parent, body}}, got {type(env).__name__}",
        )
    msg_id = env.get("id")
    parent = msg_id if _is_id(msg_id) else None
    version = env.get("v")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError(
            "bad_envelope", f"v: expected the protocol version (int), got {version!r}", parent
        )
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            "bad_version",
            f"protocol version {version} is not supported; accepted: {list(SUPPORTED_VERSIONS)}",
            parent,
        )
    if not _is_id(msg_id):
        raise ProtocolError(
            "bad_envelope", f"id: expected a string (1-128 chars) or an int, got {msg_id!r}"
        )
    kind = env.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= 64:
        raise ProtocolError(
            "bad_envelope", f"type: expected a message type string, got {kind!r}", parent
        )
    body = env.get("body", {})
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise ProtocolError(
            "bad_envelope", f"body: expected a map, got {type(body).__name__}", parent
        )
    parts = [_buffer(f) for f in frames[1:]]
    return Message(kind, msg_id, _id_or_none(env.get("parent")), body, parts, version)


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    return isinstance(value, str) and 0 < len(value) <= 128


def _id_or_none(value: Any) -> Any:
    return value if _is_id(value) else None


# ---------------------------------------------------------------------------------------------
# Arrays as binary parts


def array_part(array: np.ndarray, part: int) -> tuple[dict[str, Any], np.ndarray]:
    """An (H, W, C) or (H, W) array -> (descriptor for the body, contiguous buffer to send)."""
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    name = next((n for n, dt in DTYPES.items() if arr.dtype == dt.newbyteorder("=")), None)
    if name is None:
        raise ProtocolError(
            "bad_body", f"array dtype {arr.dtype} is not sendable; accepted: {list(DTYPES)}"
        )
    check_shape(arr.shape, "array")
    arr = np.ascontiguousarray(arr, dtype=DTYPES[name])
    return {"part": part, "dtype": name, "shape": list(arr.shape)}, arr


def check_shape(shape: Any, what: str) -> tuple[int, int, int]:
    """Validate an (H, W, C) shape; returns it as a tuple of ints."""
    ok = isinstance(shape, (list, tuple)) and len(shape) == 3
    ok = ok and all(isinstance(s, int) and not isinstance(s, bool) for s in shape)
    if not ok or not (0 < shape[0] <= MAX_SIDE and 0 < shape[1] <= MAX_SIDE):
        raise ProtocolError(
            "bad_body",
            f"{what}.shape: expected [H, W, C] with 1 <= H, W <= {MAX_SIDE}, got {shape!r}",
        )
    if shape[2] not in CHANNELS:
        raise ProtocolError(
            "bad_body", f"{what}.shape: C must be 1 (matte), 3 (RGB) or 4 (RGBA), got {shape[2]}"
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def unpack_array(desc: Any, parts: Sequence[memoryview], what: str) -> np.ndarray:
    """A body descriptor ``{part, dtype, shape}`` -> read-only array viewing the part (no copy)."""
    if not isinstance(desc, dict):
        raise ProtocolError(
            "bad_body", f"{what}: expected {{part, dtype, shape}}, got {type(desc).__name__}"
        )
    index = desc.get("part")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ProtocolError(
            "bad_body", f"{what}.part: expected a part index (int >= 0), got {index!r}"
        )
    if index >= len(parts):
        raise ProtocolError(
            "truncated", f"{what}.part is {index} but the message has {len(parts)} binary parts"
        )
    dtype = DTYPES.get(desc.get("dtype")) if isinstance(desc.get("dtype"), str) else None
    if dtype is None:
        raise ProtocolError(
            "bad_body", f"{what}.dtype: got {desc.get('dtype')!r}; accepted: {list(DTYPES)}"
        )
    shape = check_shape(desc.get("shape"), what)
    expected = shape[0] * shape[1] * shape[2] * dtype.itemsize
    got = len(parts[index])
    if got != expected:
        code = "truncated" if got < expected else "bad_body"
        raise ProtocolError(
            code,
            f"{what}: part {index} holds {got} bytes, but {desc.get('dtype')} "
            f"{list(shape)} needs {expected}",
        )
    return np.frombuffer(parts[index], dtype=dtype).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Body fields

_MISSING = object()


def body_field(
    body: dict[str, Any],
    name: str,
    types: type | tuple[type, ...],
    accepted: str,
    default: Any = _MISSING,
) -> Any:
    """``body[name]`` checked against ``types``; a missing or wrong field is ``bad_body``."""
    if name not in body or body[name] is None:
        if default is _MISSING:
            raise ProtocolError("bad_body", f"{name}: required; expected {accepted}")
        return default
    value = body[name]
    bad_bool = isinstance(value, bool) and bool not in _as_tuple(types)
    if bad_bool or not isinstance(value, types):
        raise ProtocolError("bad_body", f"{name}: expected {accepted}, got {value!r:.80}")
    return value


def int_field(body: dict[str, Any], name: str, lo: int, hi: int, default: Any = _MISSING) -> int:
    """An integer body field in [lo, hi]."""
    accepted = f"an integer in [{lo}, {hi}]"
    value = body_field(body, name, int, accepted, default)
    if value is not None and not lo <= value <= hi:
        raise ProtocolError("bad_body", f"{name}: expected {accepted}, got {value!r}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def error_body(code: str, message: str) -> dict[str, Any]:
    """The body of an ``error`` message."""
    return {"code": code, "message": message}


def from_float(array: np.ndarray, dtype: str) -> np.ndarray:
    """A float image in [0, 1] -> ``dtype`` (integers scaled and rounded; floats cast)."""
    if dtype not in DTYPES:
        raise ProtocolError("bad_body", f"dtype: got {dtype!r}; accepted: {list(DTYPES)}")
    if dtype == "uint8":
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if dtype == "uint16":
        return (np.clip(array, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
    return np.asarray(array, dtype=DTYPES[dtype])

"""Every request body, parsed once at the boundary into a typed, fully validated value.

A parser takes the decoded :class:`~server.protocol.Message` and the server's
:class:`Policy` (allowed folders, models, device) and returns a frozen dataclass, or raises
:class:`~server.protocol.ProtocolError` naming the field, what was wrong and what is accepted.
Handlers take these values only and never read a raw body.

What is checked here (and nowhere else):

- shot keys: exactly :data:`KEY_LENGTH` lowercase hex characters;
- request fields: every :class:`~warpcore.request.RestoreRequest` rule, plus ``prompt`` /
  ``negative_prompt`` strings, ``scale`` a finite whole number in range, ``model`` one the
  server lists in ``hello``;
- binary parts: every descriptor names its own part (no part named twice), shapes and dtypes;
- frames: at least :data:`MIN_SIDE` pixels a side (what optical flow needs); float pixels
  finite and within :data:`PIXEL_RANGE` (:func:`check_pixels`, run off the socket loop);
- paths: only files under the server's allowed roots after resolving symlinks; an error never
  says whether a path outside them exists, and never names the server's folders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from server.protocol import DTYPES, Message, ProtocolError, body_field, int_field, unpack_array
from warpcore.errors import InvalidInput
from warpcore.request import RestoreRequest

KEY_LENGTH = 32
HEX = frozenset("0123456789abcdef")
MIN_SIDE = 16  # DIS optical flow fails below 12 px; 16 leaves its pyramid a level
MAX_FRAMES = 100_000
MAX_PROMPT = 4096
PIXEL_RANGE = (-1.0, 2.0)  # float inputs: a little over- and undershoot is fine, 1e30 is not
MAX_FETCH = 256
MAX_FETCH_BYTES = 256 * 2**20  # one fetch reply holds at most this much (at least one frame)


@dataclass(frozen=True)
class Policy:
    """What the server lets a client ask for."""

    allowed_roots: tuple[Path, ...] = ()
    models: tuple[str, ...] = ("builtin",)
    default_model: str = "builtin"
    device: str = "cpu"


# -- typed bodies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Empty:
    """A body with nothing in it (hello, heartbeat, list_shots, shutdown)."""


@dataclass(frozen=True)
class Listen:
    """How a subscriber wants a shot's events."""

    stream: bool = True
    previews: bool = False
    dtype: str = "float32"


@dataclass(frozen=True)
class PartsInput:
    """Frames (and mattes) sent as binary parts: read-only views of the message."""

    frames: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray, ...]
    mask_mode: str  # none, masks, alpha

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.frames, *self.masks))


@dataclass(frozen=True)
class PathsInput:
    """Frames (and mattes) in files under an allowed root, resolved."""

    frames: Path
    masks: Path | None
    alpha: bool  # masks: 'alpha' was asked for


@dataclass(frozen=True)
class Submit:
    request: RestoreRequest
    source: PartsInput | PathsInput
    listen: Listen | None


@dataclass(frozen=True)
class ShotRef:
    key: str


@dataclass(frozen=True)
class Subscribe:
    key: str
    listen: Listen
    start: int
    resume: bool


@dataclass(frozen=True)
class GetFrame:
    key: str
    frame: int
    dtype: str
    wait: bool


@dataclass(frozen=True)
class Fetch:
    key: str
    start: int
    stop: int | None
    dtype: str


@dataclass(frozen=True)
class Status:
    key: str | None


@dataclass(frozen=True)
class Echo:
    arrays: tuple[dict[str, Any], ...]
    parts: tuple[Any, ...] = field(default=())


Parser = Callable[[Message, Policy], Any]


# -- small fields ---------------------------------------------------------------------------


def shot_key(value: Any, name: str = "key") -> str:
    """A shot key from ``submit_reply``: 32 lowercase hex characters."""
    if not isinstance(value, str) or len(value) != KEY_LENGTH or not set(value) <= HEX:
        shown = f"{value!r:.40}" if isinstance(value, str) else type(value).__name__
        raise ProtocolError(
            "bad_body",
            f"{name}: expected a shot key ({KEY_LENGTH} lowercase hex characters, from "
            f"submit_reply or list_shots), got {shown}",
        )
    return value


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    return body_field(body, name, bool, "true or false", default)


def _dtype(body: dict[str, Any]) -> str:
    dtype = body_field(body, "dtype", str, f"one of {list(DTYPES)}", "float32")
    if dtype not in DTYPES:
        raise ProtocolError("bad_body", f"dtype: got {dtype!r:.40}; accepted: {list(DTYPES)}")
    return dtype


def _listen(body: dict[str, Any]) -> Listen:
    return Listen(_bool(body, "stream", True), _bool(body, "previews", False), _dtype(body))


# -- the request ----------------------------------------------------------------------------


def parse_request(data: Any, policy: Policy) -> RestoreRequest:
    """The body's ``request`` map -> RestoreRequest, on the server's device and models."""
    if not isinstance(data, dict):
        raise ProtocolError(
            "bad_body", "request: expected a map of restoration parameters with at least 'task'"
        )
    values = dict(data)
    for name in ("prompt", "negative_prompt"):
        value = values.get(name, "")
        if not isinstance(value, str) or len(value) > MAX_PROMPT:
            raise ProtocolError(
                "bad_request",
                f"request.{name}: got {type(value).__name__}; accepted: a string of at most "
                f"{MAX_PROMPT} characters",
            )
    scale = values.get("scale", 4)
    if isinstance(scale, float) and math.isfinite(scale) and scale.is_integer():
        values["scale"] = scale = int(scale)
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 16:
        raise ProtocolError(
            "bad_request", f"request.scale: got {scale!r:.40}; accepted: a whole number in [1, 16]"
        )
    model = values.setdefault("model", policy.default_model)
    if model not in policy.models:
        shown = f"{model!r:.40}" if isinstance(model, str) else type(model).__name__
        raise ProtocolError(
            "bad_request",
            f"request.model: {shown} is not a model of this server; accepted: "
            f"{', '.join(policy.models)} (hello lists them)",
        )
    values["device"] = policy.device
    try:
        return RestoreRequest.from_dict(values)
    except InvalidInput as exc:
        raise ProtocolError("bad_request", f"request.{exc}") from None
    except TypeError as exc:  # a value of a type the dataclass cannot take
        raise ProtocolError("bad_request", f"request: {exc}") from None


# -- binary inputs --------------------------------------------------------------------------


def _arrays(descs: Any, parts: Sequence[memoryview], what: str, used: set[int]) -> list[np.ndarray]:
    arrays = []
    for i, desc in enumerate(descs):
        name = f"{what}[{i}]"
        array = unpack_array(desc, parts, name)
        index = desc["part"]
        if index in used:
            raise ProtocolError(
                "bad_body",
                f"{name}.part: part {index} is already named by another descriptor; "
                "accepted: each binary part described exactly once",
            )
        used.add(index)
        arrays.append(array)
    return arrays


def _check_size(height: int, width: int, what: str) -> None:
    if min(height, width) < MIN_SIDE:
        raise ProtocolError(
            "bad_request",
            f"{what}: {height}x{width} is too small for optical flow; accepted: at least "
            f"{MIN_SIDE} pixels a side",
        )


def _parts_input(
    body: dict[str, Any], parts: Sequence[memoryview], request: RestoreRequest
) -> PartsInput:
    descs = body_field(body, "frames", list, "a list of {part, dtype, shape} (one per frame)")
    if not 0 < len(descs) <= MAX_FRAMES:
        raise ProtocolError("bad_body", f"frames: expected 1 to {MAX_FRAMES} frames")
    used: set[int] = set()
    frames = _arrays(descs, parts, "frames", used)
    height, width, channels = frames[0].shape
    for i, f in enumerate(frames):
        if f.shape != frames[0].shape or f.dtype != frames[0].dtype:
            raise ProtocolError(
                "bad_body",
                f"frames[{i}]: every frame must be of one size and dtype, that of frames[0] "
                f"({list(frames[0].shape)} {frames[0].dtype}), got {list(f.shape)} {f.dtype}",
            )
    if channels not in (3, 4):
        raise ProtocolError(
            "bad_body", f"frames[0].shape: expected [H, W, 3] or [H, W, 4], got {channels} channels"
        )
    _check_size(height, width, "frames[0].shape")
    masks = body.get("masks")
    if request.task == "upscale":
        if masks is not None:
            raise ProtocolError("bad_body", "masks: the upscale task takes no masks; leave it out")
        mode, mattes = "none", []
    elif masks == "alpha":
        if channels != 4:
            raise ProtocolError(
                "bad_body",
                f"masks: 'alpha' needs RGBA frames [H, W, 4]; the frames have {channels} channels",
            )
        mode, mattes = "alpha", []
    else:
        if not isinstance(masks, list) or len(masks) != len(frames):
            raise ProtocolError(
                "bad_body",
                f"masks: inpaint needs one matte per frame ({len(frames)} descriptors "
                "{part, dtype, shape [H, W, 1]}) or 'alpha' (1 = region to fill)",
            )
        mode, mattes = "masks", _arrays(masks, parts, "masks", used)
        for i, m in enumerate(mattes):
            if m.shape != (height, width, 1):
                raise ProtocolError(
                    "bad_body",
                    f"masks[{i}]: expected shape {[height, width, 1]}, got {list(m.shape)}",
                )
    if len(used) != len(parts):
        raise ProtocolError(
            "bad_body",
            f"the message has {len(parts)} binary parts but the body names {len(used)}; "
            "accepted: every part described exactly once",
        )
    return PartsInput(tuple(frames), tuple(mattes), mode)


def check_pixels(source: PartsInput) -> None:
    """Float pixels finite and within :data:`PIXEL_RANGE` (integer dtypes always are).

    O(pixels): the server runs it off the socket loop (:mod:`server.intake`).
    """
    for what, arrays in (("frames", source.frames), ("masks", source.masks)):
        for i, a in enumerate(arrays):
            check_array(a, f"{what}[{i}]")


def check_array(a: np.ndarray, what: str) -> None:
    """One image of :func:`check_pixels`; ``what`` names it in the error (``frames[2]``)."""
    if a.dtype.kind != "f":
        return
    lo, hi = PIXEL_RANGE
    # NaN propagates through min and max, inf lands in them: two passes, no copies
    amin, amax = float(a.min()), float(a.max())
    if not (np.isfinite(amin) and np.isfinite(amax)):
        raise ProtocolError(
            "bad_request",
            f"{what}: holds NaN or infinite values; accepted: finite values, "
            f"images in [0, 1] (within [{lo}, {hi}])",
        )
    if amin < lo or amax > hi:
        raise ProtocolError(
            "bad_request",
            f"{what}: values span [{amin:.3g}, {amax:.3g}]; accepted: images in "
            f"[0, 1] (within [{lo}, {hi}])",
        )


# -- paths ----------------------------------------------------------------------------------


def allowed_path(value: Any, name: str, roots: Sequence[Path]) -> Path:
    """``value`` resolved (symlinks followed) if it lies under one of ``roots``.

    The error is the same whether or not the path exists, and names no server folder.
    """
    refused = ProtocolError(
        "bad_request",
        f"{name}: not a file or folder this server may read; accepted: paths under the "
        "folders the server was started with (--allow-paths), or send the frames as binary parts",
    )
    if not isinstance(value, str) or not value or "\x00" in value or not roots:
        raise refused
    try:
        path = Path(os.path.expanduser(value)).resolve()
    except (OSError, RuntimeError, ValueError):
        raise refused from None
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise refused
    if not path.exists():  # inside an allowed root: saying so leaks nothing
        raise ProtocolError("bad_request", f"{name}: no such file or folder {value!r:.200}")
    return path


def _paths_input(body: dict[str, Any], request: RestoreRequest, policy: Policy) -> PathsInput:
    paths = body_field(body, "paths", dict, "{frames: path, masks: path or null}")
    frames = allowed_path(paths.get("frames"), "paths.frames", policy.allowed_roots)
    alpha = body.get("masks") == "alpha"
    masks = None
    if request.task == "inpaint" and not alpha:
        masks = allowed_path(paths.get("masks"), "paths.masks", policy.allowed_roots)
    return PathsInput(frames, masks, alpha)


# -- parsers, one per request type ----------------------------------------------------------


def parse_empty(msg: Message, policy: Policy) -> Empty:
    return Empty()


def parse_submit(msg: Message, policy: Policy) -> Submit:
    body = msg.body
    request = parse_request(body.get("request"), policy)
    if body.get("frames") is not None and body.get("paths") is not None:
        raise ProtocolError("bad_body", "give either 'frames' (binary parts) or 'paths', not both")
    if body.get("paths") is not None:
        source: PartsInput | PathsInput = _paths_input(body, request, policy)
    else:
        source = _parts_input(body, msg.parts, request)
    listen = _listen(body) if _bool(body, "subscribe", True) else None
    return Submit(request, source, listen)


def parse_shot_ref(msg: Message, policy: Policy) -> ShotRef:
    return ShotRef(shot_key(msg.body.get("key")))


def parse_subscribe(msg: Message, policy: Policy) -> Subscribe:
    body = msg.body
    start = int_field(body, "from", 0, MAX_FRAMES, 0)
    return Subscribe(shot_key(body.get("key")), _listen(body), start, _bool(body, "resume", True))


def parse_get_frame(msg: Message, policy: Policy) -> GetFrame:
    body = msg.body
    key = shot_key(body.get("key"))
    frame = int_field(body, "frame", 0, MAX_FRAMES - 1)
    return GetFrame(key, frame, _dtype(body), _bool(body, "wait", True))


def parse_fetch(msg: Message, policy: Policy) -> Fetch:
    body = msg.body
    key = shot_key(body.get("key"))
    start = int_field(body, "start", 0, MAX_FRAMES, 0)
    stop = int_field(body, "stop", 0, MAX_FRAMES, None)
    return Fetch(key, start, stop, _dtype(body))


def parse_status(msg: Message, policy: Policy) -> Status:
    key = msg.body.get("key")
    return Status(None if key is None else shot_key(key))


def parse_echo(msg: Message, policy: Policy) -> Echo:
    arrays = body_field(msg.body, "arrays", list, "a list of {part, dtype, shape}", [])
    _arrays(arrays, msg.parts, "arrays", set())
    return Echo(tuple(arrays), tuple(msg.parts))

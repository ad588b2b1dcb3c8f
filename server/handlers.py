"""Request handlers: one per message type, registered in :data:`ROUTES`.

A route is ``(parser, handler)``: the parser (:mod:`server.bodies`) turns the raw body into a
typed, validated value or raises :class:`ProtocolError`; the handler takes that value,
``handler(server, peer, msg, body) -> None``, acts and replies with ``<type>_reply`` (parent =
the request's id). Handlers never read ``msg.body``. A new request type is one line::

    ROUTES["open_shot"] = (parse_open_shot, open_shot)

``HANDLERS`` holds raw handlers ``(server, peer, msg)`` of types without a typed body.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server import bodies, upload
from server.bodies import (
    MAX_FETCH,
    MAX_FETCH_BYTES,
    Echo,
    Empty,
    Fetch,
    GetFrame,
    Listen,
    ShotRef,
    Status,
    Submit,
    Subscribe,
)
from server.protocol import (
    DTYPES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Message,
    ProtocolError,
    error_body,
)
from server.registry import Peer, ShotState, Subscriber, Waiter
from server.worker import QueueFull

if TYPE_CHECKING:
    from server.app import Server

log = logging.getLogger("warpdiff.server")

Handler = Callable[["Server", Peer, Message], None]
TypedHandler = Callable[["Server", Peer, Message, Any], None]


def hello(server: Server, peer: Peer, msg: Message, body: Empty) -> None:
    import warpcore

    server.reply(
        peer,
        msg,
        {
            "server": "warpdiff",
            "version": warpcore.__version__,
            "protocol": PROTOCOL_VERSION,
            "protocols": list(SUPPORTED_VERSIONS),
            "models": {
                "default": server.engine.default_model,
                "loaded": server.engine.loaded(),
                "available": list(server.policy.models),
            },
            **server.engine.device_info(),
            "memory": server.engine.memory_info(),
            "queue": server.worker.snapshot(),
            "limits": vars(server.config.limits),
            "paths": bool(server.policy.allowed_roots),
            "requests": sorted({*ROUTES, *HANDLERS}),
            "dtypes": list(DTYPES),
        },
    )


def heartbeat(server: Server, peer: Peer, msg: Message, body: Empty) -> None:
    snap = server.worker.snapshot()
    server.reply(peer, msg, {"busy": snap["running"] is not None, **snap})


def _subscriber(peer: Peer, msg: Message, listen: Listen) -> Subscriber:
    return Subscriber(peer, msg.id, listen.stream, listen.previews, listen.dtype)


def _shot(server: Server, key: str) -> ShotState:
    state = server.registry.get(key)
    if state is None:
        raise ProtocolError(
            "unknown_shot",
            f"no shot {key} on this server; submit it first (list_shots shows the known ones)",
        )
    return state


def _run_to(server: Server, state: ShotState, target: int, previews: bool = False) -> int | None:
    """Make sure frames up to ``target`` are being made; the queue position, None if done.

    A refused job (queue full) leaves the shot as it was: not activated, nothing kept."""
    target = min(target, state.meta.n_frames - 1)
    if target < state.done:
        return None
    try:
        position = server.worker.enqueue(state.meta.key, target, previews)
    except QueueFull as exc:
        raise ProtocolError("queue_full", f"{exc}; retry later") from None
    state = server.registry.activate(state)
    if state.status == "error":
        server.cache.clear_error(state.meta.key)
        state.message = ""
    if state.status != "running":
        state.status = "queued"
    return position


def submit(server: Server, peer: Peer, msg: Message, body: Submit) -> None:
    """Validated here; hashed, checked and stored on the intake thread; then started."""
    from server.shots import prepare

    if server.stopping:
        raise ProtocolError("shutting_down", "the server is stopping; submit to another one")
    if server.worker.full():  # refuse before reading or storing anything
        raise ProtocolError(
            "queue_full", f"the queue is full (limit {server.worker.queue_limit}); retry later"
        )
    roots = server.policy.allowed_roots

    def work() -> tuple[Any, bool | None, dict[str, float]]:
        t0 = time.perf_counter()
        spec = prepare(body, roots)
        m = spec.meta
        planned = server.engine.plan(body.request, (m.height, m.width), m.n_frames)
        if planned != body.request:  # a tile chosen to fit the memory budget: a new key
            spec = prepare(dataclasses.replace(body, request=planned), roots)
        t1 = time.perf_counter()
        if server.worker.full() and not server.worker.state(spec.meta.key):
            return spec, None, {}  # refused below, nothing stored
        created = server.cache.create(spec.meta, spec.frames, spec.masks)
        return spec, created, {"check_s": t1 - t0, "store_s": time.perf_counter() - t1}

    def done(result: Any, error: BaseException | None) -> None:
        if error is not None:
            server.on_intake_error(peer, msg, error)
        else:
            _submitted(server, peer, msg, body, *result)

    server.intake.run(work, done)


def _submitted(
    server: Server,
    peer: Peer,
    msg: Message,
    body: Submit,
    spec: Any,
    created: bool | None,
    intake: dict[str, float],
) -> None:
    key = spec.meta.key
    try:
        state = server.registry.get(key) if created is not None else None
        if state is None:
            raise ProtocolError(
                "queue_full", f"the queue is full (limit {server.worker.queue_limit}); retry later"
            )
        server.cache.clear_error(key)
        if state.status == "error":
            state.status, state.message = "idle", ""
        sub = _subscriber(peer, msg, body.listen) if body.listen is not None else None
        _start(server, peer, msg, state, sub, intake)
    except ProtocolError as exc:
        if created and key not in server.registry.shots:  # a refused shot leaves no trace
            server.intake.run(lambda: server.cache.remove(key), lambda *_: None)
        server.send_error(peer, exc.code, exc.message, msg.id)


def subscribe(server: Server, peer: Peer, msg: Message, body: Subscribe) -> None:
    state = _shot(server, body.key)
    server.cache.touch(body.key)
    sub = _subscriber(peer, msg, body.listen)
    sub.next = min(body.start, state.meta.n_frames)
    if not body.resume:
        _reply_started(server, peer, msg, state, None, sub)
        return
    _start(server, peer, msg, state, sub)


def _start(
    server: Server,
    peer: Peer,
    msg: Message,
    state: ShotState,
    sub: Subscriber | None,
    extra: dict[str, Any] | None = None,
) -> None:
    position = _run_to(server, state, state.meta.n_frames - 1, bool(sub and sub.previews))
    _reply_started(server, peer, msg, state, position, sub, extra)


def _reply_started(
    server: Server,
    peer: Peer,
    msg: Message,
    state: ShotState,
    position: int | None,
    sub: Subscriber | None,
    extra: dict[str, Any] | None = None,
) -> None:
    body = {**state.summary(), "position": position, **(extra or {})}
    server.reply(peer, msg, body)
    if sub is not None:
        state = server.registry.activate(state)
        state.subscribers.append(sub)
        if position is not None:
            server.registry.event(sub, state, "queued", position=position)
        server.registry.advance_all(state)


def get_frame(server: Server, peer: Peer, msg: Message, body: GetFrame) -> None:
    state = _shot(server, body.key)
    n = state.meta.n_frames
    if body.frame >= n:
        raise ProtocolError(
            "bad_body", f"frame: expected an integer in [0, {n - 1}], got {body.frame}"
        )
    server.cache.touch(body.key)
    if body.frame < state.done:
        server.registry.reply_frame(peer, msg.id, state, body.frame, body.dtype)
        return
    if not body.wait:
        raise ProtocolError(
            "not_ready",
            f"frame {body.frame} is not finished ({state.done} of "
            f"{n} are); ask with wait=true to have it made",
        )
    _run_to(server, state, body.frame)
    server.registry.activate(state).waiters.append(Waiter(peer, msg.id, body.frame, body.dtype))


def fetch(server: Server, peer: Peer, msg: Message, body: Fetch) -> None:
    state = _shot(server, body.key)
    n = state.meta.n_frames
    server.cache.touch(body.key)
    start = min(body.start, n)
    stop = min(n if body.stop is None else body.stop, state.done, start + MAX_FETCH)
    summary = state.summary()

    def build(loaded: list) -> tuple[str, dict[str, Any]]:  # the rest: fetch from the last + 1
        frames = [{"frame": f.index, "image": dict(f.desc, part=i)} for i, f in enumerate(loaded)]
        return "fetch_reply", {**summary, "frames": frames}

    indices = list(range(start, max(start, stop)))
    if not indices:
        server.reply(peer, msg, {**summary, "frames": []})
        return
    server.registry.send_frames(peer, msg.id, state, indices, body.dtype, build, MAX_FETCH_BYTES)


def cancel(server: Server, peer: Peer, msg: Message, body: ShotRef) -> None:
    state = _shot(server, body.key)
    was = server.worker.cancel(state.meta.key)
    if was == "queued":  # never started: the worker reports nothing, so do it here
        server.registry.stop(state, "cancelled", "cancelled while queued")
        server.registry.advance_all(state)
    server.reply(peer, msg, {"key": state.meta.key, "was": was, "done": state.done})


def status(server: Server, peer: Peer, msg: Message, body: Status) -> None:
    if body.key is None:
        server.reply(peer, msg, server.info())
        return
    server.reply(peer, msg, _shot(server, body.key).summary())


def list_shots(server: Server, peer: Peer, msg: Message, body: Empty) -> None:
    """Every shot of the cache: read on the reader thread (O(shots) files), in its turn."""
    from server.registry import cache_view

    active = {key: state.summary() for key, state in server.registry.shots.items()}
    slot = server.outbox.reserve(peer, 4096)
    if slot is None:
        return

    def work() -> list[dict[str, Any]]:
        shots = []
        for key in server.cache.list_keys():
            if key in active:
                shots.append(active[key])
                continue
            try:
                state = cache_view(server.cache, key)
            except (OSError, ValueError):  # evicted while listed
                continue
            if state is not None:
                shots.append(state.summary())
        return shots

    def done(shots: Any, error: BaseException | None) -> None:
        if error is None:
            server.outbox.fill(slot, "list_shots_reply", {"shots": shots}, (), msg.id)
            return
        error_id = uuid.uuid4().hex[:12]
        log.error("internal error %s listing shots", error_id, exc_info=error)
        message = f"internal server error {error_id}; the server goes on and its log has it"
        server.outbox.fill(slot, "error", error_body("internal", message), (), msg.id)

    server.reader.run(work, done)


def shutdown(server: Server, peer: Peer, msg: Message, body: Empty) -> None:
    server.reply(peer, msg, {"stopping": True})
    server.stopping = True


def echo(server: Server, peer: Peer, msg: Message, body: Echo) -> None:
    """Diagnostics and benchmarks: the body's ``arrays`` are checked, the parts sent back."""
    server.reply(peer, msg, {"arrays": list(body.arrays)}, body.parts)


ROUTES: dict[str, tuple[bodies.Parser, TypedHandler]] = {
    "hello": (bodies.parse_empty, hello),
    "heartbeat": (bodies.parse_empty, heartbeat),
    "submit": (bodies.parse_submit, submit),
    "subscribe": (bodies.parse_subscribe, subscribe),
    "get_frame": (bodies.parse_get_frame, get_frame),
    "fetch": (bodies.parse_fetch, fetch),
    "cancel": (bodies.parse_shot_ref, cancel),
    "status": (bodies.parse_status, status),
    "list_shots": (bodies.parse_empty, list_shots),
    "shutdown": (bodies.parse_empty, shutdown),
    "echo": (bodies.parse_echo, echo),
}
ROUTES.update(upload.ROUTES)  # open_shot / add_frames / start_shot (chunked upload)
HANDLERS: dict[str, Handler] = {}


def on_worker_event(server: Server, msg: Message) -> None:
    """A worker event: update the shot, tell its listeners, keep waiters' frames coming."""
    registry = server.registry
    registry.on_worker(msg.body, msg.parts)
    key = msg.body.get("key")
    state = registry.shots.get(key) if isinstance(key, str) else None
    if state is None:
        return
    if msg.body.get("kind") == "paused" and state.waiters:  # a get_frame raced the pause
        _run_to(server, state, max(w.index for w in state.waiters))
    if msg.body.get("kind") in ("paused", "finished", "cancelled", "error"):
        registry.forget_idle(key)


# The panel's requests (read_clip, analyze, export) live in their own module.
from server.analysis import ROUTES as PANEL_ROUTES  # noqa: E402

ROUTES.update(PANEL_ROUTES)

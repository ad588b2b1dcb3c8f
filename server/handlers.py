"""Request handlers: one function per message type, ``handler(server, peer, msg) -> None``.

A handler validates its body (raising :class:`ProtocolError` with what was wrong and what is
accepted), acts, and replies with ``<type>_reply`` (parent = the request's id).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server import upload
from server.protocol import (
    DTYPES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Message,
    ProtocolError,
    body_field,
    int_field,
    unpack_array,
)
from server.registry import Peer, ShotState, Subscriber, Waiter
from server.worker import QueueFull

if TYPE_CHECKING:
    from server.app import Server

Handler = Callable[["Server", Peer, Message], None]
MAX_FETCH = 256


def hello(server: Server, peer: Peer, msg: Message) -> None:
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
                "available": sorted({server.engine.default_model, "builtin", "gaussian"}),
            },
            **server.engine.device_info(),
            "queue": server.worker.snapshot(),
            "limits": vars(server.config.limits),
            "requests": sorted(HANDLERS),
            "dtypes": list(DTYPES),
        },
    )


def heartbeat(server: Server, peer: Peer, msg: Message) -> None:
    snap = server.worker.snapshot()
    server.reply(peer, msg, {"busy": snap["running"] is not None, **snap})


def _dtype(body: dict[str, Any]) -> str:
    dtype = body_field(body, "dtype", str, f"one of {list(DTYPES)}", "float32")
    if dtype not in DTYPES:
        raise ProtocolError("bad_body", f"dtype: got {dtype!r}; accepted: {list(DTYPES)}")
    return dtype


def _subscriber(peer: Peer, msg: Message) -> Subscriber:
    body = msg.body
    stream = body_field(body, "stream", bool, "true or false", True)
    previews = body_field(body, "previews", bool, "true or false", False)
    return Subscriber(peer, msg.id, stream, previews, _dtype(body))


def _shot(server: Server, body: dict[str, Any]) -> ShotState:
    key = body_field(body, "key", str, "a shot key from submit_reply")
    state = server.registry.get(key)
    if state is None:
        raise ProtocolError(
            "unknown_shot",
            f"no shot {key!r:.80} on this server; submit it first (list_shots "
            "shows the known ones)",
        )
    return state


def _run_to(server: Server, state: ShotState, target: int, previews: bool = False) -> int | None:
    """Make sure frames up to ``target`` are being made; the queue position, None if done."""
    target = min(target, state.meta.n_frames - 1)
    if target < state.done:
        return None
    server.registry.activate(state)
    try:
        position = server.worker.enqueue(state.meta.key, target, previews)
    except QueueFull as exc:
        raise ProtocolError("queue_full", f"{exc}; retry later") from None
    if state.status != "running":
        state.status = "queued"
    return position


def submit(server: Server, peer: Peer, msg: Message) -> None:
    from server.shots import parse_submit

    if server.stopping:
        raise ProtocolError("shutting_down", "the server is stopping; submit to another one")
    spec = parse_submit(msg.body, msg.parts, server.engine.default_model, server.engine.device)
    sub = _subscriber(peer, msg) if body_field(msg.body, "subscribe", bool, "bool", True) else None
    server.cache.create(spec.meta, spec.frames, spec.masks)
    _start(server, peer, msg, server.registry.get(spec.meta.key), sub)


def subscribe(server: Server, peer: Peer, msg: Message) -> None:
    state = _shot(server, msg.body)
    sub = _subscriber(peer, msg)
    sub.next = int_field(msg.body, "from", 0, state.meta.n_frames, 0)
    if not body_field(msg.body, "resume", bool, "true or false", True):
        _reply_started(server, peer, msg, state, None, sub)
        return
    _start(server, peer, msg, state, sub)


def _start(
    server: Server, peer: Peer, msg: Message, state: ShotState, sub: Subscriber | None
) -> None:
    position = _run_to(server, state, state.meta.n_frames - 1, bool(sub and sub.previews))
    _reply_started(server, peer, msg, state, position, sub)


def _reply_started(
    server: Server,
    peer: Peer,
    msg: Message,
    state: ShotState,
    position: int | None,
    sub: Subscriber | None,
) -> None:
    body = {**state.summary(), "position": position}
    server.reply(peer, msg, body)
    if sub is not None:
        state = server.registry.activate(state)
        state.subscribers.append(sub)
        if position is not None:
            server.registry.event(sub, state, "queued", position=position)
        server.registry.advance_all(state)


def get_frame(server: Server, peer: Peer, msg: Message) -> None:
    state = _shot(server, msg.body)
    index = int_field(msg.body, "frame", 0, state.meta.n_frames - 1)
    dtype = _dtype(msg.body)
    if index < state.done:
        server.registry.reply_frame(peer, msg.id, state, index, dtype)
        return
    if not body_field(msg.body, "wait", bool, "true or false", True):
        raise ProtocolError(
            "not_ready",
            f"frame {index} is not finished ({state.done} of "
            f"{state.meta.n_frames} are); ask with wait=true to have it made",
        )
    _run_to(server, state, index)
    server.registry.activate(state).waiters.append(Waiter(peer, msg.id, index, dtype))


def fetch(server: Server, peer: Peer, msg: Message) -> None:
    state = _shot(server, msg.body)
    n = state.meta.n_frames
    start = int_field(msg.body, "start", 0, n, 0)
    stop = min(int_field(msg.body, "stop", 0, n, n), state.done, start + MAX_FETCH)
    dtype = _dtype(msg.body)
    frames, parts = [], []
    for i in range(start, max(start, stop)):
        desc, buf = server.registry.frame_parts(state, i, dtype)
        frames.append({"frame": i, "image": dict(desc, part=len(parts))})
        parts.append(buf)
    server.reply(peer, msg, {**state.summary(), "frames": frames}, parts)


def cancel(server: Server, peer: Peer, msg: Message) -> None:
    state = _shot(server, msg.body)
    was = server.worker.cancel(state.meta.key)
    if was == "queued":  # never started: the worker reports nothing, so do it here
        server.registry.stop(state, "cancelled", "cancelled while queued")
        server.registry.advance_all(state)
    server.reply(peer, msg, {"key": state.meta.key, "was": was, "done": state.done})


def status(server: Server, peer: Peer, msg: Message) -> None:
    if msg.body.get("key") is None:
        server.reply(peer, msg, server.info())
        return
    server.reply(peer, msg, _shot(server, msg.body).summary())


def list_shots(server: Server, peer: Peer, msg: Message) -> None:
    shots = []
    for key in server.cache.list_keys():
        state = server.registry.shots.get(key)
        if state is None:
            meta = server.cache.meta(key)
            state = ShotState(meta, server.cache.done(key))
            state.status = "finished" if state.done >= meta.n_frames else "idle"
        shots.append(state.summary())
    server.reply(peer, msg, {"shots": shots})


def shutdown(server: Server, peer: Peer, msg: Message) -> None:
    server.reply(peer, msg, {"stopping": True})
    server.stopping = True


def echo(server: Server, peer: Peer, msg: Message) -> None:
    """Diagnostics and benchmarks: the body's ``arrays`` are checked, the parts sent back."""
    arrays = body_field(msg.body, "arrays", list, "a list of {part, dtype, shape}", [])
    for i, desc in enumerate(arrays):
        unpack_array(desc, msg.parts, f"arrays[{i}]")
    server.reply(peer, msg, {"arrays": arrays}, msg.parts)


HANDLERS: dict[str, Handler] = {
    "hello": hello,
    "heartbeat": heartbeat,
    "submit": submit,
    "subscribe": subscribe,
    "get_frame": get_frame,
    "fetch": fetch,
    "cancel": cancel,
    "status": status,
    "list_shots": list_shots,
    "shutdown": shutdown,
    "echo": echo,
}
HANDLERS.update(upload.HANDLERS)  # open_shot / add_frames / start_shot (chunked upload)


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

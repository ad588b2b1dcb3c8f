"""Active shots: who listens to which shot, who waits for which frame, and delivering to them.

Only the socket loop thread touches this. Every subscriber has a cursor ``next``: frames go
out strictly in order and exactly once, either live from the worker or, when the subscriber is
behind (it joined late, or its socket was full), from the cache, a few at a time, so a slow
client never makes the server hold a whole shot in memory. Frames not in memory are read on the
reader thread (:func:`Registry.send_frames`), never on the loop, each message keeping its place
in the peer's queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from server.cache import ShotCache, ShotMeta
from server.frames import FrameMemory, Loaded, frame_bytes, from_memory, load
from server.protocol import error_body

log = logging.getLogger("warpdiff.server")

TERMINAL = ("finished", "cancelled", "error")
CATCH_UP_PER_PUMP = 4


@dataclass(frozen=True)
class Peer:
    """A ROUTER peer: its identity, and whether it is a REQ socket (empty delimiter frame)."""

    identity: bytes
    req: bool = False


class Outbox(Protocol):
    def send(
        self, peer: Peer, type: str, body: dict[str, Any], parts: Sequence[Any], parent: Any
    ) -> None: ...

    def backlogged(self, peer: Peer) -> bool: ...

    def reserve(self, peer: Peer, size: int) -> Any: ...

    def fill(
        self, slot: Any, type: str, body: dict[str, Any], parts: Sequence[Any], parent: Any
    ) -> None: ...


class Reader(Protocol):
    """Runs ``work()`` off the loop, then ``done(result, error)`` on it (server.intake)."""

    def run(self, work: Callable[[], Any], done: Callable[[Any, BaseException | None], None]): ...


# A message carrying loaded frames: (type, body) from them.
Build = Callable[[list[Loaded]], tuple[str, dict[str, Any]]]


@dataclass
class Subscriber:
    """A peer listening to a shot's events (``parent``: the submit/subscribe message id)."""

    peer: Peer
    parent: Any
    stream: bool = True  # frame events carry the frame
    previews: bool = False  # frame events carry a small uint8 preview
    dtype: str = "float32"
    next: int = 0  # the next frame this subscriber gets


@dataclass
class Waiter:
    """A pending ``get_frame``: answered when frame ``index`` is finished."""

    peer: Peer
    msg_id: Any
    index: int
    dtype: str


@dataclass
class ShotState:
    meta: ShotMeta
    done: int
    status: str = "idle"  # idle queued running paused finished cancelled error
    message: str = ""
    subscribers: list[Subscriber] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)
    latest: tuple[int, Any, Any] | None = None  # (index, frame part, preview part) from worker
    compute_s: dict[int, float] = field(default_factory=dict)  # seconds in the model, per frame
    timing: dict[int, dict[str, float]] = field(default_factory=dict)  # source/model/cache s

    def summary(self) -> dict[str, Any]:
        m = self.meta
        return {
            "key": m.key,
            "state": self.status,
            "done": self.done,
            "n_frames": m.n_frames,
            "task": m.request.get("task"),
            "height": m.height,
            "width": m.width,
            "message": self.message,
        }


def cache_view(cache: ShotCache, key: str) -> ShotState | None:
    """A shot as the cache holds it (finished, partial, or failed and why), or None; any
    thread (the loop for one shot, the reader thread for ``list_shots``)."""
    if not cache.exists(key):
        return None
    meta = cache.meta(key)
    done = cache.done(key)
    state = ShotState(meta, done, "finished" if done >= meta.n_frames else "idle")
    error = cache.error(key)
    if error is not None and done < meta.n_frames:
        state.status, state.message = "error", error
    return state


class Registry:
    """The shots that have listeners, waiters or jobs; everything else lives in the cache."""

    def __init__(
        self,
        cache: ShotCache,
        outbox: Outbox,
        job_state: Callable[[str], str | None],
        reader: Reader,
        memory: FrameMemory,
    ) -> None:
        self.cache, self.outbox, self.reader, self.memory = cache, outbox, reader, memory
        self.job_state = job_state  # the worker's 'running' / 'queued' / None for a shot
        self.shots: dict[str, ShotState] = {}

    def get(self, key: Any) -> ShotState | None:
        """The active shot, or a view of a finished/partial one in the cache, or None.

        A view from the cache is not kept: :meth:`activate` it before attaching anything.
        """
        if not isinstance(key, str) or not key.isalnum():
            return None
        state = self.shots.get(key)
        return cache_view(self.cache, key) if state is None else state

    def activate(self, state: ShotState) -> ShotState:
        """Keep ``state`` while it has listeners, waiters or a job (see :meth:`forget_idle`)."""
        return self.shots.setdefault(state.meta.key, state)

    def forget_idle(self, key: str) -> None:
        """Drop a shot nobody listens to or waits for and no job makes (the cache keeps it)."""
        state = self.shots.get(key)
        if state is None or state.subscribers or state.waiters or self.job_state(key):
            return
        del self.shots[key]

    def drop_peer(self, peer: Peer) -> None:
        """A peer that is gone (or hopelessly slow): forget its subscriptions and waits."""
        for state in self.shots.values():
            state.subscribers = [s for s in state.subscribers if s.peer != peer]
            state.waiters = [w for w in state.waiters if w.peer != peer]

    # -- delivery -----------------------------------------------------------------------------
    def event(self, sub: Subscriber, state: ShotState, kind: str, parts: Sequence = (), **body):
        payload = {"key": state.meta.key, "kind": kind, "n_frames": state.meta.n_frames, **body}
        self.outbox.send(sub.peer, "event", payload, parts, sub.parent)

    def send_frames(
        self,
        peer: Peer,
        parent: Any,
        state: ShotState,
        indices: Sequence[int],
        dtype: str,
        build: Build,
        max_bytes: int | None = None,
    ) -> None:
        """Send ``build(frames)`` with frames ``indices`` of ``state`` as its parts: at once when
        they are all in memory, else once the reader thread has read them (the message keeps
        its place in the peer's queue meanwhile). ``max_bytes``: stop after that many bytes of
        frames (at least one; ``build`` sees which were loaded)."""
        key = state.meta.key
        ready = [self._in_memory(state, i, dtype) for i in indices]
        if ready and all(f is not None for f in ready):
            loaded, held = [], 0
            for f in ready:
                loaded.append(f)
                held += f.buf.nbytes
                if max_bytes is not None and held >= max_bytes:
                    break
            self._send_built(peer, parent, build, loaded)  # type: ignore[arg-type]
            return
        meta = state.meta
        scale = int(meta.request.get("scale", 1)) if meta.request.get("task") == "upscale" else 1
        size = frame_bytes(meta.height, meta.width, scale, dtype, len(indices))
        slot = self.outbox.reserve(peer, min(size, max_bytes or size) + 4096)
        if slot is None:  # the peer was dropped: over its backlog bound
            return
        cache, memory = self.cache, self.memory

        def work() -> list[Loaded] | None:
            if slot.dead:
                return None
            return load(cache, memory, key, list(indices), dtype, max_bytes)

        def done(loaded: list[Loaded] | None, error: BaseException | None) -> None:
            if error is not None:
                log.error("could not read frames of shot %s", key, exc_info=error)
                message = f"frames of shot {key} could not be read ({type(error).__name__})"
                self.outbox.fill(slot, "error", error_body("internal", message), (), parent)
            elif loaded is not None:
                type_, body = build(loaded)
                self.outbox.fill(slot, type_, body, [f.buf for f in loaded], parent)

        self.reader.run(work, done)

    def _in_memory(self, state: ShotState, index: int, dtype: str) -> Loaded | None:
        latest = state.latest
        if latest is not None and latest[0] == index and dtype == "float32":
            return Loaded(index, dict(latest[1][0], part=0), latest[1][1])
        return from_memory(self.memory, state.meta.key, index, dtype)

    def _send_built(self, peer: Peer, parent: Any, build: Build, loaded: list[Loaded]) -> None:
        type_, body = build(loaded)
        self.outbox.send(peer, type_, body, [f.buf for f in loaded], parent)

    def advance(self, state: ShotState, sub: Subscriber, budget: int) -> bool:
        """Send ``sub`` what it is owed, at most ``budget`` frames; True if it is finished."""
        while sub.next < state.done and budget > 0:
            if self.outbox.backlogged(sub.peer):
                return False
            extra = {"compute_s": state.compute_s[sub.next]} if sub.next in state.compute_s else {}
            if sub.next in state.timing:
                extra["timing"] = state.timing[sub.next]
            if sub.stream:
                self._send_event_frame(sub, state, extra)
            else:  # a late listener without images still hears of every finished frame once
                self.event(sub, state, "frame", frame=sub.next, **extra)
            sub.next += 1
            budget -= 1
        if state.status in TERMINAL and sub.next >= state.done:
            self.event(sub, state, state.status, frame=state.done - 1, message=state.message)
            return True
        return False

    def _send_event_frame(self, sub: Subscriber, state: ShotState, extra: dict) -> None:
        head = {"key": state.meta.key, "kind": "frame", "n_frames": state.meta.n_frames}

        def build(loaded: list[Loaded]) -> tuple[str, dict[str, Any]]:
            f = loaded[0]
            return "event", {**head, "frame": f.index, "image": f.desc, **extra}

        self.send_frames(sub.peer, sub.parent, state, [sub.next], sub.dtype, build)

    def pump(self) -> bool:
        """Catch up late or slow subscribers a little; True while some are still behind."""
        behind = False
        for state in list(self.shots.values()):
            keep = []
            for sub in state.subscribers:
                if not self.advance(state, sub, CATCH_UP_PER_PUMP):
                    keep.append(sub)
                    waiting = self.outbox.backlogged(sub.peer)  # the flush retries those
                    behind |= sub.stream and sub.next < state.done and not waiting
            if len(keep) < len(state.subscribers):
                state.subscribers = keep
                self.forget_idle(state.meta.key)
        return behind

    def answer_waiters(self, state: ShotState) -> None:
        """Reply to every ``get_frame`` whose frame is finished."""
        pending = []
        for w in state.waiters:
            if w.index < state.done:
                self.reply_frame(w.peer, w.msg_id, state, w.index, w.dtype)
            else:
                pending.append(w)
        state.waiters = pending

    def reply_frame(self, peer: Peer, msg_id: Any, state: ShotState, index: int, dtype: str):
        body = {"key": state.meta.key, "frame": index, "n_frames": state.meta.n_frames}

        def build(loaded: list[Loaded]) -> tuple[str, dict[str, Any]]:
            return "get_frame_reply", {**body, "image": loaded[0].desc}

        self.send_frames(peer, msg_id, state, [index], dtype, build)

    def fail_waiters(self, state: ShotState, code: str, message: str) -> None:
        for w in state.waiters:
            self.outbox.send(w.peer, "error", error_body(code, message), (), w.msg_id)
        state.waiters = []

    # -- worker events ------------------------------------------------------------------------
    def on_worker(self, body: dict[str, Any], parts: Sequence[Any]) -> None:
        """Apply a worker event: update the shot, tell its listeners and waiters."""
        key = body.get("key")
        state = self.shots.get(key) if isinstance(key, str) else None
        if state is None:  # a job nobody activated: cannot happen, but never crash on it
            log.warning("worker event for an inactive shot %r", key)
            return
        kind = body.get("kind")
        if kind == "frame":
            self._on_frame(state, body, parts)
        elif kind in ("started", "progress"):
            state.status = "running"
            extra = {k: v for k, v in body.items() if k not in ("key", "kind", "n_frames")}
            for sub in state.subscribers:
                self.event(sub, state, kind, **extra)
        else:
            self.stop(state, kind, str(body.get("message", "")))
        self.advance_all(state)

    def _on_frame(self, state: ShotState, body: dict[str, Any], parts: Sequence[Any]) -> None:
        index = int(body["frame"])
        image = (dict(body["image"]), parts[0])
        state.done = max(state.done, index + 1)
        state.latest = (index, image, parts[1] if len(parts) > 1 else None)
        shape = tuple(body["image"]["shape"])
        if body["image"].get("dtype") == "float32":  # served from memory while it is recent
            self.memory.put(state.meta.key, index, np.frombuffer(parts[0], "<f4").reshape(shape))
        state.compute_s[index] = float(body.get("compute_s", 0.0))
        if isinstance(body.get("timing"), dict):
            state.timing[index] = dict(body["timing"])
        for sub in state.subscribers:
            if not sub.stream and sub.next == index:  # in step: told now, with its preview
                sub.next = index + 1
                extra: dict[str, Any] = {}
                send_parts: tuple = ()
                if sub.previews and state.latest[2] is not None:
                    extra["preview"] = dict(body["preview"], part=0)
                    send_parts = (state.latest[2],)
                extra["compute_s"] = state.compute_s[index]
                if index in state.timing:
                    extra["timing"] = state.timing[index]
                self.event(sub, state, "frame", send_parts, frame=index, **extra)
        self.answer_waiters(state)

    def stop(self, state: ShotState, kind: Any, message: str) -> None:
        """The shot's job ended (finished, paused, cancelled or error)."""
        pending = self.job_state(state.meta.key)  # a newer job for this shot may be queued
        if pending:
            state.status = pending
            return
        state.status = kind if kind in (*TERMINAL, "paused") else "error"
        state.message = message
        if kind == "cancelled":
            self.fail_waiters(state, "cancelled", f"shot {state.meta.key} was cancelled")
        elif kind == "error":
            self.fail_waiters(state, "failed", message or "the shot failed")
        state.latest = None

    def advance_all(self, state: ShotState) -> None:
        state.subscribers = [s for s in state.subscribers if not self.advance(state, s, 1)]
        if state.status in (*TERMINAL, "paused"):
            self.forget_idle(state.meta.key)

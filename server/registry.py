"""Active shots: who listens to which shot, who waits for which frame, and delivering to them.

Only the socket loop thread touches this. Every subscriber has a cursor ``next``: frames go
out strictly in order and exactly once, either live from the worker or, when the subscriber is
behind (it joined late, or its socket was full), from the cache, a few at a time, so a slow
client never makes the server hold a whole shot in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.cache import ShotCache, ShotMeta
from server.protocol import array_part, error_body, from_float

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


class Registry:
    """The shots that have listeners, waiters or jobs; everything else lives in the cache."""

    def __init__(
        self, cache: ShotCache, outbox: Outbox, job_state: Callable[[str], str | None]
    ) -> None:
        self.cache, self.outbox = cache, outbox
        self.job_state = job_state  # the worker's 'running' / 'queued' / None for a shot
        self.shots: dict[str, ShotState] = {}

    def get(self, key: Any) -> ShotState | None:
        """The active shot, or a view of a finished/partial one in the cache, or None.

        A view from the cache is not kept: :meth:`activate` it before attaching anything.
        """
        if not isinstance(key, str) or not key.isalnum():
            return None
        state = self.shots.get(key)
        if state is None and self.cache.exists(key):
            meta = self.cache.meta(key)
            done = self.cache.done(key)
            state = ShotState(meta, done, "finished" if done >= meta.n_frames else "idle")
            error = self.cache.error(key)
            if error is not None and done < meta.n_frames:
                state.status, state.message = "error", error
        return state

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

    def frame_parts(self, state: ShotState, index: int, dtype: str) -> tuple[dict, Any]:
        """(descriptor, buffer) of a finished frame: the worker's buffer if fresh, else cache."""
        if state.latest is not None and state.latest[0] == index and dtype == "float32":
            return dict(state.latest[1][0], part=0), state.latest[1][1]
        frame = self.cache.read_frame(state.meta.key, index)
        return array_part(from_float(frame, dtype), 0)

    def advance(self, state: ShotState, sub: Subscriber, budget: int) -> bool:
        """Send ``sub`` what it is owed, at most ``budget`` frames; True if it is finished."""
        while sub.next < state.done and budget > 0:
            if self.outbox.backlogged(sub.peer):
                return False
            extra = {"compute_s": state.compute_s[sub.next]} if sub.next in state.compute_s else {}
            if sub.next in state.timing:
                extra["timing"] = state.timing[sub.next]
            if sub.stream:
                desc, buf = self.frame_parts(state, sub.next, sub.dtype)
                self.event(sub, state, "frame", (buf,), frame=sub.next, image=desc, **extra)
            else:  # a late listener without images still hears of every finished frame once
                self.event(sub, state, "frame", frame=sub.next, **extra)
            sub.next += 1
            budget -= 1
        if state.status in TERMINAL and sub.next >= state.done:
            self.event(sub, state, state.status, frame=state.done - 1, message=state.message)
            return True
        return False

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
        desc, buf = self.frame_parts(state, index, dtype)
        body = {"key": state.meta.key, "frame": index, "n_frames": state.meta.n_frames}
        self.outbox.send(peer, "get_frame_reply", {**body, "image": desc}, (buf,), msg_id)

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

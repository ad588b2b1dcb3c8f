"""What both workers share (``server/worker.py``: the local GPU; ``server/ray_worker.py``: a Ray
cluster): the shots they hold, the socket loop's calls on them, how a shot is stopped, and how
its events reach the loop.

The socket loop never waits on a worker: it enqueues, extends and cancels jobs under one lock
(:class:`JobWorker`), and the worker reports everything (started, progress, frame, paused,
finished, cancelled, error) as messages on an inproc PUSH socket that one emitter thread owns;
the loop polls it beside its ROUTER socket. A frame event carries the finished frame as a
binary part (zero-copy through inproc). Events go out in the order the worker made them.

A job is queued, then running (a worker took it), then gone (its last event is made after it
left, so the loop never sees a finished shot still held). Cancel sets the job's ``stop``
event, which the worker's computation polls at every step (``should_stop``); a worker that
runs a job elsewhere (Ray actors) is also told through :meth:`JobWorker._stop_running_locked`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from server.cache import ShotCache
from server.protocol import array_part, encode
from warpcore.progress import Event

log = logging.getLogger("warpdiff.server")

PREVIEW_SIDE = 128


class QueueFull(Exception):
    """The queue holds ``limit`` jobs already."""


@dataclass
class Job:
    """Make frames ``[first unfinished, target]`` of shot ``key``."""

    key: str
    target: int
    previews: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    running: bool = False  # a worker took it (queued until then)


class JobWorker:
    """The jobs of one worker (queued and running, in arrival order) and its event emitter.

    ``slots``: how many jobs run at once (1 locally, one per actor on Ray). Subclasses start
    their own threads (add them to ``_threads``), take jobs with :meth:`_take_locked`, end
    them with :meth:`_done_locked`, and report with :meth:`_emit`, :meth:`_post` (e.g.
    ``emit_frame``) and :meth:`_progress_sink`."""

    def __init__(
        self,
        context: zmq.Context,
        events_address: str,
        cache: ShotCache,
        queue_limit: int = 16,
        slots: int = 1,
    ) -> None:
        self.context, self.events_address = context, events_address
        self.cache, self.queue_limit, self.slots = cache, queue_limit, slots
        self._cond = threading.Condition()
        self._jobs: deque[Job] = deque()  # queued and running, in arrival order
        self._closing = False
        self._events: queue.Queue[Callable[[zmq.Socket], None] | None] = queue.Queue()
        self._emitter = threading.Thread(
            target=self._emit_loop, name="warpdiff-events", daemon=True
        )
        self._threads: list[threading.Thread] = []  # the subclass's

    # -- hooks --------------------------------------------------------------------------------
    def _new_job(self, key: str, target: int, previews: bool) -> Job:
        return Job(key, target, previews)

    def _extended_locked(self, job: Job) -> None:
        """``job.target`` was raised (the running job makes more frames)."""

    def _stop_running_locked(self, job: Job) -> None:
        """``job`` (running) was just stopped: tell whatever computes it, beyond ``job.stop``."""

    def _closed(self) -> None:
        """After :meth:`close` joined the threads: release what the worker holds."""

    # -- called from the socket loop -----------------------------------------------------------
    def start(self) -> None:
        self._emitter.start()
        for t in self._threads:
            t.start()

    def enqueue(self, key: str, target: int, previews: bool = False) -> int:
        """Queue a job (or raise the target of the one queued or running): queue position."""
        with self._cond:
            if self.extend_locked(key, target, previews):
                return self._position_locked(key)
            waiting = self._waiting_locked()
            if len(waiting) >= self.queue_limit:
                raise QueueFull(f"{len(waiting)} shots are queued (limit {self.queue_limit})")
            self._jobs.append(self._new_job(key, target, previews))
            self._cond.notify_all()
            return self._position_locked(key)

    def full(self) -> bool:
        """True when a new shot would be refused."""
        with self._cond:
            return len(self._waiting_locked()) >= self.queue_limit

    def extend_locked(self, key: str, target: int, previews: bool) -> bool:
        """Raise the target of the shot's live job (queued or running); False if none."""
        for job in self._jobs:
            if job.key == key and not job.stop.is_set():
                if target > job.target:
                    job.target = target
                    self._extended_locked(job)
                job.previews = job.previews or previews
                return True
        return False

    def cancel(self, key: str) -> str:
        """Stop the shot's job: 'running' (stops within a step), 'queued' (dropped) or 'idle'."""
        with self._cond:
            stopping = False  # a job of this shot told to stop before, still winding down
            for job in list(self._jobs):
                if job.key != key:
                    continue
                if job.stop.is_set():
                    stopping = stopping or job.running
                    continue
                job.stop.set()
                if not job.running:
                    self._jobs.remove(job)
                    return "queued"
                self._stop_running_locked(job)
                return "running"
            return "running" if stopping else "idle"

    def state(self, key: str) -> str | None:
        with self._cond:
            for job in self._jobs:
                if job.key == key:
                    return "running" if job.running else "queued"
        return None

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            running = self._running_keys_locked()
            return {
                "running": running[0] if running else None,
                "queued": len(self._waiting_locked()),
                "limit": self.queue_limit,
            }

    def close(self, timeout: float = 10.0) -> None:
        """Stop every job and join the threads (running frames stop within a step)."""
        with self._cond:
            self._closing = True
            for job in list(self._jobs):
                if not job.stop.is_set():
                    job.stop.set()
                    if job.running:
                        self._stop_running_locked(job)
            self._jobs.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.1, deadline - time.monotonic()))
        self._events.put(None)
        if self._emitter.is_alive():
            self._emitter.join(max(0.1, deadline - time.monotonic()))
        self._closed()

    # -- for the subclass's threads ------------------------------------------------------------
    def _waiting_locked(self) -> list[Job]:
        return [job for job in self._jobs if not job.running]

    def _running_keys_locked(self) -> list[str]:
        return [job.key for job in self._jobs if job.running]

    def _position_locked(self, key: str) -> int:
        waiting = [job.key for job in self._waiting_locked()]
        if key not in waiting:
            return 0
        return waiting.index(key) + bool(self._running_keys_locked())

    def _take_locked(self) -> Job | None:
        """The next queued job, now running, if a slot is free (else None)."""
        if self._closing or sum(job.running for job in self._jobs) >= self.slots:
            return None
        job = next((job for job in self._jobs if not job.running), None)
        if job is not None:
            job.running = True
        return job

    def _done_locked(self, job: Job) -> None:
        """The job ended (before its last event is made: the loop then sees it gone)."""
        if job in self._jobs:
            self._jobs.remove(job)
        self._cond.notify_all()

    # -- events ---------------------------------------------------------------------------------
    def _post(self, send: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Queue ``send(push, *args, **kwargs)`` for the emitter thread (``emit``,
        ``emit_frame``): events leave in the order they were made."""
        self._events.put(lambda push: send(push, *args, **kwargs))

    def _emit(self, key: str, kind: str, parts: tuple = (), **body: Any) -> None:
        self._post(emit, key, kind, parts, **body)

    def _progress_sink(self, key: str) -> Callable[[Event], None]:
        """A ``ClipRestorer`` ``on_event``: each step's progress as a ``progress`` event."""

        def sink(event: Event) -> None:
            data = {
                k: v for k, v in event.data.items() if isinstance(v, (int, float, str, type(None)))
            }
            self._emit(
                key,
                "progress",
                frame=event.frame,
                n_frames=event.n_frames,
                step=event.step,
                n_steps=event.n_steps,
                eta_s=event.eta_s,
                message=event.message,
                data=data,
            )

        return sink

    def _emit_loop(self) -> None:
        push = self.context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(self.events_address)
        try:
            while (send := self._events.get()) is not None:
                send(push)
        finally:
            push.close()


def emit(push: zmq.Socket, key: str, kind: str, parts: tuple = (), **body: Any) -> None:
    push.send_multipart(
        encode("worker", {"key": key, "kind": kind, **body}, parts=parts), copy=False
    )


def emit_frame(
    push: zmq.Socket,
    key: str,
    index: int,
    n: int,
    out: np.ndarray,
    compute_s: float,
    previews: bool,
    timing: dict[str, float] | None = None,
) -> None:
    desc, buf = array_part(out, 0)
    parts: tuple = (buf,)
    body: dict[str, Any] = {"frame": index, "n_frames": n, "compute_s": compute_s, "image": desc}
    if timing is not None:
        body["timing"] = timing
    if previews:
        pdesc, pbuf = array_part(preview(out), 1)
        body["preview"], parts = pdesc, (buf, pbuf)
    emit(push, key, "frame", parts=parts, **body)


def preview(frame: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """A low-resolution uint8 preview (longest side at most ``side``, by striding)."""
    step = max(1, -(-max(frame.shape[:2]) // side))
    small = frame[::step, ::step]
    return (np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

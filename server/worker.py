"""The one GPU worker: a thread with a bounded queue of shot jobs.

The socket loop never waits on the worker: it enqueues, extends and cancels jobs under a lock,
and the worker reports everything (started, progress, frame, paused, finished, cancelled,
error) as messages on an inproc PUSH socket the loop polls beside its ROUTER socket. A frame
event carries the finished frame as a binary part (zero-copy through inproc).

A job makes the frames of one shot in order from the shot's first unfinished frame up to its
``target`` (inclusive); each finished frame goes to the cache with the restorer's state before
it is reported, so a killed server resumes from the last finished frame.

The worker thread runs :data:`WORKER_NICE` steps nicer than the socket loop (Linux), and so do
the compute threads it starts: when the CPUs are short, ``heartbeat`` and ``hello`` go first.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from server.cache import CacheFull, ShotCache
from server.engine import Engine
from server.protocol import array_part, encode
from server.shots import ShotInputs, request_for_device
from warpcore.errors import Cancelled, InvalidInput, ModelNotFound
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


class Worker:
    """Runs jobs one at a time in its own thread; see the module docstring."""

    def __init__(
        self,
        context: zmq.Context,
        events_address: str,
        cache: ShotCache,
        engine: Engine,
        queue_limit: int = 16,
    ) -> None:
        self.context, self.events_address = context, events_address
        self.cache, self.engine, self.queue_limit = cache, engine, queue_limit
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._live: tuple[str, Any, Source] | None = None  # (key, restorer, source): paused shot
        self._thread = threading.Thread(target=self._main, name="warpdiff-worker", daemon=True)

    # -- called from the socket loop -----------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def enqueue(self, key: str, target: int, previews: bool = False) -> int:
        """Queue a job (or raise the target of the one queued or running): queue position."""
        with self._cond:
            if self.extend_locked(key, target, previews):
                return self._position_locked(key)
            if len(self._queue) >= self.queue_limit:
                raise QueueFull(f"{len(self._queue)} shots are queued (limit {self.queue_limit})")
            self._queue.append(Job(key, target, previews))
            self._cond.notify()
            return self._position_locked(key)

    def full(self) -> bool:
        """True when a new shot would be refused."""
        with self._cond:
            return len(self._queue) >= self.queue_limit

    def extend_locked(self, key: str, target: int, previews: bool) -> bool:
        for job in [self._current, *self._queue]:
            if job is not None and job.key == key and not job.stop.is_set():
                job.target = max(job.target, target)
                job.previews = job.previews or previews
                return True
        return False

    def _position_locked(self, key: str) -> int:
        if self._current is not None and self._current.key == key:
            return 0
        keys = [job.key for job in self._queue]
        return keys.index(key) + (self._current is not None)

    def cancel(self, key: str) -> str:
        """Stop the shot's job: 'running' (stops within a step), 'queued' (dropped) or 'idle'."""
        with self._cond:
            if self._current is not None and self._current.key == key:
                self._current.stop.set()
                return "running"
            for job in list(self._queue):
                if job.key == key:
                    self._queue.remove(job)
                    return "queued"
        return "idle"

    def state(self, key: str) -> str | None:
        with self._cond:
            if self._current is not None and self._current.key == key:
                return "running"
            return "queued" if any(job.key == key for job in self._queue) else None

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            running = self._current.key if self._current is not None else None
            return {"running": running, "queued": len(self._queue), "limit": self.queue_limit}

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything and join the thread (the running frame stops within a step)."""
        with self._cond:
            self._closing = True
            self._queue.clear()
            if self._current is not None:
                self._current.stop.set()
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the worker thread ---------------------------------------------------------------------
    def _main(self) -> None:
        lower_thread_priority(WORKER_NICE)
        push = self.context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(self.events_address)
        try:
            while (job := self._next_job()) is not None:
                try:
                    kind, body = self._run(job, push)
                except Exception as exc:  # never lose the worker: report and take the next job
                    message = _describe(exc)
                    log.error("shot %s failed (%s):\n%s", job.key, message, traceback.format_exc())
                    self._live = None
                    kind, body = "error", {"message": message}
                    self.cache.write_error(job.key, message)
                with self._cond:  # before the last event: the loop then sees the job gone
                    self._current = None
                _emit(push, job.key, kind, **body)
        finally:
            push.close()

    def _next_job(self) -> Job | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if self._closing:
                return None
            self._current = self._queue.popleft()
            return self._current

    def _run(self, job: Job, push: zmq.Socket) -> tuple[str, dict[str, Any]]:
        """Make the job's frames; returns the last event (finished, paused or cancelled)."""
        meta = self.cache.meta(job.key)
        n = meta.n_frames
        start = self.cache.done(job.key)
        if start >= n:
            return "finished", {"n_frames": n}
        _emit(push, job.key, "started", frame=start, n_frames=n, resume_from=start)
        restorer, source = self._restorer(job.key, meta, start, push)
        index = start
        while index <= min(job.target, n - 1):
            if job.stop.is_set():
                return "cancelled", {"frame": index, "n_frames": n}
            t_source = time.perf_counter()
            frame, mask = source(index)
            sink = _progress_sink(push, job.key)
            t0 = time.perf_counter()
            try:
                out = restorer.process(
                    index, frame, mask, on_event=sink, should_stop=job.stop.is_set
                )
            except Cancelled:
                return "cancelled", {"frame": index, "n_frames": n}
            compute_s = time.perf_counter() - t0
            if not np.isfinite(out).all():
                raise ShotFailed(
                    f"frame {index}: the model returned NaN or infinite pixels; the frame was "
                    "not kept (try another seed or model)"
                )
            t_cache = time.perf_counter()
            self.cache.write_frame(job.key, index, out)
            self.cache.write_state(job.key, index + 1, restorer.state_dict())
            timing = {
                "source_s": t0 - t_source,  # input read (+ propagation: fill and plate flows)
                "model_s": compute_s,  # restorer.process: denoiser steps, warps, guidance
                "cache_s": time.perf_counter() - t_cache,  # frame + resume state written
            }
            _emit_frame(push, job.key, index, n, out, compute_s, job.previews, timing)
            index += 1
        return ("finished" if index >= n else "paused"), {"frame": index - 1, "n_frames": n}

    def _restorer(self, key: str, meta: Any, start: int, push: zmq.Socket) -> tuple[Any, Source]:
        """The live restorer of a paused/cancelled shot, or a new one resumed from the cache;
        with the source of its frames (and masks)."""
        live = self._live
        if live is not None and live[0] == key and live[1].next_index == start:
            return live[1], live[2]
        self._live = None
        request = request_for_device(meta, self.engine.device)
        if not self.engine.is_loaded(request.model, request.task):
            _emit(push, key, "progress", message=f"loading model {request.model!r}")
        source, flow_fn = _frame_source(ShotInputs(self.cache, meta), request, meta.n_frames)
        restorer = self.engine.restorer(
            request, (meta.height, meta.width), meta.n_frames, flow_fn=flow_fn
        )
        if start > 0:
            next_index, state = self.cache.load_state(key)
            if "chunked" in state:  # server/ray_worker.marker_state
                raise ShotFailed(
                    f"frames 0-{start - 1} were made in chunks by a --ray server and the state "
                    "to go on from is not kept; resume the shot on a --ray server"
                )
            restorer.load_state_dict(state)
            if restorer.next_index != next_index:
                raise RuntimeError(f"resume state says frame {restorer.next_index}, not {start}")
        self._live = (key, restorer, source)
        return restorer, source


# frame index -> (frame (H, W, 3) float32, mask (H, W) float32 or None)
Source = Callable[[int], tuple[np.ndarray, np.ndarray | None]]


def _frame_source(inputs: ShotInputs, request: Any, n: int) -> tuple[Source, Any]:
    """Frame ``i`` and its mask as the restorer takes them, and the restorer's ``flow_fn``: for
    inpainting with ``propagate``, the hole already filled from the neighbouring frames (read
    from the shot's inputs) and the plate flows that filling estimated; else the inputs as they
    are and None (the restorer estimates its flows)."""
    if request.task != "inpaint" or request.propagate <= 0:
        return inputs.frame_and_mask, None
    from warpcore.propagate import Propagator

    def load(i: int) -> tuple[np.ndarray, np.ndarray] | None:
        return inputs.frame_and_mask(i) if i < n else None  # type: ignore[return-value]

    propagator = Propagator(load, n, request.propagate, request.flow, regional=request.crop)
    return propagator.fill, propagator.flows


WORKER_NICE = 5  # the worker yields the CPU to the socket loop (about 3:1 when both want it)


def lower_thread_priority(steps: int) -> None:
    """Make the calling thread ``steps`` nicer (Linux sets nice per thread; threads it starts
    inherit it). Elsewhere, or when refused, nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        nice = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + steps))
    except OSError:
        log.debug("could not lower the worker thread's priority")


class ShotFailed(Exception):
    """A shot cannot go on; the message says why (for the client)."""


def _describe(exc: BaseException) -> str:
    """What the client is told: our own messages as they are; anything else an error id
    (the log has the detail, which may name server files)."""
    if isinstance(exc, (InvalidInput, ModelNotFound, ShotFailed, CacheFull)):
        return str(exc)
    error_id = uuid.uuid4().hex[:12]
    log.error("error id %s: %s: %s", error_id, type(exc).__name__, exc)
    return f"internal error {error_id} ({type(exc).__name__}); the server log has the detail"


def _emit(push: zmq.Socket, key: str, kind: str, parts: tuple = (), **body: Any) -> None:
    push.send_multipart(
        encode("worker", {"key": key, "kind": kind, **body}, parts=parts), copy=False
    )


def _progress_sink(push: zmq.Socket, key: str) -> Any:
    def sink(event: Event) -> None:
        data = {k: v for k, v in event.data.items() if isinstance(v, (int, float, str, type(None)))}
        _emit(
            push,
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


def _emit_frame(
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
    _emit(push, key, "frame", parts=parts, **body)


def preview(frame: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """A low-resolution uint8 preview (longest side at most ``side``, by striding)."""
    step = max(1, -(-max(frame.shape[:2]) // side))
    small = frame[::step, ::step]
    return (np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

"""The one GPU worker: a thread that makes the frames of one shot at a time.

The queue, the socket loop's calls (enqueue, extend, cancel, state, snapshot), the stop
mechanism and the events are ``server/jobs.py``'s, shared with the Ray worker. A job makes the
frames of one shot in order from the shot's first unfinished frame up to its ``target``
(inclusive); each finished frame goes to the cache with the restorer's state before it is
reported, so a killed server resumes from the last finished frame.

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
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from server.cache import CacheFull, ShotCache
from server.engine import Engine
from server.jobs import Job, JobWorker, QueueFull, emit_frame
from server.shots import ShotInputs, request_for_device
from warpcore.errors import Cancelled, InvalidInput, ModelNotFound

log = logging.getLogger("warpdiff.server")

__all__ = ["Job", "QueueFull", "ShotFailed", "Worker"]  # QueueFull: for the handlers


class Worker(JobWorker):
    """Runs jobs one at a time in its own thread; see the module docstring."""

    def __init__(
        self,
        context: zmq.Context,
        events_address: str,
        cache: ShotCache,
        engine: Engine,
        queue_limit: int = 16,
    ) -> None:
        super().__init__(context, events_address, cache, queue_limit, slots=1)
        self.engine = engine
        self._live: tuple[str, Any, Source] | None = None  # (key, restorer, source): paused shot
        self._thread = threading.Thread(target=self._main, name="warpdiff-worker", daemon=True)
        self._threads.append(self._thread)

    # -- the worker thread ---------------------------------------------------------------------
    def _main(self) -> None:
        lower_thread_priority(WORKER_NICE)
        while (job := self._next_job()) is not None:
            try:
                kind, body = self._run(job)
            except Exception as exc:  # never lose the worker: report and take the next job
                message = _describe(exc)
                log.error("shot %s failed (%s):\n%s", job.key, message, traceback.format_exc())
                self._live = None
                kind, body = "error", {"message": message}
                self.cache.write_error(job.key, message)
            with self._cond:  # before the last event: the loop then sees the job gone
                self._done_locked(job)
            self._emit(job.key, kind, **body)

    def _next_job(self) -> Job | None:
        with self._cond:
            while not self._closing:
                job = self._take_locked()
                if job is not None:
                    return job
                self._cond.wait()
            return None

    def _run(self, job: Job) -> tuple[str, dict[str, Any]]:
        """Make the job's frames; returns the last event (finished, paused or cancelled)."""
        meta = self.cache.meta(job.key)
        n = meta.n_frames
        start = self.cache.done(job.key)
        if start >= n:
            return "finished", {"n_frames": n}
        self._emit(job.key, "started", frame=start, n_frames=n, resume_from=start)
        restorer, source = self._restorer(job.key, meta, start)
        index = start
        while index <= min(job.target, n - 1):
            if job.stop.is_set():
                return "cancelled", {"frame": index, "n_frames": n}
            t_source = time.perf_counter()
            frame, mask = source(index)
            sink = self._progress_sink(job.key)
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
            self._post(emit_frame, job.key, index, n, out, compute_s, job.previews, timing)
            index += 1
        return ("finished" if index >= n else "paused"), {"frame": index - 1, "n_frames": n}

    def _restorer(self, key: str, meta: Any, start: int) -> tuple[Any, Source]:
        """The live restorer of a paused/cancelled shot, or a new one resumed from the cache;
        with the source of its frames (and masks)."""
        live = self._live
        if live is not None and live[0] == key and live[1].next_index == start:
            return live[1], live[2]
        self._live = None
        request = request_for_device(meta, self.engine.device)
        if not self.engine.is_loaded(request.model, request.task):
            self._emit(key, "progress", message=f"loading model {request.model!r}")
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

    propagator = Propagator(
        load, n, request.propagate, request.flow, regional=request.crop,
        camera=request.camera_motion,
    )  # fmt: skip
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

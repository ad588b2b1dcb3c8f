"""``warpdiff serve --ray``: the worker of ``server/worker.py``, dispatching to a Ray cluster.

The queue, the socket loop's calls (enqueue, extend, cancel, state, snapshot, close), the stop
mechanism and the event emitter are :class:`server.jobs.JobWorker`'s, as for the local
worker, so the socket loop, the registry and the protocol are unchanged: the loop stays the
only thing that talks to clients, and this process's cache and events stay the single source
of truth.

Threads: a planner activates queued shots (up to one per actor), puts their input frames in
the object store, asks the warm flow actors for the flows of every frame pair (in frame order)
and cuts the missing frames into chunks (``warpcore/chunks.py``, balanced over the actors);
one runner per actor takes chunks in order, streams the actor's frames back and writes each
kept frame to the cache; the emitter sends the events in order. Frames may finish out of
order (chunks run side by side); the events go out in frame order (each frame exactly once) as
the finished prefix grows, and the resume state is written for the prefix, so ``cache.done``
and a restart behave as in local mode. An actor that dies has its chunk resumed on a new actor
from the state after its last delivered frame: nothing delivered is recomputed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from server.cache import ShotCache
from server.cluster import (
    ChunkActor,
    ClusterConfig,
    FlowActor,
    actor_plan,
    flow_actor_count,
)
from server.jobs import Job, JobWorker, emit_frame
from server.shots import ShotInputs, request_for_device
from server.worker import WORKER_NICE, ShotFailed, _describe, lower_thread_priority
from warpcore.chunks import Chunk, chunkable, plan_chunks

log = logging.getLogger("warpdiff.server")


@dataclass
class ShotRun(Job):
    """One shot's job on the cluster (frames up to ``target``; ``running``: activated)."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    meta: Any = None
    job: dict[str, Any] | None = None  # what every chunk of this shot is given (see ChunkActor.run)
    planned: set[int] = field(default_factory=set)  # frames some chunk delivers
    pending: int = 0  # chunks queued or running
    chunks_running: int = 0
    next_emit: int = 0  # frames 0 .. next_emit-1 are finished and announced
    arrived: set[int] = field(default_factory=set)  # finished frames >= next_emit
    states: dict[int, tuple[int, Any]] = field(default_factory=dict)  # chunk start -> (i, state)
    error: str | None = None
    started_at: float = field(default_factory=time.perf_counter)


@dataclass
class Task:
    run: ShotRun
    chunk: Chunk
    state: Any = None  # the restorer state to continue from (resume or a dead actor's chunk)
    origin: int = -1  # the planned chunk's start (its states key)


class RayWorker(JobWorker):
    """Runs shots on Ray actors; see the module docstring. The queue, the socket loop's calls,
    cancel and the events are :class:`server.jobs.JobWorker`'s, as for the local worker."""

    def __init__(
        self,
        context: zmq.Context,
        events_address: str,
        cache: ShotCache,
        config: ClusterConfig,
        resources: dict[str, float],
        device: str = "cpu",
        queue_limit: int = 16,
    ) -> None:
        import ray

        n, gpus, cpus = actor_plan(config, resources)
        super().__init__(context, events_address, cache, queue_limit, slots=n)
        self.ray, self.config = ray, config
        self.device = "cuda" if gpus > 0 else device
        self._actor_cls = ray.remote(ChunkActor).options(
            num_gpus=gpus, num_cpus=cpus, max_concurrency=4, max_restarts=0
        )
        self.actors: list[Any] = [self._new_actor() for _ in range(n)]
        flow_cls = ray.remote(FlowActor).options(
            num_cpus=config.flow_cpus, max_restarts=3, max_task_retries=3
        )
        flows = flow_actor_count(config, resources, n)
        self.flow_actors: list[Any] = [flow_cls.remote() for _ in range(flows)]
        self._flow_pings = [a.ping.remote() for a in self.flow_actors]
        self._tasks: deque[Task] = deque()
        self._running: dict[int, Task] = {}  # runner slot -> its task
        self._write_lock = threading.Lock()
        self.retries = 0
        # per chunk: when it was dispatched / delivered its first frame / ended (seconds since
        # its shot was queued) and the actor's phases (server.cluster.PhaseClock); per shot:
        # its activation's steps. For `warpdiff bench ray` and the log.
        self.timeline: deque[dict[str, Any]] = deque(maxlen=1024)
        self._threads += [
            threading.Thread(target=self._plan_loop, name="warpdiff-ray-planner", daemon=True),
        ] + [
            threading.Thread(target=self._runner, args=(i,), name=f"warpdiff-ray-{i}", daemon=True)
            for i in range(n)
        ]

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(self.device, self.config.threads)

    # -- JobWorker hooks -------------------------------------------------------------------------
    def _new_job(self, key: str, target: int, previews: bool) -> ShotRun:
        return ShotRun(key, target, previews)

    def _extended_locked(self, job: Job) -> None:
        self._plan_more_locked(job)  # type: ignore[arg-type]

    def _stop_running_locked(self, job: Job) -> None:
        """Every actor running one of the shot's chunks is told (it stops within a step); its
        queued chunks are dropped; the shot ends when its running chunks have."""
        run: ShotRun = job  # type: ignore[assignment]
        for slot, task in self._running.items():
            if task.run is run:
                self.actors[slot].cancel.remote(run.run_id)
        self._tasks = deque(t for t in self._tasks if t.run is not run)
        run.pending = run.chunks_running
        if run.pending == 0 and not self._closing:
            self._finish_locked(run)

    def _closed(self) -> None:
        for actor in [*self.actors, *self.flow_actors]:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(actor)

    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        with self._cond:
            running = self._running_keys_locked()
            snap["ray"] = {"actors": len(self.actors), "running": running, "retries": self.retries}
        return snap

    # -- the planner ---------------------------------------------------------------------------
    def _plan_loop(self) -> None:
        while True:
            with self._cond:
                run: ShotRun | None = self._take_locked()  # type: ignore[assignment]
                while run is None and not self._closing:
                    self._cond.wait(0.5)
                    run = self._take_locked()  # type: ignore[assignment]
                if run is None:
                    return
            try:
                self._activate(run)
            except Exception as exc:  # the shot fails, the server goes on
                log.error("shot %s failed to start:\n%s", run.key, traceback.format_exc())
                with self._cond:
                    run.error = _describe(exc)
                    run.pending = run.chunks_running
                    self._tasks = deque(t for t in self._tasks if t.run is not run)
                    if run.pending == 0:
                        self._finish_locked(run)

    def _activate(self, run: ShotRun) -> None:
        """Frames into the object store, flow tasks started, chunks queued."""
        ray = self.ray
        t0 = time.perf_counter()
        meta = self.cache.meta(run.key)
        n = meta.n_frames
        run.meta = meta
        done = self.cache.done(run.key)
        run.next_emit = done
        # frames past the prefix that chunks finished before a restart: announced in order
        run.arrived = {i for i in range(done, n) if self.cache.frame_path(run.key, i).is_file()}
        self._emit(run.key, "started", frame=done, n_frames=n, resume_from=done)
        request = request_for_device(meta, self.device)
        inputs = ShotInputs(self.cache, meta)
        frames = [ray.put(inputs.frame_and_mask(i)) for i in range(n)]
        t_put = time.perf_counter()
        why = chunkable(request)
        flows = None
        if why is None and n > 1:
            downscale = ray.get(self.actors[0].downscale.remote(request.model, request.task))
            req = request.to_dict()
            workers = self._ready_flow_actors()
            flows = {  # in frame order: every chunk needs the early ones first
                j: workers[j % len(workers)].pair.remote(req, downscale, frames[j - 1], frames[j])
                for j in range(1, n)
            }
        t_flows = time.perf_counter()
        with self._cond:
            self.timeline.append(
                {"key": run.key, "activate": t0 - run.started_at, "put_s": t_put - t0,
                 "flows_submit_s": t_flows - t_put}
            )  # fmt: skip
        run.job = {
            "run": run.run_id,
            "request": request.to_dict(),
            "size": (meta.height, meta.width),
            "n_frames": n,
            "frames": frames,
            "flows": flows,
        }
        state = None
        if done > 0:
            next_index, state = self.cache.load_state(run.key)
            state = state if next_index == done and "chunked" not in state else None
        with self._cond:
            run.planned.update(range(done))
            self._plan_more_locked(run, resume=state, chunked=why is None)
            if run.pending == 0:
                self._finish_locked(run)
            self._cond.notify_all()

    def _ready_flow_actors(self, timeout: float = 60.0) -> list[Any]:
        """The flow actors that started (waits for them on the first shot); none: the shot
        fails saying why, rather than waiting forever for CPUs the cluster lacks."""
        ready, _ = self.ray.wait(self._flow_pings, num_returns=len(self._flow_pings),
                                 timeout=timeout)  # fmt: skip
        workers = [a for a, p in zip(self.flow_actors, self._flow_pings, strict=True) if p in ready]
        if not workers:
            raise ShotFailed(
                f"no flow worker started on the Ray cluster within {timeout:g} s (each needs "
                f"{self.config.flow_cpus:g} CPUs); lower --ray-flow-cpus or --ray-cpus-per-actor"
            )
        return workers

    def _plan_more_locked(self, run: ShotRun, resume: Any = None, chunked: bool | None = None):
        """Queue chunks for the frames up to the target that no chunk delivers yet."""
        if run.job is None:
            return  # the planner plans it on activation
        n = run.job["n_frames"]
        if chunked is None:
            chunked = run.job["flows"] is not None
        missing = [
            i
            for i in range(min(run.target, n - 1) + 1)
            if i not in run.planned and not self.cache.frame_path(run.key, i).is_file()
        ]
        run.planned.update(missing)
        if not missing:
            return
        if chunked:
            chunks = plan_chunks(
                missing, self.config.chunk, self.config.overlap, workers=len(self.actors)
            )
        else:  # in order on one actor, like the local worker
            chunks = [Chunk(missing[0], missing[-1] + 1, missing[0])]
        for c in chunks:
            state = None
            if resume is not None and c.start == run.next_emit:
                state, c = resume, Chunk(c.start, c.stop, c.start)  # continues exactly
            self._tasks.append(Task(run, c, state, c.start))
            run.pending += 1
        self._cond.notify_all()

    # -- the runners ---------------------------------------------------------------------------
    def _runner(self, slot: int) -> None:
        lower_thread_priority(WORKER_NICE)  # cache writes yield to the socket loop
        while True:
            with self._cond:
                while not self._closing and not self._tasks:
                    self._cond.wait(0.5)
                if self._closing:
                    return
                task = self._tasks.popleft()
                self._running[slot] = task
                task.run.chunks_running += 1
            resumed = None
            try:
                resumed = self._run_task(slot, task)
            except Exception as exc:
                log.error("shot %s chunk failed:\n%s", task.run.key, traceback.format_exc())
                exc = getattr(exc, "cause", None) or exc  # a RayTaskError: the actor's own error
                with self._cond:
                    if task.run.error is None:
                        task.run.error = _describe(exc)
                    task.run.stop.set()
                    self._tasks = deque(t for t in self._tasks if t.run is not task.run)
                    task.run.pending = task.run.chunks_running
            with self._cond:
                self._running.pop(slot, None)
                run = task.run
                run.chunks_running -= 1
                if resumed is not None:  # the actor died: the rest of the chunk goes first
                    self._tasks.appendleft(resumed)
                else:
                    run.pending -= 1
                if run.pending <= 0 and run in self._jobs:
                    self._finish_locked(run)
                self._cond.notify_all()

    def _run_task(self, slot: int, task: Task) -> Task | None:
        """Stream one chunk from the actor of ``slot``; a Task for the rest if the actor died."""
        ray, run = self.ray, task.run
        if run.stop.is_set():
            return None
        c = task.chunk
        self._emit(run.key, "progress", frame=c.start, message=f"chunk {c.start}-{c.stop - 1}")
        actor = self.actors[slot]
        stream = actor.run.options(num_returns="streaming").remote(
            run.job, (c.start, c.stop, c.warm), task.state
        )
        last = c.start - 1
        record: dict[str, Any] = {"key": run.key, "slot": slot, "chunk": (c.start, c.stop, c.warm),
                                  "dispatch": time.perf_counter() - run.started_at}  # fmt: skip
        try:
            for ref in stream:
                item = ray.get(ref)
                if item[0] == "frame" and item[2] is not None:
                    record.setdefault("first_frame", time.perf_counter() - run.started_at)
                    self._deliver(task, item[1], item[2], item[3])
                    last = item[1]
                elif item[0] in ("done", "cancelled"):
                    record.update(end=time.perf_counter() - run.started_at, phases=item[2])
                    with self._cond:
                        self.timeline.append(record)
                    if item[0] == "cancelled":
                        return None
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            log.warning("actor %d died in shot %s chunk %s (%s); retrying", slot, run.key, c, exc)
            with self._cond:
                self.actors[slot] = self._new_actor()
                self.retries += 1
            if last + 1 >= c.stop or run.stop.is_set():
                return None
            with self._cond:
                saved = run.states.get(task.origin)
            if saved is not None and saved[0] == last:  # continue from the last delivered frame
                return Task(run, Chunk(last + 1, c.stop, last + 1), saved[1], task.origin)
            return Task(run, c, task.state, task.origin)
        return None

    def _deliver(self, task: Task, index: int, frame: np.ndarray, state: Any) -> None:
        """A kept frame: into the cache, then the events of the grown finished prefix."""
        run = task.run
        if not task.chunk.start <= index < task.chunk.stop:  # overlap frames never come back
            raise RuntimeError(f"chunk {task.chunk} sent frame {index}, outside what it delivers")
        if not np.isfinite(frame).all():
            raise ShotFailed(
                f"frame {index}: the model returned NaN or infinite pixels; the frame was not "
                "kept (try another seed or model)"
            )
        with self._write_lock:
            if run.stop.is_set() and run.error is not None:
                return
            self.cache.write_frame(run.key, index, frame)
            with self._cond:
                run.states[task.origin] = (index, state)
                if index < run.next_emit or index in run.arrived:
                    return  # (cannot happen: each frame belongs to one chunk)
                run.arrived.add(index)
                first = run.next_emit
                while run.next_emit in run.arrived:
                    run.arrived.discard(run.next_emit)
                    run.next_emit += 1
                last = run.next_emit - 1
                swept = range(first, run.next_emit)
                prefix_state = next((s for i, s in run.states.values() if i == last), None)
            if len(swept):  # the prefix's resume state (a marker if its chunk ran before)
                self.cache.write_state(run.key, last + 1, prefix_state or marker_state(last + 1))
            n = run.meta.n_frames
            for i in swept:
                out = frame if i == index else self.cache.read_frame(run.key, i)
                self._post(emit_frame, run.key, i, n, out, 0.0, run.previews)

    def _finish_locked(self, run: ShotRun) -> None:
        """The shot's last chunk ended: its final event (after every frame event)."""
        self._done_locked(run)
        self.timeline.append({"key": run.key, "finished": time.perf_counter() - run.started_at})
        n = run.meta.n_frames if run.meta is not None else 0
        if run.error is not None:
            message = run.error
            self.cache.write_error(run.key, message)
            self._emit(run.key, "error", message=message)
        elif run.stop.is_set():
            self._emit(run.key, "cancelled", frame=run.next_emit, n_frames=n)
        else:
            kind = "finished" if run.next_emit >= n else "paused"
            self._emit(run.key, kind, frame=run.next_emit - 1, n_frames=n)
        self._cond.notify_all()


def marker_state(next_index: int) -> dict[str, Any]:
    """A resume state that only says how many frames are finished in order: the frame before
    was made by a chunk of an earlier run whose state is gone. A --ray server resumes from it
    (chunks start from the flows); the local worker says so (server/worker.py)."""
    import torch

    return {"next_index": torch.tensor(next_index), "chunked": torch.tensor(1)}

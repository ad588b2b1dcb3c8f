"""The Ray side of ``warpdiff serve --ray``: the cluster connection, the GPU actors, flow actors.

Ray is imported only here and in ``server/ray_worker.py`` (the optional ``cluster`` extra).
An actor loads each model once and stays warm; it runs one chunk of a shot at a time
(:func:`warpcore.chunks.run_chunk`) and streams every frame back with the restorer's state
after it, so the server writes the cache and a dead actor's chunk resumes exactly where it
stopped on another actor. Flows are computed by warm flow actors (one call per frame pair);
the results live in the object store and are read by every chunk that needs them. Every chunk
reports its seconds by phase (:class:`PhaseClock`), which ``warpdiff bench ray`` prints.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from warpcore.chunks import DEFAULT_CHUNK, DEFAULT_OVERLAP
from warpcore.errors import InvalidInput


class ClusterUnreachable(Exception):
    """``--ray ADDRESS`` names no running Ray cluster (or Ray is not installed)."""


@dataclass(frozen=True)
class ClusterConfig:
    """``warpdiff serve --ray ADDRESS`` and its ``--ray-*`` options.

    ``address``: ``auto`` (the cluster this machine's ``ray start`` joined) or ``HOST:PORT`` of
    the head node's GCS. ``gpus_per_actor`` None: 1 when the cluster has GPUs, else 0 (CPU
    actors). ``actors`` None: one per ``gpus_per_actor`` GPUs, or per ``cpus_per_actor`` CPUs.
    ``chunk`` / ``overlap``: frames a chunk delivers / runs before it and drops.
    ``threads``: torch threads per actor (None: torch's default). ``flow_actors``: warm
    CPU workers computing the shots' flows, ``flow_cpus`` each (None: one per chunk actor, as
    many as the CPUs the chunk actors leave allow, at least 1).
    """

    address: str = "auto"
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    actors: int | None = None
    chunk: int = DEFAULT_CHUNK
    overlap: int = DEFAULT_OVERLAP
    threads: int | None = None
    flow_cpus: float = 1.0
    flow_actors: int | None = None
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address:
            raise InvalidInput("--ray: expected 'auto' or HOST:PORT of the Ray head node")
        if self.gpus_per_actor is not None and not 0 <= self.gpus_per_actor <= 64:
            raise InvalidInput(f"--ray-gpus-per-actor: expected 0..64, got {self.gpus_per_actor}")
        if not 0 < self.cpus_per_actor <= 256:
            raise InvalidInput(f"--ray-cpus-per-actor: expected > 0, got {self.cpus_per_actor}")
        if self.actors is not None and not 1 <= self.actors <= 4096:
            raise InvalidInput(f"--ray-actors: expected 1..4096, got {self.actors}")
        if not 1 <= self.chunk <= 100_000:
            raise InvalidInput(f"--ray-chunk: expected an integer >= 1, got {self.chunk}")
        if not 0 <= self.overlap <= 1000:
            raise InvalidInput(f"--ray-overlap: expected an integer 0..1000, got {self.overlap}")
        if not 0 < self.flow_cpus <= 256:
            raise InvalidInput(f"--ray-flow-cpus: expected > 0, got {self.flow_cpus}")
        if self.flow_actors is not None and not 1 <= self.flow_actors <= 4096:
            raise InvalidInput(f"--ray-flow-actors: expected 1..4096, got {self.flow_actors}")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise InvalidInput(f"threads per actor: expected >= 1, got {self.threads}")


def connect(config: ClusterConfig) -> dict[str, float]:
    """Join the cluster (or use the one this process already joined); its resources.

    Raises :class:`ClusterUnreachable` saying what was tried and how to start one, in seconds
    rather than Ray's minutes of retries: a ``HOST:PORT`` is probed with a plain TCP connect
    first."""
    try:
        import ray
    except ImportError:
        raise ClusterUnreachable(
            "--ray needs Ray: pip install 'warped-diffusion[cluster]' (or pip install ray)"
        ) from None
    if not ray.is_initialized():
        address = config.address
        if address != "auto":
            _probe(address, config.connect_timeout_s)
        try:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterUnreachable(
                f"cannot reach the Ray cluster at {address!r} ({exc}); start one with "
                "`ray start --head` (workers: `ray start --address HEAD:6379`) and pass "
                "--ray auto on a cluster node or --ray HEAD:6379"
            ) from None
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _probe(address: str, timeout: float) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachable(f"--ray: expected 'auto' or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {address} ({exc}); start its head node with "
            f"`ray start --head --port {port}` there, or pass --ray auto on a cluster node"
        ) from None


def actor_plan(config: ClusterConfig, resources: dict[str, float]) -> tuple[int, float, float]:
    """(actors, GPUs each, CPUs each) for this cluster and configuration."""
    gpus = resources.get("GPU", 0.0)
    per_gpu = config.gpus_per_actor if config.gpus_per_actor is not None else float(gpus > 0)
    if per_gpu > 0 and gpus < per_gpu:
        raise InvalidInput(
            f"--ray-gpus-per-actor {per_gpu}: the cluster has {gpus:g} GPUs; give 0 for CPU actors"
        )
    if config.actors is not None:
        count = config.actors
    elif per_gpu > 0:
        count = int(gpus // per_gpu)
    else:
        count = max(1, int(resources.get("CPU", 1.0) // config.cpus_per_actor))
    return max(1, count), per_gpu, config.cpus_per_actor


def flow_actor_count(config: ClusterConfig, resources: dict[str, float], actors: int) -> int:
    """Flow actors to start: ``config.flow_actors``, else one per chunk actor as far as the
    cluster's CPUs left by the chunk actors allow (at least 1)."""
    if config.flow_actors is not None:
        return config.flow_actors
    left = resources.get("CPU", 1.0) - actors * config.cpus_per_actor
    return max(1, min(actors, int(left / config.flow_cpus + 1e-9)))


# -- code that runs on the cluster ---------------------------------------------------------------
def pair_flows_task(
    request: dict[str, Any],
    downscale: int,
    prev: tuple[np.ndarray, np.ndarray | None],
    cur: tuple[np.ndarray, np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray]:
    """Ray task: the flows of one frame pair (see :func:`warpcore.chunks.flows_between`)."""
    import torch

    from warpcore.chunks import flows_between
    from warpcore.request import RestoreRequest

    torch.set_num_threads(1)
    prev, cur = ((np.array(f), None if m is None else np.array(m)) for f, m in (prev, cur))
    return flows_between(RestoreRequest.from_dict(request), downscale, prev, cur)


class PhaseClock:
    """Seconds by phase of one chunk on an actor: wall time and the calling thread's CPU time
    (CPU < wall: the phase waited, for the object store or for a core). ``model`` includes
    ``flow_wait`` (flows are fetched as the restorer asks for them); ``summary`` reports it
    apart. The composition of the flows before a chunk (when its noise needs them) happens in
    the chunk's first ``model`` call, not in ``fast_forward``. ``total``: from the chunk's
    start to now."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.frames = 0
        self._t0 = (time.perf_counter(), time.thread_time())

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        w, c = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - w
            self.cpu[phase] = self.cpu.get(phase, 0.0) + time.thread_time() - c

    def timed(self, phase: str, fn: Any) -> Any:
        def timed_fn(*args: Any, **kwargs: Any) -> Any:
            with self(phase):
                return fn(*args, **kwargs)

        return timed_fn

    def summary(self) -> dict[str, Any]:
        wall, cpu = dict(self.wall), dict(self.cpu)
        for d in (wall, cpu):  # flow fetches happen inside the model's calls
            d["model"] = d.get("model", 0.0) - d.get("flow_wait", 0.0)
        wall["total"] = time.perf_counter() - self._t0[0]
        cpu["total"] = time.thread_time() - self._t0[1]
        return {"wall": wall, "cpu": cpu, "frames": self.frames}


class _RefInputs:
    """``ShotInputs``' ``frame_and_mask`` over the shot's frames in the object store."""

    def __init__(self, refs: list[Any], clock: PhaseClock | None = None) -> None:
        self.refs, self.clock = refs, clock or PhaseClock()

    def frame_and_mask(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        import ray

        with self.clock("source"):
            frame, mask = ray.get(self.refs[i])  # read-only views of the object store: copied
            return np.array(frame), None if mask is None else np.array(mask)


class _LazyFlows(Mapping):
    """The shot's flows by frame (object refs), fetched when read and not kept: each is read
    once (the chunk's own frames by the restorer's ``flow_fn``; those before it only if the
    noise needs them composed, :meth:`ClipRestorer.start_at`), so an actor never holds a long
    shot's flows (33 MB a pair at 1080p)."""

    def __init__(self, refs: dict[int, Any], clock: PhaseClock | None = None) -> None:
        self.refs, self.clock = refs, clock or PhaseClock()

    def __getitem__(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        import ray

        with self.clock("flow_wait"):
            return ray.get(self.refs[j])

    def __contains__(self, j: object) -> bool:  # without a fetch (Mapping's would get it)
        return j in self.refs

    def __iter__(self) -> Iterator[int]:
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)


class FlowActor:
    """A warm CPU worker for a shot's flows: :func:`pair_flows_task` per frame pair, with torch
    and OpenCV imported once. (Plain Ray tasks ran in worker processes that Ray stops when
    they idle on a node with more workers than CPUs; every shot then started new ones, each
    importing torch again: about 2 s of CPU per shot, taken from the chunk actors.)"""

    def __init__(self) -> None:
        import torch

        import warpcore.chunks  # noqa: F401

        torch.set_num_threads(1)
        self.pairs = 0  # frame pairs computed

    def ping(self) -> int:
        return os.getpid()

    def stats(self) -> dict[str, int]:
        return {"pid": os.getpid(), "pairs": self.pairs}

    def pair(
        self,
        request: dict[str, Any],
        downscale: int,
        prev: tuple[np.ndarray, np.ndarray | None],
        cur: tuple[np.ndarray, np.ndarray | None],
    ) -> tuple[np.ndarray, np.ndarray]:
        flows = pair_flows_task(request, downscale, prev, cur)
        self.pairs += 1
        return flows


class ChunkActor:
    """A warm worker on one GPU (or CPU): models loaded once, one chunk at a time.

    Runs as a threaded Ray actor so :meth:`cancel` lands while :meth:`run` computes."""

    def __init__(self, device: str, threads: int | None) -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        from server.engine import Engine

        self.engine = Engine("builtin", device)
        self._lock = threading.Lock()
        self._cancelled: list[str] = []  # run ids told to stop (recent ones)
        self.log: list[tuple[str, int, float]] = []  # (run id, frame, time) per frame computed

    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "device": self.engine.device, "loaded": self.engine.loaded()}

    def downscale(self, model: str, task: str) -> int:
        """The model's latent downscale (loads it: the actor stays warm for the shot)."""
        return int(self.engine.denoiser(model, task).downscale)

    def cancel(self, run_id: str) -> bool:
        with self._lock:
            self._cancelled = [*self._cancelled[-255:], run_id]
        return True

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"pid": os.getpid(), "cancelled": list(self._cancelled), "log": list(self.log)}

    def run(self, job: dict[str, Any], chunk: tuple[int, int, int], state: Any) -> Iterator[Any]:
        """Stream ``("frame", index, frame, state)`` for frames chunk.warm .. stop-1, then
        ``("done", n, phases)``; ``("cancelled", index, phases)`` when cancelled. ``job``: run
        id, request, size, n_frames, frame refs, flow refs (None: the restorer estimates its
        flows). ``phases``: :class:`PhaseClock` seconds (wall and this thread's CPU) by phase."""

        from server.worker import _frame_source
        from warpcore.chunks import Chunk, as_flow_fn, run_chunk
        from warpcore.errors import Cancelled
        from warpcore.request import RestoreRequest

        clock = PhaseClock()
        run_id = job["run"]
        c = Chunk(*chunk)
        with clock("setup"):
            request = RestoreRequest.from_dict({**job["request"], "device": self.engine.device})
            inputs = _RefInputs(job["frames"], clock)
        flows = None
        if job["flows"] is not None:  # fetched as the restorer reads them
            flows = _LazyFlows(job["flows"], clock)
            source, flow_fn = inputs.frame_and_mask, as_flow_fn(flows)  # type: ignore[arg-type]
        else:
            source, flow_fn = _frame_source(inputs, request, job["n_frames"])  # type: ignore[arg-type]
        with clock("setup"):
            restorer = self.engine.restorer(request, tuple(job["size"]), job["n_frames"], flow_fn)
            if state is not None:
                restorer.load_state_dict(state)
        restorer.start_at = clock.timed("fast_forward", restorer.start_at)
        restorer.process = clock.timed("model", restorer.process)
        stop = self._stop_fn(run_id)
        if state is not None or flows is None:  # in order from c.warm (a resumed state or 0)
            steps = _in_order(restorer, c, source, stop)
        else:
            steps = run_chunk(restorer, c, source, flows, should_stop=stop)
        try:
            for index, out in steps:
                with self._lock:
                    self.log.append((run_id, index, time.time()))
                keep = index >= c.start
                with clock("state"):
                    saved = restorer.state_dict() if keep else None
                clock.frames += 1
                yield ("frame", index, out if keep else None, saved)
                if stop():
                    yield ("cancelled", index + 1, clock.summary())
                    return
        except Cancelled:
            yield ("cancelled", restorer.next_index, clock.summary())
            return
        yield ("done", c.stop, clock.summary())

    def _stop_fn(self, run_id: str) -> Any:
        def should_stop() -> bool:
            with self._lock:
                return run_id in self._cancelled

        return should_stop


def _in_order(
    restorer: Any, chunk: Any, source: Any, should_stop: Any
) -> Iterator[tuple[int, np.ndarray]]:
    for index in range(chunk.warm, chunk.stop):
        frame, mask = source(index)
        yield index, restorer.process(index, frame, mask, should_stop=should_stop)

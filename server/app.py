"""The server: one ROUTER socket loop, the worker thread, the shot registry.

The loop polls the ROUTER socket and the worker's inproc event socket and never waits on the
model, so ``hello`` and ``heartbeat`` answer while the worker computes. Every received message
is checked (limits, envelope, version, body) and anything wrong gets an ``error`` reply; an
exception in a handler becomes an ``internal`` error reply, never a dead server.

Sending never blocks either (:mod:`server.outbox`: each peer's unsent backlog is bounded in
bytes). Slow work (hashing and storing a submit's inputs) runs on the intake thread
(:mod:`server.intake`), and finished frames not in memory are read on the reader thread
(:mod:`server.frames`), so no message waits behind either. ZeroMQ refuses any message part over
the part limit before it is buffered (``ZMQ_MAXMSGSIZE``; the sender is disconnected).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from server.bodies import Policy
from server.cache import CacheFull, ShotCache
from server.engine import Engine
from server.frames import DEFAULT_MEMORY_BYTES, FrameMemory
from server.heap import IdleTrim, keep_freed_frames
from server.intake import Intake
from server.outbox import Outbox
from server.protocol import (
    PROTOCOL_VERSION,
    Limits,
    Message,
    ProtocolError,
    decode,
    encode,
    error_body,
)
from server.registry import Peer, Registry
from server.worker import Worker

log = logging.getLogger("warpdiff.server")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@dataclass
class ServerConfig:
    """Everything ``warpdiff serve`` takes."""

    cache_dir: str
    bind: str = "tcp://127.0.0.1:5557"
    model: str = "builtin"
    device: str = "cpu"
    queue_limit: int = 16
    curve_keys: str | None = None
    limits: Limits = field(default_factory=Limits)
    send_hwm: int = 16  # messages queued in ZeroMQ per peer before our backlog takes over
    max_backlog: int = 4096  # messages held per peer before the peer is dropped as too slow
    max_backlog_bytes: int = 256 * 2**20  # bytes held per peer before it is dropped
    allow_paths: tuple[str, ...] | None = None  # None: home for loopback, none otherwise
    cache_max_bytes: int | None = None  # None: a share of the free disk (ShotCache)
    insecure_no_auth: bool = False  # serve a non-loopback address without CURVE keys
    frame_memory_bytes: int = DEFAULT_MEMORY_BYTES  # recently made/served frames kept in memory
    ray: Any = None  # server.cluster.ClusterConfig: run shots on a Ray cluster (--ray)
    memory_budget: int | None = None  # bytes requests are planned for (None: a GPU's total)


class InsecureBind(ValueError):
    """A non-loopback address without CURVE keys (and without ``insecure_no_auth``)."""


def is_loopback(bind: str) -> bool:
    """True for tcp:// on a loopback host, ipc:// and inproc:// (this machine only)."""
    if not bind.startswith("tcp://"):
        return True
    host = bind.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS


def allowed_roots(config: ServerConfig) -> tuple[Path, ...]:
    """The folders clients may name in ``paths``, resolved (symlinks followed)."""
    if config.allow_paths is None:
        return (Path.home().resolve(),) if is_loopback(config.bind) else ()
    return tuple(Path(os.path.expanduser(p)).resolve() for p in config.allow_paths)


# A heartbeat's or hello's envelope (msgpack: the key "type", then the fixstr type).
URGENT = (b"\xa4type\xa9heartbeat", b"\xa4type\xa5hello")


def urgent_first(batch: list[Any]) -> list[Any]:
    """The messages of one loop iteration, heartbeats and hellos first (they are answered at
    once, so a burst of other requests never delays them), except one whose peer sent
    something earlier in the batch: each peer's requests keep their order."""
    first, rest, seen = [], [], set()
    for frames in batch:
        identity = frames[0].bytes if hasattr(frames[0], "bytes") else bytes(frames[0])
        envelope = frames[-1]
        small = len(frames) <= 3 and len(envelope) <= 512  # no parts, a short envelope
        data = (envelope.bytes if hasattr(envelope, "bytes") else bytes(envelope)) if small else b""
        if identity not in seen and any(token in data for token in URGENT):
            first.append(frames)
        else:
            rest.append(frames)
            seen.add(identity)
    return first + rest


def bind_endpoint(bind: str) -> str:
    """``tcp://host:0`` -> ``tcp://host:*`` (ZeroMQ's ephemeral port)."""
    return bind[:-2] + ":*" if bind.startswith("tcp://") and bind.endswith(":0") else bind


class Server:
    """Create, then :meth:`serve_forever` (blocking) or :meth:`start` (a background thread)."""

    def __init__(self, config: ServerConfig, engine: Engine | None = None) -> None:
        if not is_loopback(config.bind) and not config.curve_keys and not config.insecure_no_auth:
            raise InsecureBind(
                f"refusing to serve {config.bind} without authentication: anyone who can reach "
                "it could use this machine. Give --curve-keys DIR (make them with --make-keys), "
                "bind tcp://127.0.0.1:PORT, or pass --insecure-no-auth on a trusted network"
            )
        keep_freed_frames()  # glibc: frames reuse freed pages; IdleTrim gives them back
        self.config = config
        self.engine = engine or Engine(config.model, config.device, config.memory_budget)
        models = tuple(sorted({self.engine.default_model, "builtin", "gaussian"}))
        self.policy = Policy(
            allowed_roots(config), models, self.engine.default_model, self.engine.device
        )
        self.cache = ShotCache(config.cache_dir, config.cache_max_bytes, self._busy)
        keys = None
        if config.curve_keys:
            from server.keys import server_keys

            keys = server_keys(config.curve_keys)  # missing files: fail before any socket
        self.context = zmq.Context()
        self.events_address = f"inproc://warpdiff-events-{uuid.uuid4().hex}"
        self.events = self.context.socket(zmq.PULL)
        self.events.bind(self.events_address)
        self.router = self.context.socket(zmq.ROUTER)
        self.auth = None
        try:
            if keys is not None:
                self.auth = self._setup_curve(*keys)
            self._configure_router()
        except BaseException:
            self._close_sockets()
            raise
        self.address = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        try:
            self.worker = self._make_worker(config)
        except BaseException:
            self._close_sockets()
            raise
        self.intake = Intake(self.context, self.events_address)
        self.reader = Intake(self.context, self.events_address, "reader")
        self.frames = FrameMemory(config.frame_memory_bytes)
        self.outbox = Outbox(
            self.router,
            lambda peer: self.registry.drop_peer(peer),
            config.max_backlog,
            config.max_backlog_bytes,
        )
        self.registry = Registry(
            self.cache, self.outbox, self.worker.state, self.reader, self.frames
        )
        self.started = time.time()
        self.max_stall_s = 0.0  # the longest (wall time) the loop went between two polls
        self.max_busy_s = 0.0  # the most CPU time the loop thread spent between two polls
        self.stopping = False
        self._thread: threading.Thread | None = None
        self.received = 0
        self.heap = IdleTrim()  # kept frames go back to the system when the loop is idle

    def _make_worker(self, config: ServerConfig) -> Worker:
        """The local GPU worker, or with ``config.ray`` the Ray cluster's (server/ray_worker)."""
        if config.ray is None:
            return Worker(
                self.context, self.events_address, self.cache, self.engine, config.queue_limit
            )
        from server.cluster import connect
        from server.ray_worker import RayWorker

        resources = connect(config.ray)  # ClusterUnreachable: said at start, before serving
        return RayWorker(  # type: ignore[return-value]
            self.context,
            self.events_address,
            self.cache,
            config.ray,
            resources,
            config.device,
            config.queue_limit,
        )

    def _configure_router(self) -> None:
        r = self.router
        r.setsockopt(zmq.ROUTER_MANDATORY, 1)
        r.setsockopt(zmq.SNDHWM, self.config.send_hwm)
        r.setsockopt(zmq.LINGER, 0)
        limits = self.config.limits
        r.setsockopt(zmq.MAXMSGSIZE, max(limits.max_part_bytes, limits.max_envelope_bytes))
        endpoint = bind_endpoint(self.config.bind)
        r.bind(endpoint)
        if not is_loopback(endpoint) and self.auth is None:
            log.warning(
                "listening on %s without CURVE keys: anyone who can reach it may use it", endpoint
            )

    def _setup_curve(self, public: bytes, secret: bytes, clients: Any) -> Any:
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(self.context)
        auth.start()
        auth.configure_curve(domain="*", location=str(clients))
        self.router.curve_secretkey = secret
        self.router.curve_publickey = public
        self.router.curve_server = True
        return auth

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Server:
        """Serve in a background thread (tests, benchmarks); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="warpdiff-server")
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to stop (from any thread) and wait for it when it runs in a thread."""
        self.stopping = True
        try:
            wake = self.context.socket(zmq.PUSH)
        except zmq.ZMQError:  # already stopped: the context is gone
            wake = None
        if wake is not None:
            wake.setsockopt(zmq.LINGER, 100)
            wake.connect(self.events_address)
            with contextlib.suppress(zmq.ContextTerminated):  # the loop saw `stopping` first
                wake.send_multipart(encode("wake", {}))
            wake.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _busy(self, key: str) -> bool:
        """A shot the cache must not evict: listened to, waited for or being made."""
        return key in self.registry.shots or self.worker.state(key) is not None

    def serve_forever(self) -> None:
        """Run the loop until ``shutdown`` or :meth:`stop`; then close everything."""
        self.worker.start()
        self.intake.start()
        self.reader.start()
        log.info(
            "warpdiff server on %s (pid %d, cache %s)",
            self.address,
            os.getpid(),
            self.config.cache_dir,
        )
        try:
            self._loop()
        finally:
            self.worker.close()
            self.intake.close()
            self.reader.close()
            self._drain_events()
            self._close_sockets()

    def _close_sockets(self) -> None:
        self.router.close(linger=200)  # a moment to flush the last events (cancelled)
        self.events.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.context.term()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.events, zmq.POLLIN)
        pending = False
        while not self.stopping:
            timeout = 0 if pending else (20 if len(self.outbox) else 500)
            ready = dict(poller.poll(timeout))
            if not ready and timeout == 500:
                self.heap.idle()  # nothing to do for half a second: give kept frames back
            t0, c0 = time.perf_counter(), time.thread_time()
            if self.events in ready:
                self._drain_events()
            if self.router in ready:
                batch = []
                for _ in range(64):
                    try:
                        batch.append(self.router.recv_multipart(zmq.NOBLOCK, copy=False))
                    except zmq.Again:
                        break
                for frames in urgent_first(batch):
                    self.handle(frames)
            self.outbox.flush()
            pending = self.registry.pump()
            self.max_stall_s = max(self.max_stall_s, time.perf_counter() - t0)
            self.max_busy_s = max(self.max_busy_s, time.thread_time() - c0)

    def _drain_events(self) -> None:
        from server.handlers import on_worker_event

        while True:
            try:
                frames = self.events.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            msg = decode(frames, Limits(max_parts=8, max_part_bytes=2**40, max_total_bytes=2**41))
            if msg.type in ("intake", "reader"):
                (self.intake if msg.type == "intake" else self.reader).deliver()
                continue
            if msg.type != "worker":
                continue
            self.heap.worker_reported()
            try:
                on_worker_event(self, msg)
            except Exception:  # a bug: log it, keep serving
                log.exception("internal error on worker event %s", msg.body.get("kind"))

    # -- receiving ----------------------------------------------------------------------------
    def handle(self, frames: Sequence[Any]) -> None:
        """One ROUTER message: [identity, (empty delimiter), envelope, parts...]."""
        from server.handlers import HANDLERS, ROUTES

        self.received += 1
        self.heap.received(sum(len(f) for f in frames))
        req = len(frames) > 2 and len(frames[1]) == 0  # REQ: [identity, b"", envelope, ...]
        peer = Peer(bytes(frames[0].bytes if hasattr(frames[0], "bytes") else frames[0]), req)
        body_frames = frames[2:] if req else frames[1:]
        parent = None
        try:
            msg = decode(body_frames, self.config.limits)
            parent = msg.id
            route = ROUTES.get(msg.type)
            if route is not None:
                parser, handler = route
                handler(self, peer, msg, parser(msg, self.policy))
            elif msg.type in HANDLERS:
                HANDLERS[msg.type](self, peer, msg)
            else:
                accepted = ", ".join(sorted({*ROUTES, *HANDLERS}))
                raise ProtocolError(
                    "unknown_type",
                    f"type {msg.type!r:.80} is not a request; accepted: {accepted}",
                    msg.id,
                )
        except ProtocolError as exc:
            self.send_error(peer, exc.code, exc.message, exc.parent or parent)
        except Exception as exc:  # a bug: say so, keep serving
            self.send_internal(peer, exc, parent)

    def send_internal(self, peer: Peer, exc: BaseException, parent: Any) -> None:
        """An ``internal`` error: an error id for the client, the detail in the log only."""
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "internal error %s on a message from %s", error_id, peer.identity.hex(), exc_info=exc
        )
        message = (
            f"internal server error {error_id} ({type(exc).__name__}); the server goes on and "
            "its log has the detail"
        )
        self.send_error(peer, "internal", message, parent)

    def on_intake_error(self, peer: Peer, msg: Message, exc: BaseException) -> None:
        """A request whose intake work failed: the client hears why."""
        if isinstance(exc, ProtocolError):
            self.send_error(peer, exc.code, exc.message, msg.id)
        elif isinstance(exc, CacheFull):
            self.send_error(peer, "disk_full", str(exc), msg.id)
        else:
            self.send_internal(peer, exc, msg.id)

    # -- sending ------------------------------------------------------------------------------
    def reply(self, peer: Peer, msg: Message, body: dict[str, Any], parts: Sequence = ()) -> None:
        self.send(peer, f"{msg.type}_reply", body, parts, msg.id)

    def send_error(self, peer: Peer, code: str, message: str, parent: Any) -> None:
        self.send(peer, "error", error_body(code, message), (), parent)

    def send(
        self, peer: Peer, type: str, body: dict[str, Any], parts: Sequence[Any], parent: Any
    ) -> None:
        """Queue or send without ever blocking (:class:`server.outbox.Outbox`)."""
        self.outbox.send(peer, type, body, parts, parent)

    def backlogged(self, peer: Peer) -> bool:
        return self.outbox.backlogged(peer)

    def info(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "uptime_s": time.time() - self.started,
            "address": self.address,
            "pid": os.getpid(),
            "queue": self.worker.snapshot(),
            "active_shots": len(self.registry.shots),
            "backlogged_peers": len(self.outbox),
            "backlog_bytes": self.outbox.bytes_held(),
            "dropped_peers": self.outbox.dropped,
            "messages_received": self.received,
            "loop_stall_max_ms": round(self.max_stall_s * 1e3, 3),
            "loop_cpu_max_ms": round(self.max_busy_s * 1e3, 3),
            "cache": {
                "bytes": self.cache.used,
                "peak_bytes": self.cache.peak,
                "held_peak_bytes": self.cache.held_peak,
                "max_bytes": self.cache.max_bytes,
                "evicted": self.cache.evicted,
            },
            "frame_memory": {"bytes": self.frames.bytes, "max_bytes": self.frames.max_bytes},
        }

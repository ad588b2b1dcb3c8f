"""The server: one ROUTER socket loop, the worker thread, the shot registry.

The loop polls the ROUTER socket and the worker's inproc event socket and never waits on the
model, so ``hello`` and ``heartbeat`` answer while the worker computes. Every received message
is checked (limits, envelope, version, body) and anything wrong gets an ``error`` reply; an
exception in a handler becomes an ``internal`` error reply, never a dead server.

Sending never blocks either: with ``ROUTER_MANDATORY`` a message to a vanished peer fails at
once (its subscriptions are dropped) and a message to a peer whose pipe is full waits in a
bounded per-peer backlog (a peer over the bound is dropped as hopelessly slow).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from server.cache import ShotCache
from server.engine import Engine
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
    send_hwm: int = 64  # messages queued in ZeroMQ per peer before our backlog takes over
    max_backlog: int = 4096  # messages held per peer before the peer is dropped as too slow


def bind_endpoint(bind: str) -> str:
    """``tcp://host:0`` -> ``tcp://host:*`` (ZeroMQ's ephemeral port)."""
    return bind[:-2] + ":*" if bind.startswith("tcp://") and bind.endswith(":0") else bind


class Server:
    """Create, then :meth:`serve_forever` (blocking) or :meth:`start` (a background thread)."""

    def __init__(self, config: ServerConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or Engine(config.model, config.device)
        self.cache = ShotCache(config.cache_dir)
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
        self.worker = Worker(
            self.context, self.events_address, self.cache, self.engine, config.queue_limit
        )
        self.registry = Registry(self.cache, self, self.worker.state)
        self.backlog: dict[Peer, deque[list[Any]]] = {}
        self.started = time.time()
        self.stopping = False
        self._thread: threading.Thread | None = None
        self.received = 0

    def _configure_router(self) -> None:
        r = self.router
        r.setsockopt(zmq.ROUTER_MANDATORY, 1)
        r.setsockopt(zmq.SNDHWM, self.config.send_hwm)
        r.setsockopt(zmq.LINGER, 0)
        endpoint = bind_endpoint(self.config.bind)
        r.bind(endpoint)
        host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0]
        if endpoint.startswith("tcp://") and host not in LOOPBACK_HOSTS and self.auth is None:
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
            wake.send_multipart(encode("wake", {}))
            wake.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def serve_forever(self) -> None:
        """Run the loop until ``shutdown`` or :meth:`stop`; then close everything."""
        self.worker.start()
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
            timeout = 0 if pending else (20 if self.backlog else 500)
            ready = dict(poller.poll(timeout))
            if self.events in ready:
                self._drain_events()
            if self.router in ready:
                for _ in range(64):
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.handle(frames)
            self._flush_backlog()
            pending = self.registry.pump()

    def _drain_events(self) -> None:
        from server.handlers import on_worker_event

        while True:
            try:
                frames = self.events.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            msg = decode(frames, Limits(max_parts=8, max_part_bytes=2**40, max_total_bytes=2**41))
            if msg.type == "upload":  # the upload writer stored a batch (server/upload.py)
                from server.upload import on_done

                on_done(self, msg)
                continue
            if msg.type != "worker":
                continue
            try:
                on_worker_event(self, msg)
            except Exception:  # a bug: log it, keep serving
                log.exception("internal error on worker event %s", msg.body.get("kind"))

    # -- receiving ----------------------------------------------------------------------------
    def handle(self, frames: Sequence[Any]) -> None:
        """One ROUTER message: [identity, (empty delimiter), envelope, parts...]."""
        from server.handlers import HANDLERS

        self.received += 1
        req = len(frames) > 2 and len(frames[1]) == 0  # REQ: [identity, b"", envelope, ...]
        peer = Peer(bytes(frames[0].bytes if hasattr(frames[0], "bytes") else frames[0]), req)
        body_frames = frames[2:] if req else frames[1:]
        parent = None
        try:
            msg = decode(body_frames, self.config.limits)
            parent = msg.id
            handler = HANDLERS.get(msg.type)
            if handler is None:
                raise ProtocolError(
                    "unknown_type",
                    f"type {msg.type!r} is not a request; accepted: {', '.join(sorted(HANDLERS))}",
                    msg.id,
                )
            handler(self, peer, msg)
        except ProtocolError as exc:
            self.send(peer, "error", error_body(exc.code, exc.message), (), exc.parent or parent)
        except Exception as exc:  # a bug: say so, keep serving
            log.exception("internal error on a message from %s", peer.identity.hex())
            message = f"internal server error ({type(exc).__name__}: {exc}); the server goes on"
            self.send(peer, "error", error_body("internal", message), (), parent)

    # -- sending ------------------------------------------------------------------------------
    def reply(self, peer: Peer, msg: Message, body: dict[str, Any], parts: Sequence = ()) -> None:
        self.send(peer, f"{msg.type}_reply", body, parts, msg.id)

    def send(
        self, peer: Peer, type: str, body: dict[str, Any], parts: Sequence[Any], parent: Any
    ) -> None:
        """Queue or send without ever blocking; see the module docstring."""
        frames = [
            peer.identity,
            *((b"",) if peer.req else ()),
            *encode(type, body, parent=parent, parts=parts),
        ]
        queue = self.backlog.get(peer)
        if queue is not None:
            self._hold(peer, queue, frames)
            return
        self._try_send(peer, frames)

    def _try_send(self, peer: Peer, frames: list[Any]) -> bool:
        try:
            self.router.send_multipart(frames, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            self._hold(peer, self.backlog.setdefault(peer, deque()), frames)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._drop_peer(peer, "disconnected")
        return False

    def _hold(self, peer: Peer, queue: deque[list[Any]], frames: list[Any]) -> None:
        if len(queue) >= self.config.max_backlog:
            self._drop_peer(peer, f"more than {self.config.max_backlog} messages behind")
            return
        queue.append(frames)

    def _flush_backlog(self) -> None:
        for peer in list(self.backlog):
            queue = self.backlog.get(peer)
            while queue:
                try:
                    self.router.send_multipart(queue[0], zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                except zmq.ZMQError:
                    self._drop_peer(peer, "disconnected")
                    break
                queue.popleft()
            if peer in self.backlog and not self.backlog[peer]:
                del self.backlog[peer]

    def backlogged(self, peer: Peer) -> bool:
        return peer in self.backlog

    def _drop_peer(self, peer: Peer, why: str) -> None:
        log.info("dropping peer %s: %s", peer.identity.hex(), why)
        self.backlog.pop(peer, None)
        self.registry.drop_peer(peer)

    def info(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "uptime_s": time.time() - self.started,
            "address": self.address,
            "pid": os.getpid(),
            "queue": self.worker.snapshot(),
            "active_shots": len(self.registry.shots),
            "backlogged_peers": len(self.backlog),
            "messages_received": self.received,
        }

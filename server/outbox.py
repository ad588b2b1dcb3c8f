"""Sending without ever blocking, with each peer's unsent backlog bounded in bytes.

With ``ROUTER_MANDATORY`` a message to a vanished peer fails at once (the peer is dropped) and
a message to a peer whose ZeroMQ pipe is full (``SNDHWM`` messages) waits here. A peer whose
held messages pass ``max_messages`` or ``max_bytes`` is dropped as hopelessly slow: its backlog
is freed at once and its subscriptions and waits are forgotten. So a client that asks and never
reads costs the server at most ``SNDHWM`` messages in ZeroMQ plus ``max_bytes`` here.

A reply whose frames are still being read off the loop holds its place in the peer's queue as a
:class:`Slot` (:meth:`Outbox.reserve`; counted with its expected bytes) until :meth:`Outbox.fill`
puts the message in it; nothing behind it goes out before it, so each peer gets its messages in
the order they were made.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from server.protocol import encode
from server.registry import Peer

log = logging.getLogger("warpdiff.server")


def frames_bytes(frames: Sequence[Any]) -> int:
    """Bytes held by a multipart message (bytes, numpy arrays, memoryviews, zmq.Frames)."""
    total = 0
    for f in frames:
        n = getattr(f, "nbytes", None)
        total += int(n) if n is not None else len(f)
    return total


class Slot:
    """A place in a peer's queue for a message not made yet (its frames are being read)."""

    def __init__(self, peer: Peer, size: int) -> None:
        self.peer, self.size = peer, size
        self.frames: list[Any] | None = None
        self.dead = False  # the peer was dropped: nothing to read or send


class Outbox:
    """Per-peer backlogs over one ROUTER socket; only the socket loop thread uses it."""

    def __init__(
        self,
        router: zmq.Socket,
        on_drop: Callable[[Peer], None],
        max_messages: int = 4096,
        max_bytes: int = 256 * 2**20,
    ) -> None:
        self.router, self.on_drop = router, on_drop
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self.queues: dict[Peer, deque[tuple[list[Any] | Slot, int]]] = {}
        self.held: dict[Peer, int] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.queues)

    def bytes_held(self) -> int:
        return sum(self.held.values())

    def backlogged(self, peer: Peer) -> bool:
        return peer in self.queues

    def send(
        self, peer: Peer, type: str, body: dict[str, Any], parts: Sequence[Any], parent: Any
    ) -> None:
        frames = [
            peer.identity,
            *((b"",) if peer.req else ()),
            *encode(type, body, parent=parent, parts=parts),
        ]
        if peer in self.queues:
            self._hold(peer, frames)
            return
        try:
            self.router.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._hold(peer, frames)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.drop(peer, "disconnected")

    def reserve(self, peer: Peer, size: int) -> Slot | None:
        """Hold the peer's next place for a message of about ``size`` bytes made later (see
        :meth:`fill`); None when the peer is dropped for it (over its bound)."""
        slot = Slot(peer, size)
        queue = self.queues.get(peer)
        if queue and (
            len(queue) >= self.max_messages or self.held.get(peer, 0) + size > self.max_bytes
        ):  # a peer's first message is always taken, as when it goes straight to ZeroMQ
            self.drop(
                peer, f"more than {self.max_messages} messages or {self.max_bytes} bytes behind"
            )
            return None
        self.queues.setdefault(peer, deque()).append((slot, size))
        self.held[peer] = self.held.get(peer, 0) + size
        return slot

    def fill(
        self, slot: Slot, type: str, body: dict[str, Any], parts: Sequence[Any], parent: Any
    ) -> None:
        """Put the message in its reserved place and send what may go now."""
        if slot.dead:
            return
        peer = slot.peer
        slot.frames = [
            peer.identity,
            *((b"",) if peer.req else ()),
            *encode(type, body, parent=parent, parts=parts),
        ]
        size = frames_bytes(slot.frames)
        queue = self.queues[peer]
        for i, (item, held) in enumerate(queue):
            if item is slot:
                queue[i] = (slot, size)
                self.held[peer] += size - held
                break
        self.flush()

    def _hold(self, peer: Peer, frames: list[Any]) -> None:
        queue = self.queues.setdefault(peer, deque())
        size = frames_bytes(frames)
        held = self.held.get(peer, 0) + size
        if len(queue) >= self.max_messages or held > self.max_bytes:
            self.drop(
                peer, f"more than {self.max_messages} messages or {self.max_bytes} bytes behind"
            )
            return
        queue.append((frames, size))
        self.held[peer] = held

    def flush(self) -> None:
        """Send what the peers' pipes take now."""
        for peer in list(self.queues):
            queue = self.queues.get(peer)
            while queue:
                head = queue[0][0]
                if isinstance(head, Slot):
                    if head.frames is None:  # still being read: the rest waits behind it
                        break
                    head = head.frames
                try:
                    self.router.send_multipart(head, zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                except zmq.ZMQError:
                    self.drop(peer, "disconnected")
                    break
                _, size = queue.popleft()
                self.held[peer] -= size
            if peer in self.queues and not self.queues[peer]:
                del self.queues[peer]
                self.held.pop(peer, None)

    def drop(self, peer: Peer, why: str) -> None:
        """Free the peer's backlog and forget what it listens to."""
        log.info("dropping peer %s: %s", peer.identity.hex(), why)
        for item, _ in self.queues.pop(peer, ()):
            if isinstance(item, Slot):
                item.dead = True
        self.held.pop(peer, None)
        self.dropped += 1
        self.on_drop(peer)

"""Finished frames for replies: a small in-memory LRU, and reading the rest off the loop.

A ``get_frame``, ``fetch`` or a late subscriber's catch-up needs finished frames. Those still in
memory (:class:`FrameMemory`: the worker's latest frames and the recently served ones, bounded
in bytes) go out at once from the socket loop. Any other is read from the cache, and converted
to the asked dtype, on the reader thread (an :class:`server.intake.Intake`), never on the loop:
the reply keeps its place in the peer's queue meanwhile (:meth:`server.outbox.Outbox.reserve`),
so each client still gets its replies in the order it asked, and the bytes being read count
against the peer's backlog bound.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.cache import ShotCache
from server.protocol import DTYPES, array_part, from_float

DEFAULT_MEMORY_BYTES = 64 * 2**20  # two 1080p float32 RGB frames


class FrameMemory:
    """Finished float32 frames by (shot key, index), least recently used dropped first, at most
    ``max_bytes`` held. Thread safe (the loop and the reader thread share it); the arrays are
    read-only."""

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._frames: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, key: str, index: int) -> np.ndarray | None:
        with self._lock:
            frame = self._frames.get((key, index))
            if frame is None:
                self.misses += 1
                return None
            self._frames.move_to_end((key, index))
            self.hits += 1
            return frame

    def put(self, key: str, index: int, frame: np.ndarray) -> None:
        """Keep ``frame`` (not copied: the caller never writes to it again)."""
        if frame.dtype != np.float32 or frame.nbytes > self.max_bytes:
            return
        if frame.flags.writeable:
            frame = frame.view()
            frame.flags.writeable = False
        with self._lock:
            old = self._frames.pop((key, index), None)
            if old is not None:
                self.bytes -= old.nbytes
            self._frames[(key, index)] = frame
            self.bytes += frame.nbytes
            while self.bytes > self.max_bytes:
                _, dropped = self._frames.popitem(last=False)
                self.bytes -= dropped.nbytes

    def forget(self, key: str) -> None:
        """Drop every frame of shot ``key`` (it left the cache)."""
        with self._lock:
            for k in [k for k in self._frames if k[0] == key]:
                self.bytes -= self._frames.pop(k).nbytes


@dataclass(frozen=True)
class Loaded:
    """A frame ready to send: its index, descriptor (``part`` 0) and buffer."""

    index: int
    desc: dict[str, Any]
    buf: np.ndarray


def from_memory(memory: FrameMemory, key: str, index: int, dtype: str) -> Loaded | None:
    """The frame as a float32 part when it is in memory (no conversion: loop-safe), else None."""
    if dtype != "float32":
        return None
    frame = memory.get(key, index)
    if frame is None:
        return None
    desc, buf = array_part(frame, 0)
    return Loaded(index, desc, buf)


def load(
    cache: ShotCache,
    memory: FrameMemory,
    key: str,
    indices: Sequence[int],
    dtype: str,
    max_bytes: int | None = None,
) -> list[Loaded]:
    """On the reader thread: frames ``indices`` of shot ``key`` in ``dtype``, from memory or
    the cache (read ones are kept in memory); stops once ``max_bytes`` are loaded (at least one
    frame)."""
    out: list[Loaded] = []
    held = 0
    for i in indices:
        frame = memory.get(key, i)
        if frame is None:
            frame = cache.read_frame(key, i)
            memory.put(key, i, frame)
        desc, buf = array_part(from_float(frame, dtype), 0)
        out.append(Loaded(i, desc, buf))
        held += buf.nbytes
        if max_bytes is not None and held >= max_bytes:
            break
    return out


def frame_bytes(height: int, width: int, scale: int, dtype: str, n: int = 1) -> int:
    """Expected bytes of ``n`` output frames (RGB) of a ``height`` x ``width`` shot."""
    return n * height * scale * width * scale * 3 * DTYPES[dtype].itemsize

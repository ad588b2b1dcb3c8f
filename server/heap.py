"""The server's glibc heap: freed frames are kept for reuse while busy, given back when idle.

Every 1080p RGBA float frame that arrives is a fresh 33 MB ZeroMQ message, allocated on
ZeroMQ's I/O thread. glibc's defaults put it in a fresh mapping (a per-thread arena's heap
holds at most 64 MiB, so one frame per heap, and a freed heap is unmapped) and every page of
it faults in again: ~8,100 page faults per frame, which on a VM that takes freed memory back
(free page reporting) made receiving a frame cost more than writing it to disk. So:

- :func:`keep_freed_frames` puts every allocation up to 32 MiB (glibc's largest threshold) in
  one arena (``M_ARENA_MAX`` 1: the main heap grows as far as needed) and stops glibc from
  trimming it on each free: the next frame reuses the pages the last one freed.
- :class:`IdleTrim` gives the kept memory back (``malloc_trim(0)``) once the server has been
  idle for a poll timeout after it received at least :data:`TRIM_AFTER_BYTES` or the worker
  made frames, so the resident memory comes back to its baseline after a burst, as it did
  when every large buffer was its own mapping.

Elsewhere (macOS, Windows, musl) both do nothing: the system allocator decides.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("warpdiff.server")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: a 1080p RGBA float frame (33.2 MB) fits under it
TRIM_THRESHOLD = 2**30  # never trimmed on free(); IdleTrim trims
TRIM_AFTER_BYTES = 8 * 2**20  # received since the last trim: worth a malloc_trim when idle


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc (musl names its libc otherwise)
        return None


def keep_freed_frames() -> bool:
    """Set glibc's policy (see the module). Returns whether it was set (glibc only)."""
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok &= libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    ok &= libc.mallopt(M_ARENA_MAX, 1) == 1
    if not ok:
        log.debug("glibc refused a malloc option; the allocator keeps its defaults")
    return ok


class IdleTrim:
    """Counts the bytes received and notes the worker's work; :meth:`idle` trims the heap
    when enough came in, or the worker made frames, since the last trim. Call :meth:`idle`
    when a poll timed out with nothing to do (loop thread)."""

    def __init__(self, after_bytes: int = TRIM_AFTER_BYTES) -> None:
        self.after_bytes = after_bytes
        self.pending = 0  # bytes received since the last trim
        self.worked = False  # the worker reported since the last trim (its buffers were freed)
        self.trims = 0
        self._libc = _glibc()

    def received(self, nbytes: int) -> None:
        self.pending += nbytes

    def worker_reported(self) -> None:
        self.worked = True

    def idle(self) -> bool:
        """Trim if due; returns whether it trimmed."""
        if self.pending < self.after_bytes and not self.worked:
            return False
        self.pending, self.worked = 0, False
        self.trims += 1
        if self._libc is not None:
            self._libc.malloc_trim(0)
        return True

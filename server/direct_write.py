""".npy files written with ``O_DIRECT``: uploaded frames reach the disk without the page cache.

Writing a 33 MB frame with ``np.save`` grows the page cache by 33 MB. On a VM that backs guest
memory lazily and takes back freed memory (free page reporting, as on our build machines), the
kernel hands the page cache memory the host has to fault in again: 73-200 ms per 1080p RGBA
float frame (~350 MB/s), 90% of an upload's intake time, against ~30-50 ms for the same bytes
written with ``O_DIRECT``. The page cache would not keep a long shot anyway (500 frames are
16 GB), and the worker reads a frame once.

:func:`save_npy` copies the header and the array through one page-aligned buffer per thread
(:data:`CHUNK` bytes, reused for every file: its memory stays in this process), writes whole
blocks with ``O_DIRECT`` at their offsets and truncates the file to its exact length. A file
of :data:`SPLIT_BYTES` or more is written as two halves at once, by the calling thread and a
helper (each with its own buffer); ``save_npy`` returns when both are written. The file is
an ordinary ``.npy`` (``np.load`` reads it). Where ``O_DIRECT`` is refused (tmpfs, some network file
systems) it falls back to ``np.save``.
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CHUNK = 16 * 2**20  # bytes per O_DIRECT write (and of each thread's aligned buffer)
BLOCK = 4096  # O_DIRECT offsets and lengths are multiples of this (any block size up to it)
O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux only
SPLIT_BYTES = 4 * 2**20  # a file this large is written in two halves at once (two threads)
_local = threading.local()
# The second half's writer. A disk takes two O_DIRECT writes at once faster than one after the
# other (measured: 33 MB in ~21 ms per file with two streams, ~28 ms with one), and the copies
# into the two aligned buffers run on both cores.
_helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warpdiff-write")


def npy_header(array: np.ndarray) -> bytes:
    """The .npy header ``np.save`` writes for ``array`` (format 1.0, padded to 64 bytes)."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, np.lib.format.header_data_from_array_1_0(array))
    return out.getvalue()


def _buffer() -> memoryview:
    buf = getattr(_local, "buffer", None)
    if buf is None:
        buf = _local.buffer = mmap.mmap(-1, CHUNK)  # page-aligned; kept for the thread
    return memoryview(buf)


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as .npy, bypassing the page cache where the disk allows.

    Raises ``OSError`` (``ENOSPC`` on a full disk, as ``np.save`` would)."""
    array = np.ascontiguousarray(array)
    if not O_DIRECT:
        _buffered(path, array)  # macOS and Windows have no O_DIRECT
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_DIRECT, 0o644)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        _buffered(path, array)  # no O_DIRECT on this file system
        return
    try:
        _write_direct(fd, npy_header(array), memoryview(array.reshape(-1).view(np.uint8)))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        os.close(fd)
        fd = -1
        _buffered(path, array)  # alignment refused
    finally:
        if fd >= 0:
            os.close(fd)


def _buffered(path: str | os.PathLike[str], array: np.ndarray) -> None:
    np.save(Path(path), array, allow_pickle=False)


def _write_direct(fd: int, header: bytes, data: memoryview) -> None:
    """The file ``header + data``: in two halves written at once (the calling thread and the
    helper) when it is at least :data:`SPLIT_BYTES`, else by this thread alone."""
    total = len(header) + len(data)
    split = total // 2 // BLOCK * BLOCK if total >= SPLIT_BYTES else total
    if split < total:
        second = _helper.submit(_write_range, fd, header, data, split, total)
        try:
            _write_range(fd, header, data, 0, split)
        finally:
            second.result()  # its error (ENOSPC, EINVAL) raised after both stopped
    else:
        _write_range(fd, header, data, 0, total)
    if -(-total // BLOCK) * BLOCK != total:
        os.ftruncate(fd, total)  # the last block was padded


def _write_range(fd: int, header: bytes, data: memoryview, start: int, end: int) -> None:
    """File bytes [start, end) of ``header + data`` through this thread's aligned buffer, in
    whole blocks at their offsets (``start`` is a multiple of :data:`BLOCK`; a tail that ends
    the file is padded to a block and truncated by the caller)."""
    buf = _buffer()
    hlen = len(header)
    pos = start
    while pos < end:
        take = min(CHUNK, end - pos)
        fill = 0
        if pos < hlen:  # the header, then the data
            head = min(hlen - pos, take)
            buf[:head] = header[pos : pos + head]
            fill = head
        lo = pos + fill - hlen
        buf[fill:take] = data[lo : lo + take - fill]
        size = -(-take // BLOCK) * BLOCK
        if size > take:
            buf[take:size] = bytes(size - take)
        done = os.pwrite(fd, buf[:size], pos)
        if done != size:
            raise OSError(errno.ENOSPC, f"short write ({done} of {size} bytes)")
        pos += take

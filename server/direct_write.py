""".npy files written with ``O_DIRECT``: uploaded frames reach the disk without the page cache.

Writing a 33 MB frame with ``np.save`` grows the page cache by 33 MB. On a VM that backs guest
memory lazily and takes back freed memory (free page reporting, as on our build machines), the
kernel hands the page cache memory the host has to fault in again: 73-200 ms per 1080p RGBA
float frame (~350 MB/s), 90% of an upload's intake time, against ~30-50 ms for the same bytes
written with ``O_DIRECT``. The page cache would not keep a long shot anyway (500 frames are
16 GB), and the worker reads a frame once.

:func:`save_npy` copies the header and the array through one page-aligned buffer per thread
(:data:`CHUNK` bytes, reused for every file: its memory stays in this process), writes whole
blocks with ``O_DIRECT`` and truncates the file to its exact length. The file is an ordinary
``.npy`` (``np.load`` reads it). Where ``O_DIRECT`` is refused (tmpfs, some network file
systems) it falls back to ``np.save``.
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import threading
from pathlib import Path

import numpy as np

CHUNK = 16 * 2**20  # bytes per O_DIRECT write (and of each thread's aligned buffer)
BLOCK = 4096  # O_DIRECT offsets and lengths are multiples of this (any block size up to it)
O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux only
_local = threading.local()


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
    buf = _buffer()
    total = len(header) + len(data)
    buf[: len(header)] = header
    fill, pos, written = len(header), 0, 0
    while True:
        take = min(CHUNK - fill, len(data) - pos)
        buf[fill : fill + take] = data[pos : pos + take]
        fill, pos = fill + take, pos + take
        if fill < CHUNK and pos < len(data):
            continue
        size = -(-fill // BLOCK) * BLOCK  # the last block padded; truncated below
        if size > fill:
            buf[fill:size] = bytes(size - fill)
        done = os.write(fd, buf[:size])
        if done != size:
            raise OSError(errno.ENOSPC, f"short write ({done} of {size} bytes)")
        written += size
        fill = 0
        if pos == len(data):
            break
    if written != total:
        os.ftruncate(fd, total)

"""Content hashes of shots: BLAKE3 (cryptographic, SIMD; the ``blake3`` package), 128 bits.

A shot's key is the hash of its parameters and input bytes, so a client must not be able to
make two different shots share a key: a cryptographic hash, not a checksum. BLAKE3 hashes a
1080p RGBA float frame several times faster than ``hashlib.blake2b`` and releases the GIL, so
:func:`hash_while` hashes an array on a helper thread while the caller writes it to disk.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from blake3 import blake3

DIGEST_BYTES = 16  # keys are 32 hex characters
_helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warpdiff-hash")


def new_hash(prefix: bytes = b"") -> Any:
    """A fresh BLAKE3 hasher, fed ``prefix`` (:func:`hex_key` gives its 128-bit key)."""
    return blake3(prefix)


def hex_key(h: Any) -> str:
    return h.hexdigest(length=DIGEST_BYTES)


def digest(h: Any) -> bytes:
    return h.digest(length=DIGEST_BYTES)


def update_array(h: Any, array: np.ndarray) -> None:
    """Feed the array's dtype, shape and bytes (no copy when it is contiguous)."""
    h.update(f"|{array.dtype.str}{array.shape}|".encode())
    h.update(memoryview(np.ascontiguousarray(array)).cast("B"))


def hash_while(h: Any, array: np.ndarray, write: Callable[[], None]) -> None:
    """``update_array(h, array)`` on the helper thread while ``write()`` runs on this one."""
    hashing = _helper.submit(update_array, h, array)
    try:
        write()
    finally:
        hashing.result()

"""The on-disk shot cache: inputs, finished frames and resume state, one folder per shot.

Layout under the cache root::

    <key>/meta.json                 the shot: request, frame count and size, mask mode, sources
    <key>/inputs/f00000.npy ...     input frames as received (dtype kept); masks as m00000.npy
    <key>/frames/00000.npy ...      finished output frames, float32 (H, W, 3)
    <key>/state.safetensors         the restorer's state_dict after the last finished frame;
                                    its metadata ``next`` is the first frame not yet finished

Every file is written to a temporary name and renamed (atomic on POSIX), and a shot folder is
built under a temporary name and renamed into place, so a server killed with ``kill -9`` leaves
only whole files. A frame is written before the state that counts it, so ``next`` never points
past a frame that is missing. No fsync: this survives a killed process, not a power cut.

Size: the cache holds at most ``max_bytes``. Before a write that would pass it, the least
recently used shots that are not ``busy`` (no job, no listener) are removed; if that cannot
make room, or the disk itself is full, the write raises :class:`CacheFull` (an error for that
shot; nothing else is touched). ``<key>/error.json`` keeps why a shot failed until it is
submitted again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from server.direct_write import save_npy

META = "meta.json"
STATE = "state.safetensors"
ERROR = "error.json"
DEFAULT_FREE_FRACTION = 0.5  # default limit: this share of the disk's free space (+ held)

log = logging.getLogger("warpdiff.server")


class CacheFull(Exception):
    """No room for a write: the cache's size limit (every other shot busy) or a full disk."""


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if it is gone), each file (inode) counted once, as
    ``du`` does: a file renamed into a folder not walked yet while this walks (a temporary
    renamed into place, a shot folder renamed from its temporary name) is seen twice, and
    counting it twice reported a cache over its limit that never was."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class ShotMeta:
    """What a shot is; enough to resume it after a restart."""

    key: str
    request: dict[str, Any]
    n_frames: int
    height: int
    width: int
    mask_mode: str  # "none" (upscale), "masks" (separate mattes) or "alpha" (frames' alpha)
    source: str  # "parts" (inputs stored in the cache) or "paths" (files on this machine)
    paths: dict[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShotMeta:
        return cls(**data)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file in the same folder, then rename over ``path``."""
    tmp = _tmp_name(path)
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def _meta_text(meta: ShotMeta) -> str:
    return json.dumps(meta.to_json(), indent=1, sort_keys=True)


def save_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = _tmp_name(path)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


class ShotCache:
    """Per-shot folders under ``root``. Safe for one writer (the worker) and many readers."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        max_bytes: int | None = None,
        busy: Callable[[str], bool] = lambda key: False,
    ) -> None:
        """``max_bytes`` None: :data:`DEFAULT_FREE_FRACTION` of the free disk plus what the
        cache holds now. ``busy(key)``: True for shots that must not be evicted."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        self.busy = busy
        self._lock = threading.Lock()
        self.used = tree_bytes(self.root)
        if max_bytes is None:
            free = shutil.disk_usage(self.root).free
            max_bytes = self.used + int(DEFAULT_FREE_FRACTION * free)
        self.max_bytes = max_bytes
        self.peak = self.used
        self.reserved = 0  # bytes being written now (counted against the limit)
        # Most bytes ever held (stored + reserved for writes under way): an upper bound of the
        # disk the cache used at any instant, since every write reserves before it starts.
        self.held_peak = self.used
        self.evicted = 0
        # When a client last used each shot (submit, fetch, get_frame, subscribe): eviction
        # order. The worker's own writes are not "use". Shots from before a restart fall back
        # to their folder's modification time.
        self._used_at: dict[str, float] = {}

    # -- size ---------------------------------------------------------------------------------
    def _make_room(self, nbytes: int, keep: str) -> None:
        """Evict least recently used idle shots (never ``keep``) until ``nbytes`` fit, and
        reserve them (two threads writing at once never both take the last free bytes);
        :meth:`_grew` releases the reservation."""
        with self._lock:
            self._reserve_locked(nbytes, keep)
            self.reserved += nbytes
            self.held_peak = max(self.held_peak, self.used + self.reserved)

    def _reserve_locked(self, nbytes: int, keep: str) -> None:
        nbytes += self.reserved
        if self.used + nbytes <= self.max_bytes:
            return
        candidates = []
        for key in self.list_keys():
            if key == keep or self.busy(key):
                continue
            try:
                used_at = self._used_at.get(key) or os.stat(self.root / key).st_mtime
            except OSError:
                continue
            candidates.append((used_at, key))
        for _, key in sorted(candidates):
            if self.used + nbytes <= self.max_bytes:
                break
            self._remove_locked(key)
            self.evicted += 1
            log.info("cache over its limit: evicted shot %s", key)
        if self.used + nbytes > self.max_bytes:
            raise CacheFull(
                f"the server's shot cache is full ({self.used} of {self.max_bytes} bytes "
                f"held by shots in use; {nbytes} more needed); retry when a shot finishes, "
                "or ask the operator to raise --cache-max-gb"
            )

    def _grew(self, nbytes: int, reserved: int) -> None:
        with self._lock:
            self.used += nbytes
            self.reserved -= reserved
            self.peak = max(self.peak, self.used)
            self.held_peak = max(self.held_peak, self.used + self.reserved)

    def touch(self, key: str) -> None:
        """Mark a shot as just used (least-recently-used eviction goes by this)."""
        self._used_at[key] = time.time()
        with contextlib.suppress(OSError, ValueError):
            os.utime(self.folder(key))

    def _write(self, key: str, path: Path, nbytes: int, write: Callable[[Path], None]) -> None:
        """Room for ``nbytes``, then ``write(tmp)`` and rename over ``path``; counted."""
        self._make_room(nbytes, key)
        old = path.stat().st_size if path.is_file() else 0
        tmp = _tmp_name(path)
        with self._undo_on_failure(nbytes, lambda: tmp.unlink(missing_ok=True)):
            write(tmp)
            size = tmp.stat().st_size
            os.replace(tmp, path)
        self._grew(size - old, nbytes)

    @contextlib.contextmanager
    def _undo_on_failure(self, reserved: int, clean: Callable[[], None]) -> Iterator[None]:
        """On any failure inside: ``clean()`` the temporary, give the reservation back, and
        turn a full disk into :class:`CacheFull` (the shot fails, the server goes on)."""
        try:
            yield
        except BaseException as exc:
            clean()
            self._grew(0, reserved)
            if isinstance(exc, OSError) and _disk_full(exc):
                raise CacheFull(
                    "the server's disk is full; free space on it or lower --cache-max-gb"
                ) from None
            raise

    def _remove_leftovers(self) -> None:
        """Temporary files and folders of a killed server are never renamed into place."""
        for path in self.root.glob(".*.tmp"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob("*/**/.*.tmp"):
            path.unlink(missing_ok=True)

    def folder(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"shot key: expected hex characters, got {key!r}")
        return self.root / key

    def exists(self, key: str) -> bool:
        return key.isalnum() and (self.root / key / META).is_file()

    def list_keys(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob(f"*/{META}"))

    def create(
        self,
        meta: ShotMeta,
        frames: Sequence[np.ndarray] = (),
        masks: Sequence[np.ndarray] = (),
    ) -> bool:
        """Store a new shot's meta and inputs atomically; False if the shot is already there.

        Raises :class:`CacheFull` (nothing left behind) when there is no room."""
        final = self.folder(meta.key)
        if self.exists(meta.key):
            self.touch(meta.key)
            return False
        meta_text = _meta_text(meta)  # its real size is reserved: a long prompt is ~50 KB
        nbytes = sum(a.nbytes + 128 for a in (*frames, *masks)) + len(meta_text.encode())
        self._make_room(nbytes, meta.key)
        tmp = _tmp_name(final)
        with self._undo_on_failure(nbytes, lambda: shutil.rmtree(tmp, ignore_errors=True)):
            (tmp / "inputs").mkdir(parents=True)
            (tmp / "frames").mkdir()
            for i, frame in enumerate(frames):
                save_npy(tmp / "inputs" / f"f{i:05d}.npy", frame)
            for i, mask in enumerate(masks):
                save_npy(tmp / "inputs" / f"m{i:05d}.npy", mask)
            (tmp / META).write_text(meta_text)
            size = tree_bytes(tmp)
            try:
                os.rename(tmp, final)
            except OSError:  # a leftover folder without meta.json, or a concurrent create
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
        self._grew(size, nbytes)
        self._used_at[meta.key] = time.time()
        return True

    def reserve(self, nbytes: int) -> None:
        """Room for ``nbytes`` more (idle shots evicted), reserved until :meth:`adopt` or
        :meth:`release`; :class:`CacheFull` when there is none."""
        self._make_room(nbytes, "")

    def release(self, reserved: int) -> None:
        """Give back a reservation that was not used (an upload dropped)."""
        self._grew(0, reserved)

    def adopt(self, folder: Path, meta: ShotMeta, reserved: int) -> bool:
        """A shot folder built under the root (``inputs/``, ``frames/``; a chunked upload) with
        ``reserved`` bytes reserved for it: its meta is written and it is renamed into place,
        counted. False (and the folder removed) when the shot is already there."""
        if self.exists(meta.key):
            shutil.rmtree(folder, ignore_errors=True)
            self.touch(meta.key)
            self._grew(0, reserved)
            return False
        meta_text = _meta_text(meta)
        try:  # the meta file is counted like the frames: room for it first
            self._make_room(len(meta_text.encode()), meta.key)
        except BaseException:
            self._grew(0, reserved)
            raise
        reserved += len(meta_text.encode())
        try:
            (folder / META).write_text(meta_text)
            size = tree_bytes(folder)
            final = self.folder(meta.key)
            shutil.rmtree(final, ignore_errors=True)  # a leftover folder without meta.json
            os.rename(folder, final)
        except BaseException:
            self._grew(0, reserved)
            raise
        self._grew(size, reserved)
        self._used_at[meta.key] = time.time()
        return True

    def meta(self, key: str) -> ShotMeta:
        return ShotMeta.from_json(json.loads((self.folder(key) / META).read_text()))

    def input_frame(self, key: str, index: int) -> np.ndarray:
        return np.load(self.folder(key) / "inputs" / f"f{index:05d}.npy", allow_pickle=False)

    def input_mask(self, key: str, index: int) -> np.ndarray:
        return np.load(self.folder(key) / "inputs" / f"m{index:05d}.npy", allow_pickle=False)

    def frame_path(self, key: str, index: int) -> Path:
        return self.folder(key) / "frames" / f"{index:05d}.npy"

    def write_frame(self, key: str, index: int, frame: np.ndarray) -> None:
        array = np.ascontiguousarray(frame, dtype=np.float32)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)

        self._write(key, self.frame_path(key, index), array.nbytes + 128, save)

    def read_frame(self, key: str, index: int) -> np.ndarray:
        """A finished frame, float32 (H, W, 3)."""
        return np.load(self.frame_path(key, index), allow_pickle=False)

    def write_state(self, key: str, next_index: int, state: dict[str, Any]) -> None:
        """The restorer's state after frame ``next_index - 1`` (safetensors, atomic)."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        nbytes = sum(t.numel() * t.element_size() + 256 for t in tensors.values()) + 4096

        def save(tmp: Path) -> None:
            save_file(tensors, str(tmp), metadata={"next": str(next_index)})

        self._write(key, self.folder(key) / STATE, nbytes, save)

    def load_state(self, key: str) -> tuple[int, dict[str, Any]]:
        """(next frame index, state_dict) of the last finished frame; (0, {}) if none."""
        from safetensors import safe_open

        path = self.folder(key) / STATE
        if not path.is_file():
            return 0, {}
        with safe_open(str(path), framework="pt") as f:
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
            next_index = int((f.metadata() or {}).get("next", "0"))
        return next_index, state

    def done(self, key: str) -> int:
        """How many frames are finished, in order (0 .. done-1 can be served)."""
        path = self.folder(key) / STATE
        if not path.is_file():
            return 0
        with open(path, "rb") as f:  # the safetensors header: 8-byte length, then JSON
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        next_index = int(header.get("__metadata__", {}).get("next", "0"))
        done = 0
        while done < next_index and self.frame_path(key, done).is_file():
            done += 1
        return done

    def remove(self, key: str) -> None:
        with self._lock:
            self._remove_locked(key)

    def _remove_locked(self, key: str) -> None:
        self._used_at.pop(key, None)
        folder = self.folder(key)
        size = tree_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        self.used -= size - tree_bytes(folder)

    # -- why a shot failed --------------------------------------------------------------------
    def write_error(self, key: str, message: str) -> None:
        """Keep why the shot failed (until :meth:`clear_error`, on a new submit)."""
        data = json.dumps({"state": "error", "message": message}, indent=1, sort_keys=True)

        def save(tmp: Path) -> None:
            tmp.write_text(data)

        try:  # counted like every other file (eviction subtracts it: uncounted, it drifted)
            self._write(key, self.folder(key) / ERROR, len(data.encode()) + 64, save)
        except (OSError, CacheFull):
            log.warning("could not keep the error of shot %s", key)

    def error(self, key: str) -> str | None:
        """The message of the shot's last failure, or None."""
        try:
            return str(json.loads((self.folder(key) / ERROR).read_text())["message"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def clear_error(self, key: str) -> None:
        path = self.folder(key) / ERROR
        with self._lock:
            try:
                size = path.stat().st_size
                path.unlink()
            except OSError:
                return
            self.used -= size

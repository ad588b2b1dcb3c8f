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
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

META = "meta.json"
STATE = "state.safetensors"


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


def save_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = _tmp_name(path)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


class ShotCache:
    """Per-shot folders under ``root``. Safe for one writer (the worker) and many readers."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()

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
    ) -> None:
        """Store a new shot's meta and inputs atomically (no-op if the shot is already there)."""
        final = self.folder(meta.key)
        if self.exists(meta.key):
            return
        tmp = _tmp_name(final)
        (tmp / "inputs").mkdir(parents=True)
        (tmp / "frames").mkdir()
        for i, frame in enumerate(frames):
            np.save(tmp / "inputs" / f"f{i:05d}.npy", frame, allow_pickle=False)
        for i, mask in enumerate(masks):
            np.save(tmp / "inputs" / f"m{i:05d}.npy", mask, allow_pickle=False)
        (tmp / META).write_text(json.dumps(meta.to_json(), indent=1, sort_keys=True))
        try:
            os.rename(tmp, final)
        except OSError:  # a leftover folder without meta.json, or a concurrent create
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)

    def meta(self, key: str) -> ShotMeta:
        return ShotMeta.from_json(json.loads((self.folder(key) / META).read_text()))

    def input_frame(self, key: str, index: int) -> np.ndarray:
        return np.load(self.folder(key) / "inputs" / f"f{index:05d}.npy", allow_pickle=False)

    def input_mask(self, key: str, index: int) -> np.ndarray:
        return np.load(self.folder(key) / "inputs" / f"m{index:05d}.npy", allow_pickle=False)

    def frame_path(self, key: str, index: int) -> Path:
        return self.folder(key) / "frames" / f"{index:05d}.npy"

    def write_frame(self, key: str, index: int, frame: np.ndarray) -> None:
        save_npy_atomic(self.frame_path(key, index), np.asarray(frame, dtype=np.float32))

    def read_frame(self, key: str, index: int) -> np.ndarray:
        """A finished frame, float32 (H, W, 3)."""
        return np.load(self.frame_path(key, index), allow_pickle=False)

    def write_state(self, key: str, next_index: int, state: dict[str, Any]) -> None:
        """The restorer's state after frame ``next_index - 1`` (safetensors, atomic)."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        path = self.folder(key) / STATE
        tmp = _tmp_name(path)
        save_file(tensors, str(tmp), metadata={"next": str(next_index)})
        os.replace(tmp, path)

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
        shutil.rmtree(self.folder(key), ignore_errors=True)

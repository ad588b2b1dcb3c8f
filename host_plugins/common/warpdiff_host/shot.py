"""A shot as hosts describe it: the task, its parameters, the frames or paths, the numbering."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warpdiff_host.errors import HostError

TASKS = {"inpaint": "remove object", "upscale": "upscale"}
LABEL_KEYS = ("steps", "strength", "seed", "guidance", "propagate", "scale", "model")
_UNSAFE = re.compile(r"[^\w.-]+", re.UNICODE)


@dataclass
class ShotJob:
    """What to send: ``frames`` (H, W, 3|4 floats) or server-side ``paths``; mattes or 'alpha'.

    ``params`` are ``RestoreRequest`` fields (``steps``, ``seed``, ``strength``, ...; the server
    validates them and names what it accepts). ``first`` is the host's number of the first
    frame: the result's files and the host's node or clip use the same numbers.
    """

    task: str
    name: str
    first: int
    n_frames: int
    params: dict[str, Any] = field(default_factory=dict)
    frames: Sequence[np.ndarray] = ()
    masks: Sequence[np.ndarray] | str | None = None
    paths: dict[str, str | None] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise HostError(f"task: got {self.task!r}; accepted: {', '.join(TASKS)}")
        if "task" in self.params or "device" in self.params:
            raise HostError("params: 'task' and 'device' are set by the host and the server")
        if self.n_frames < 1:
            raise HostError(f"frame range: {self.n_frames} frames; expected at least one")
        if self.paths is None and len(self.frames) != self.n_frames:
            raise HostError(f"frames: got {len(self.frames)} frames for {self.n_frames}")
        matte_file = self.paths is not None and self.paths.get("masks")
        if self.task == "inpaint" and self.masks is None and not matte_file:
            raise HostError("matte: removing an object needs a matte (or the source's alpha)")
        if self.task == "upscale" and self.masks is not None:
            raise HostError("matte: upscaling takes no matte")

    @property
    def last(self) -> int:
        return self.first + self.n_frames - 1

    def request(self) -> dict[str, Any]:
        return {"task": self.task, **self.params}

    def to_shot(self) -> Any:
        from server.client import Shot

        return Shot(self.request(), frames=self.frames, masks=self.masks, paths=self.paths)

    def label(self) -> str:
        """``remove object`` and the parameters that were set, one line each, for a node label."""
        lines = [TASKS[self.task]]
        lines += [f"{k} {self.params[k]}" for k in LABEL_KEYS if self.params.get(k) is not None]
        lines += [
            f"{k} {v}" for k, v in sorted(self.params.items()) if k not in LABEL_KEYS and v != ""
        ]
        return "\n".join(lines)


def check_mattes(mattes: Sequence[np.ndarray], what: str) -> None:
    """Mattes (1 = remove) must cover something somewhere and never the whole frame."""
    if not any(float(np.max(m)) >= 0.5 for m in mattes):
        raise HostError(f"{what}: the matte is empty in every frame: nothing to remove")
    for i, m in enumerate(mattes):
        if float(np.min(m)) >= 0.5:
            raise HostError(f"{what}: the matte covers all of frame {i}: nothing is left to use")


def safe_name(name: str) -> str:
    """A file-name-safe version of a host name (letters of any script are kept)."""
    return _UNSAFE.sub("_", name).strip("_.") or "shot"


def link_frames(files: Sequence[Path], folder: Path) -> Path:
    """A folder holding exactly ``files`` in order (symlinks, else hard links, else copies).

    The server reads a folder's frames in name order; this hands it a frame range of a longer
    sequence without copying pixels.
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, src in enumerate(files):
        src = Path(src).resolve()
        if not src.is_file():
            raise HostError(f"{src}: frame {i} of the range is missing")
        dst = folder / f"frame_{i:06d}{src.suffix.lower()}"
        for make in (os.symlink, os.link, shutil.copyfile):
            try:
                make(src, dst)
                break
            except OSError:
                continue
    return folder


def input_links(out_root: Path) -> Path:
    """A fresh folder for one shot's links, under ``out_root/.inputs``."""
    import uuid

    return out_root / ".inputs" / uuid.uuid4().hex[:12]


def remove_links(folder: Path) -> None:
    """Remove a shot's link folder, and ``.inputs`` with it when nothing else is left there."""
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    if parent.name == ".inputs":
        with contextlib.suppress(OSError):  # another shot's links are still there
            parent.rmdir()

"""The manifest: every file, folder and user-file edit the installer made, and how to undo it.

:class:`Writer` is the only way steps touch the disk. It skips writes that would change nothing
(so a second install writes nothing), records the prior contents of a file the first time it is
touched (so uninstall restores it byte for byte), records every folder it had to create, and in
dry-run mode only says what it would do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


@dataclass
class Manifest:
    """What an install wrote. ``entries`` are in the order they were made; ``config`` holds the
    server settings (environment, model, address, cache) that ``doctor`` checks."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest at ``path``; an empty one when there is none."""
        data = read_bytes(path)
        if data is None:
            return cls(path)
        try:
            raw = json.loads(data)
            if raw.get("version") != VERSION:
                raise ValueError(f"version {raw.get('version')!r}, expected {VERSION}")
            return cls(path, list(raw["entries"]), dict(raw.get("config", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"manifest {path} is unreadable ({exc}); move it away and install again"
            ) from None

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def to_bytes(self) -> bytes:
        body = {"version": VERSION, "config": self.config, "entries": self.entries}
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()

    def find(self, path: Path, kind: str | None = None) -> dict[str, Any] | None:
        for entry in self.entries:
            if entry.get("path") == str(path) and (kind is None or entry["kind"] == kind):
                return entry
        return None

    def owns(self, path: Path) -> bool:
        return self.find(path) is not None


class Writer:
    """Writes files for the steps, records them in ``manifest``, or (dry run) only reports."""

    def __init__(self, manifest: Manifest, dry_run: bool, say: Callable[[str], None]) -> None:
        self.manifest, self.dry_run, self.say = manifest, dry_run, say
        self.changed: list[str] = []

    def _note(self, what: str) -> None:
        self.changed.append(what)
        self.say(("would " if self.dry_run else "") + what)

    def ensure_dir(self, path: Path) -> None:
        """Create ``path`` and missing parents, recording each folder created."""
        missing = []
        probe = path
        while not probe.exists():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        for folder in reversed(missing):
            self._note(f"create folder {folder}")
            if not self.dry_run:
                folder.mkdir()
                if not self.manifest.owns(folder):  # made again after someone deleted it
                    self.manifest.entries.append({"kind": "dir", "path": str(folder)})

    def write_file(
        self, path: Path, data: bytes, mode: int | None = None, kind: str = "file"
    ) -> bool:
        """Write ``data`` unless the file holds it already; True when something changed."""
        current = read_bytes(path)
        if current == data and (mode is None or (path.stat().st_mode & 0o777) == mode):
            return False
        self.ensure_dir(path.parent)
        self._note(f"{'write' if current is None else 'update'} {path}")
        if self.dry_run:
            return True
        if not self.manifest.owns(path):  # the first touch keeps what was there before us
            prior = None if current is None else base64.b64encode(current).decode()
            self.manifest.entries.append({"kind": kind, "path": str(path), "prior": prior})
        entry = self.manifest.find(path)
        tmp = path.with_name(f".{path.name}.warpdiff-tmp")
        tmp.write_bytes(data)
        if mode is not None:
            os.chmod(tmp, mode)
        elif current is not None:
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
        entry["sha256"] = sha256(data)
        return True

    def record_tree(self, path: Path) -> None:
        """Own a whole folder (the environment) that a tool created; uninstall removes it."""
        if not self.manifest.owns(path):
            self.manifest.entries.append({"kind": "tree", "path": str(path)})

    def record(self, entry: dict[str, Any]) -> None:
        """Any other undoable action (a service enabled), once."""
        if entry not in self.manifest.entries:
            self.manifest.entries.append(entry)

    def save(self) -> bool:
        """Write the manifest when it changed (never in a dry run)."""
        if self.dry_run:
            return False
        data = self.manifest.to_bytes()
        if read_bytes(self.manifest.path) == data:
            return False
        self.manifest.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest.path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.manifest.path)
        return True

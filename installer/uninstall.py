"""Undo an install from its manifest: newest entry first, user files restored byte for byte."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from installer.blocks import without_block
from installer.manifest import Manifest, read_bytes, sha256
from installer.steps.service import stop_commands


def _undo(entry: dict[str, Any], say: Callable[[str], None], dry_run: bool) -> None:
    path = Path(entry["path"])
    kind = entry["kind"]
    verb = "would " if dry_run else ""
    if kind == "service":
        for cmd in stop_commands(entry["system"], path):
            say(f"{verb}run {' '.join(cmd)}")
            if not dry_run and shutil.which(cmd[0]):
                subprocess.run(cmd, capture_output=True, timeout=60)
        return
    if kind == "tree":
        if path.exists():
            say(f"{verb}remove {path}")
            if not dry_run:
                shutil.rmtree(path)
        return
    if kind == "dir":
        if path.is_dir() and not any(path.iterdir()):
            say(f"{verb}remove folder {path}")
            if not dry_run:
                path.rmdir()
        elif path.is_dir():
            say(f"kept {path}: it holds files the installer did not write")
        return
    current = read_bytes(path)
    prior = None if entry.get("prior") is None else base64.b64decode(entry["prior"])
    if current is None:
        if prior is not None:
            say(f"{verb}restore {path} (it was deleted)")
            if not dry_run:
                path.write_bytes(prior)
        return
    if current is not None and sha256(current) != entry.get("sha256") and kind == "block":
        # edited since the install: take our block out, keep every line of theirs
        restored = without_block(current.decode("utf-8")).encode("utf-8")
        say(f"{verb}remove the warpdiff block from {path} (your later edits kept)")
    else:
        restored = prior
        say(f"{verb}{'restore' if prior is not None else 'remove'} {path}")
    if dry_run:
        return
    if restored is None or (kind == "block" and prior is None and not restored.strip()):
        path.unlink()
    else:
        path.write_bytes(restored)


def uninstall(
    manifest: Manifest, say: Callable[[str], None], dry_run: bool, purge: Path | None
) -> int:
    """Remove what ``manifest`` lists (and the cache folder ``purge``); 0, or 1 if none."""
    if not manifest.exists:
        say(f"nothing to uninstall: no manifest at {manifest.path}")
        return 1
    say(
        f"{'would undo' if dry_run else 'undoing'} {len(manifest.entries)} entries of "
        f"{manifest.path}"
    )
    entries = list(reversed(manifest.entries))
    files = [e for e in entries if e["kind"] != "dir"]
    for entry in files:
        _undo(entry, say, dry_run)
    if not dry_run:
        manifest.path.unlink()
    if purge is not None and purge.exists():
        say(f"{'would remove' if dry_run else 'remove'} the cache {purge}")
        if not dry_run:
            shutil.rmtree(purge)
    elif purge is None:
        say("kept the shot cache (add --purge to remove it)")
    for entry in (e for e in entries if e["kind"] == "dir"):
        _undo(entry, say, dry_run)
    return 0

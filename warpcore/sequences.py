"""Frame-sequence naming: ``plate.1001.exr``-style names, ``####`` / ``%04d`` patterns.

A :class:`Naming` is prefix + zero-padded frame number + extension, starting at ``first``:
``Naming("plate.", 4, ".exr", 1001).name(0) == "plate.1001.exr"``. Inputs are read with
:func:`parse_sequence` (the names of a folder's frames), outputs given as a pattern with
:func:`parse_pattern` (``out/shot_clean.####.exr``, ``out/shot_clean.%04d.exr``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from warpcore.errors import InvalidInput

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<suffix>\.[A-Za-z0-9]+)$")
_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%0?(\d*)d")


@dataclass(frozen=True)
class Naming:
    """Names of a frame sequence: ``f"{prefix}{first + i:0{padding}d}{suffix}"``."""

    prefix: str = "frame_"
    padding: int = 6
    suffix: str = ".png"
    first: int = 0

    def name(self, index: int) -> str:
        """The file name of the ``index``-th frame (0-based) of the sequence."""
        return f"{self.prefix}{self.first + index:0{self.padding}d}{self.suffix}"

    def number(self, index: int) -> int:
        """The frame number of the ``index``-th frame (``first + index``)."""
        return self.first + index

    def with_suffix(self, suffix: str) -> Naming:
        return replace(self, suffix=suffix)

    def pattern(self) -> str:
        """The sequence as a ``####`` pattern, e.g. ``plate.####.exr``."""
        return f"{self.prefix}{'#' * self.padding}{self.suffix}"


DEFAULT_NAMING = Naming()


def parse_sequence(files: Sequence[Path]) -> Naming | None:
    """The naming that ``files`` (sorted frames of one folder) follow, or None if none does.

    The files must share one prefix and extension and be numbered consecutively; the padding
    is the digit count of the first name when its numbers are zero-padded (``0998``), else
    the width of the shortest number (``1``, ``2`` ... ``10`` has padding 1).
    """
    if not files:
        return None
    parts = [_NUMBERED.match(Path(f).name) for f in files]
    if any(p is None for p in parts):
        return None
    prefixes = {p["prefix"] for p in parts}  # type: ignore[index]
    suffixes = {p["suffix"] for p in parts}  # type: ignore[index]
    if len(prefixes) != 1 or len(suffixes) != 1:
        return None
    numbers = [int(p["digits"]) for p in parts]  # type: ignore[index]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        return None
    widths = {len(p["digits"]) for p in parts}  # type: ignore[index]
    padded = any(p["digits"].startswith("0") and len(p["digits"]) > 1 for p in parts)  # type: ignore[index]
    padding = len(parts[0]["digits"]) if padded or len(widths) == 1 else min(widths)  # type: ignore[index]
    return Naming(prefixes.pop(), padding, suffixes.pop(), numbers[0])


def is_pattern(path: str | Path) -> bool:
    """True when the file name holds a frame-number placeholder (``####`` or ``%04d``)."""
    name = Path(path).name
    return bool(_HASHES.search(name) or _PRINTF.search(name))


def parse_pattern(path: str | Path, first: int = 0) -> tuple[Path, Naming]:
    """``out/shot.####.exr`` -> (``out``, Naming("shot.", 4, ".exr", first)); also ``%04d``."""
    path = Path(path)
    name = path.name
    found = list(_HASHES.finditer(name)) + list(_PRINTF.finditer(name))
    if len(found) != 1:
        raise InvalidInput(
            f"output: {name!r} needs exactly one frame-number placeholder, e.g. "
            "shot.####.exr or shot.%04d.exr"
        )
    match = found[0]
    padding = len(match.group(0)) if match.group(0).startswith("#") else int(match.group(1) or 1)
    prefix, rest = name[: match.start()], name[match.end() :]
    if not rest.startswith(".") or len(rest) < 2 or "." in rest[1:]:
        raise InvalidInput(
            f"output: {name!r} must end with the placeholder and an extension, e.g. shot.####.exr"
        )
    return path.parent, Naming(prefix, padding, rest, first)

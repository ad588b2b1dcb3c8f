"""A timeline item -> the file frames it shows (its media, source in/out, frame rate, place).

A sequence clip's "File Path" reads ``/shots/plate.[1001-1100].exr``: the item's source
in-point (frames into the media) maps to file frame ``1001 + in``. A movie's frames are
numbered from 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warpdiff_host.errors import HostError
from warpdiff_host.exr import frame_file, is_sequence, to_printf

_BRACKETS = re.compile(r"\[(\d+)-(\d+)\]")
MOVIE_EXTS = (".mov", ".mp4", ".mkv", ".avi", ".webm")


@dataclass(frozen=True)
class ItemSource:
    """What an item shows: ``n_frames`` file frames from ``first`` of ``path``."""

    name: str
    path: str  # a printf sequence pattern or a movie file
    first: int  # the first file frame shown (sequence number, or movie frame index)
    n_frames: int
    fps: float
    record_start: int  # the timeline frame where the item starts
    track: int  # its video track (1-based)

    @property
    def is_sequence(self) -> bool:
        return is_sequence(self.path)

    def files(self, pattern: str | None = None) -> list[Path]:
        """This range's files of the source (or of a matte numbered like it)."""
        pattern = pattern or self.path
        return [frame_file(pattern, self.first + i) for i in range(self.n_frames)]


def parse_media_path(path: str) -> tuple[str, int | None]:
    """``plate.[1001-1100].exr`` -> (``plate.%04d.exr``, 1001); a movie -> (path, None)."""
    match = _BRACKETS.search(path)
    if match:
        start = match.group(1)
        pattern = path[: match.start()] + f"%0{len(start)}d" + path[match.end() :]
        return pattern, int(start)
    if is_sequence(path):
        return to_printf(path), None
    return path, None


def item_source(item: Any, timeline: Any) -> ItemSource:
    """Where ``item``'s frames come from; a clear error for generators and offline media."""
    media = item.GetMediaPoolItem()
    if media is None:
        raise HostError(f"{item.GetName()}: has no media (a generator or title?); pick a clip")
    file_path = media.GetClipProperty("File Path") or ""
    if not file_path:
        raise HostError(f"{item.GetName()}: its media has no file path (offline?)")
    pattern, seq_start = parse_media_path(file_path)
    if seq_start is None and is_sequence(pattern):
        seq_start = int(media.GetClipProperty("Start") or 0)
    offset = _source_offset(item)
    first = (seq_start or 0) + offset
    try:
        fps = float(media.GetClipProperty("FPS") or 24.0)
    except ValueError:
        fps = 24.0
    return ItemSource(
        name=Path(media.GetName() or item.GetName()).stem,
        path=pattern,
        first=first,
        n_frames=int(item.GetDuration()),
        fps=fps,
        record_start=int(item.GetStart()),
        track=_track_of(item, timeline),
    )


def _source_offset(item: Any) -> int:
    """Frames of the media before the item's in-point (``GetSourceStartFrame`` when present)."""
    if hasattr(item, "GetSourceStartFrame"):
        return int(item.GetSourceStartFrame())
    return int(item.GetLeftOffset())


def _track_of(item: Any, timeline: Any) -> int:
    if hasattr(item, "GetTrackTypeAndIndex"):
        kind, index = item.GetTrackTypeAndIndex()
        if kind == "video":
            return int(index)
    for index in range(1, int(timeline.GetTrackCount("video")) + 1):
        if any(other == item for other in timeline.GetItemListInTrack("video", index) or []):
            return index
    raise HostError(f"{item.GetName()}: not found on any video track of the timeline")

"""A test double of DaVinci Resolve's ``DaVinciResolveScript`` module (scripting README).

``scriptapp("Resolve")`` gives a Resolve whose project manager has one current project with a
media pool (folders, clips with real file paths, ``ImportMedia`` checking the files exist,
``AppendToTimeline`` with clipInfo dicts) and timelines of video tracks holding items with a
record start, a duration and a source in-point (``GetLeftOffset`` / ``GetSourceStartFrame``).
Like Resolve, failures return None / False / [] instead of raising.

Tests build the project with ``fake`` helpers (``fake.add_sequence_clip``, ``fake.add_item``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any


class MediaPoolItem:
    def __init__(self, name: str, props: dict[str, Any]) -> None:
        self._name, self._props = name, props

    def GetName(self) -> str:
        return self._name

    def GetClipProperty(self, key: str | None = None) -> Any:
        return dict(self._props) if key is None else self._props.get(key, "")


class Folder:
    def __init__(self, name: str) -> None:
        self._name, self.subfolders, self.clips = name, [], []

    def GetName(self) -> str:
        return self._name

    def GetSubFolderList(self) -> list[Folder]:
        return list(self.subfolders)

    def GetClipList(self) -> list[MediaPoolItem]:
        return list(self.clips)


class TimelineItem:
    def __init__(self, media: MediaPoolItem, start: int, duration: int, offset: int) -> None:
        self.media, self._start, self._duration, self._offset = media, start, duration, offset
        self.track = 0

    def GetName(self) -> str:
        return self.media.GetName()

    def GetStart(self) -> int:
        return self._start

    def GetEnd(self) -> int:
        return self._start + self._duration

    def GetDuration(self) -> int:
        return self._duration

    def GetLeftOffset(self) -> int:
        return self._offset

    def GetRightOffset(self) -> int:
        return int(self.media.GetClipProperty("Frames")) - self._offset - self._duration

    def GetSourceStartFrame(self) -> int:
        return self._offset

    def GetSourceEndFrame(self) -> int:
        return self._offset + self._duration - 1

    def GetMediaPoolItem(self) -> MediaPoolItem:
        return self.media

    def GetTrackTypeAndIndex(self) -> list:
        return ["video", self.track]


class Timeline:
    def __init__(self, name: str, start: int = 86400) -> None:
        self._name, self._start = name, start
        self.tracks: list[list[TimelineItem]] = [[]]
        self.current: TimelineItem | None = None

    def GetName(self) -> str:
        return self._name

    def GetStartFrame(self) -> int:
        return self._start

    def GetTrackCount(self, track_type: str) -> int:
        return len(self.tracks) if track_type == "video" else 0

    def AddTrack(self, track_type: str, sub_type: str | None = None) -> bool:
        if track_type != "video":
            return False
        self.tracks.append([])
        return True

    def GetItemListInTrack(self, track_type: str, index: int) -> list[TimelineItem] | None:
        if track_type != "video" or not 1 <= index <= len(self.tracks):
            return None
        return list(self.tracks[index - 1])

    def GetCurrentVideoItem(self) -> TimelineItem | None:
        return self.current

    def _insert(self, item: TimelineItem, track: int) -> bool:
        if not 1 <= track <= len(self.tracks):
            return False
        for other in self.tracks[track - 1]:
            if item.GetStart() < other.GetEnd() and other.GetStart() < item.GetEnd():
                return False  # the fake refuses overlaps instead of overwriting
        item.track = track
        self.tracks[track - 1].append(item)
        return True


_BRACKETS = re.compile(r"\[(\d+)-(\d+)\]")


def _sequence_files(pattern: str, start: int, end: int) -> list[Path]:
    printf = re.sub(r"%0?(\d*)d", lambda m: f"%0{m.group(1) or 1}d", pattern)
    return [Path(printf % n) for n in range(start, end + 1)]


def _movie_item(path: Path) -> MediaPoolItem | None:
    """A movie clip as Resolve probes it (frame count, rate); None when it cannot be read."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            fps = float(stream.average_rate or 24)
    except (OSError, IndexError, av.error.FFmpegError):
        return None
    props = {"File Path": str(path), "FPS": str(fps), "Frames": str(frames), "Type": "Video"}
    return MediaPoolItem(path.name, props)


class MediaPool:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = Folder("Master")
        self.current = self.root

    def GetRootFolder(self) -> Folder:
        return self.root

    def GetCurrentFolder(self) -> Folder:
        return self.current

    def SetCurrentFolder(self, folder: Folder) -> bool:
        self.current = folder
        return True

    def AddSubFolder(self, parent: Folder, name: str) -> Folder:
        folder = Folder(name)
        parent.subfolders.append(folder)
        return folder

    def ImportMedia(self, items: list) -> list[MediaPoolItem]:
        """Paths of files, or {FilePath: printf pattern, StartIndex, EndIndex} for sequences."""
        imported = []
        for spec in items:
            if isinstance(spec, dict):
                start, end = int(spec["StartIndex"]), int(spec["EndIndex"])
                files = _sequence_files(spec["FilePath"], start, end)
                if not all(f.is_file() for f in files):
                    return []
                clip = fake.sequence_item(spec["FilePath"], start, end)
            else:
                clip = _movie_item(Path(spec))
                if clip is None:
                    return []
            self.current.clips.append(clip)
            imported.append(clip)
        return imported

    def AppendToTimeline(self, infos: list) -> list[TimelineItem]:
        timeline = self.project.timeline
        placed = []
        for info in infos:
            media = info["mediaPoolItem"]
            first, last = int(info.get("startFrame", 0)), int(info["endFrame"])
            frames = int(media.GetClipProperty("Frames") or 0)
            if not 0 <= first <= last < frames or info.get("mediaType", 1) != 1:
                return []
            item = TimelineItem(media, int(info["recordFrame"]), last - first + 1, first)
            if not timeline._insert(item, int(info.get("trackIndex", 1))):
                return []
            placed.append(item)
        return placed


class Project:
    def __init__(self, name: str) -> None:
        self._name = name
        self.timeline = Timeline("Timeline 1")
        self.media_pool = MediaPool(self)
        self.settings = {"timelineFrameRate": "24"}

    def GetName(self) -> str:
        return self._name

    def GetMediaPool(self) -> MediaPool:
        return self.media_pool

    def GetCurrentTimeline(self) -> Timeline:
        return self.timeline

    def GetSetting(self, name: str = "") -> Any:
        return self.settings.get(name, "")


class ProjectManager:
    def __init__(self) -> None:
        self.project: Project | None = Project("Test project")

    def GetCurrentProject(self) -> Project | None:
        return self.project


class Resolve:
    def __init__(self) -> None:
        self.project_manager = ProjectManager()

    def GetProjectManager(self) -> ProjectManager:
        return self.project_manager

    def GetProductName(self) -> str:
        return "DaVinci Resolve Studio"


class _Fake:
    """Test hooks: a fresh Resolve, and clips / items made the way Resolve shows them."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, running: bool = True) -> None:
        self.resolve = Resolve() if running else None

    @property
    def project(self) -> Project:
        return self.resolve.project_manager.project

    def sequence_item(self, pattern: str, start: int, end: int, fps: float = 24.0) -> MediaPoolItem:
        """A media pool clip of a numbered sequence; its File Path in Resolve's [a-b] form."""
        match = re.search(r"%0?(\d*)d", pattern)
        width = int(match.group(1) or 1)
        shown = pattern[: match.start()] + f"[{start:0{width}d}-{end:0{width}d}]"
        shown += pattern[match.end() :]
        name = os.path.basename(pattern[: match.start()]).rstrip("._") or "clip"
        props = {
            "File Path": shown,
            "FPS": str(fps),
            "Start": str(start),
            "End": str(end),
            "Frames": str(end - start + 1),
            "Type": "Still",
        }
        return MediaPoolItem(name, props)

    def add_sequence_clip(self, pattern: str, start: int, end: int) -> MediaPoolItem:
        clip = self.sequence_item(pattern, start, end)
        self.project.media_pool.root.clips.append(clip)
        return clip

    def add_item(
        self,
        clip: MediaPoolItem,
        record: int,
        duration: int,
        offset: int,
        track: int = 1,
        current: bool = True,
    ) -> TimelineItem:
        timeline = self.project.timeline
        while len(timeline.tracks) < track:
            timeline.tracks.append([])
        item = TimelineItem(clip, record, duration, offset)
        assert timeline._insert(item, track)
        if current:
            timeline.current = item
        return item


fake = _Fake()


def scriptapp(name: str) -> Resolve | None:
    return fake.resolve if name == "Resolve" else None

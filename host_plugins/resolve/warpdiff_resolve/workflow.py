"""One timeline item through the server and back into the project.

item -> its file frames (source in/out) -> the shot (paths the server reads, or frames) ->
an EXR sequence (and a movie, when asked) beside the source -> the media pool's "Warped
Diffusion" bin -> optionally the track above the item, on the same record frames.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from warpdiff_host import settings as host_settings
from warpdiff_host.errors import HostError, ShotFailed, refused_paths
from warpdiff_host.exr import read_exr
from warpdiff_host.progress import Progress
from warpdiff_host.runner import ShotResult, connect, run_shot
from warpdiff_host.shot import ShotJob, check_mattes, input_links, link_frames, remove_links

from warpdiff_resolve.source import MOVIE_EXTS, ItemSource, item_source, parse_media_path

BIN = "Warped Diffusion"
OUTPUTS = ("exr", "mov", "mp4")
SENDS = ("auto", "paths", "frames")


@dataclass
class Settings:
    """The form's answers.

    ``matte``: a matte file or sequence numbered like the source (white = remove), or None for
    the clip's alpha. ``send``: ``paths`` (the server reads the media), ``frames``, or ``auto``
    (paths, and frames when the server may not read them). ``output``: ``exr`` sequence, or
    also a ``mov`` (ProRes) / ``mp4`` movie.
    """

    task: str = "inpaint"
    matte: str | None = None
    send: str = "auto"
    output: str = "exr"
    place_on_track: bool = True
    output_dir: str | None = None
    address: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.send not in SENDS:
            raise HostError(f"send: got {self.send!r}; accepted: {', '.join(SENDS)}")
        if self.task == "upscale" and self.matte is not None:
            raise HostError("matte: upscaling takes no matte; leave the matte empty")
        if self.output not in OUTPUTS:
            raise HostError(f"output: got {self.output!r}; accepted: {', '.join(OUTPUTS)}")
        if self.output != "exr":
            try:
                import av  # noqa: F401
            except ImportError:
                raise HostError(
                    f"output {self.output}: needs the PyAV package in Resolve's Python "
                    "(`python -m pip install av`); or choose the EXR sequence"
                ) from None


@dataclass
class Outcome:
    """What came back: the shot on disk, the media pool clip, the timeline item (if placed)."""

    result: ShotResult
    media_item: Any
    timeline_item: Any = None
    movie: Path | None = None


def current_item(resolve: Any) -> tuple[Any, Any, Any]:
    """(project, timeline, item): the current timeline's current video item."""
    project = resolve.GetProjectManager().GetCurrentProject()
    if project is None:
        raise HostError("no project is open in DaVinci Resolve")
    timeline = project.GetCurrentTimeline()
    if timeline is None:
        raise HostError("the project has no current timeline: open one")
    item = timeline.GetCurrentVideoItem()
    if item is None:
        raise HostError("no video item under the playhead: move it onto the clip to process")
    return project, timeline, item


def process_item(
    project: Any,
    timeline: Any,
    item: Any,
    settings: Settings,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Outcome:
    """Send ``item``'s frames, import the result; nothing is imported unless it all worked."""
    settings.check()
    address = host_settings.server_address(settings.address)
    client = connect(address)  # before any file work: no server, nothing done
    source = item_source(item, timeline)
    out_root = Path(settings.output_dir or host_settings.output_root(Path(source.path).parent))
    temp: list[Path] = []
    send = settings.send
    if send == "auto":
        send = "paths" if host_settings.is_local(address) else "frames"
    try:
        job = _job(source, settings, send, address, out_root, temp)
        try:
            result = run_shot(
                job, out_root, client=client, on_progress=on_progress, should_stop=should_stop
            )
        except ShotFailed as exc:  # paths this server may not read: send the frames instead
            if settings.send != "auto" or job.paths is None or not refused_paths(exc):
                raise
            if not source.is_sequence:
                raise
            job = _job(source, settings, "frames", address, out_root, temp)
            result = run_shot(
                job, out_root, client=client, on_progress=on_progress, should_stop=should_stop
            )
    finally:
        client.close()
        for path in temp:
            remove_links(path)
    movie = _write_movie(result, source, settings.output) if settings.output != "exr" else None
    media = _import(project, result, movie)
    placed = _place(project, timeline, media, source, result) if settings.place_on_track else None
    return Outcome(result, media, placed, movie)


def _job(
    source: ItemSource,
    settings: Settings,
    send: str,
    address: str,
    out_root: Path,
    temp: list[Path],
) -> ShotJob:
    movie = not source.is_sequence
    if movie and Path(source.path).suffix.lower() not in MOVIE_EXTS:
        raise HostError(f"{source.path}: unsupported media; accepted: EXR sequences, movies")
    matte = None if settings.matte is None else parse_media_path(settings.matte)[0]
    alpha = "alpha" if settings.task == "inpaint" and matte is None else None
    if alpha and source.is_sequence and read_exr(source.files()[0]).shape[2] != 4:
        raise HostError(f"{source.path} has no alpha: choose a matte file")
    base = dict(
        task=settings.task,
        name=source.name,
        first=source.first,
        n_frames=source.n_frames,
        params=dict(settings.params),
    )
    if movie:
        if send != "paths" or source.first != 0 or matte is not None:
            raise HostError(
                f"{source.path}: a movie is sent whole as a path with its alpha as the matte; "
                "for a trimmed item or a separate matte render the clip to an EXR sequence"
            )
        return ShotJob(**base, masks=alpha, paths={"frames": source.path, "masks": None})
    if send == "paths":
        if not host_settings.is_local(address):
            raise HostError(f"send=paths: the server at {address} cannot read this machine's files")
        links = input_links(out_root)
        temp.append(links)
        paths = {"frames": str(link_frames(source.files(), links / "frames")), "masks": None}
        if matte is not None:
            paths["masks"] = str(link_frames(source.files(matte), links / "matte"))
        return ShotJob(**base, masks=alpha, paths=paths)
    frames = [read_exr(f) for f in source.files()]
    if matte is not None:
        frames = [f[..., :3] for f in frames]
        masks: Any = [_matte(read_exr(f)) for f in source.files(matte)]
        check_mattes(masks, f"matte {settings.matte}")
    else:
        masks = alpha
    return ShotJob(**base, frames=frames, masks=masks)


def _matte(image: np.ndarray) -> np.ndarray:
    """A matte image -> (H, W, 1): its gray level (mean of R, G, B), or its alpha alone."""
    if image.shape[2] == 1:
        return image
    gray = image[..., :3].mean(axis=2)
    if image.shape[2] == 4 and np.ptp(gray) == 0 and np.ptp(image[..., 3]) > 0:
        gray = image[..., 3]
    return np.clip(gray, 0.0, 1.0)[..., None].astype(np.float32)


def _write_movie(result: ShotResult, source: ItemSource, kind: str) -> Path:
    from warpdiff_resolve.movie import write_movie

    path = result.folder / f"{Path(result.pattern).name.split('.')[0]}.{kind}"
    frames = (read_exr(result.pattern % n) for n in range(result.first, result.last + 1))
    write_movie(path, frames, source.fps)
    return path


def _bin(media_pool: Any) -> Any:
    root = media_pool.GetRootFolder()
    for folder in root.GetSubFolderList() or []:
        if folder.GetName() == BIN:
            return folder
    folder = media_pool.AddSubFolder(root, BIN)
    if folder is None:
        raise HostError(f"could not create the media pool bin {BIN!r}")
    return folder


def _import(project: Any, result: ShotResult, movie: Path | None) -> Any:
    media_pool = project.GetMediaPool()
    previous = media_pool.GetCurrentFolder()
    media_pool.SetCurrentFolder(_bin(media_pool))
    try:
        if movie is not None:
            items = media_pool.ImportMedia([str(movie)])
        else:
            spec = {"FilePath": result.pattern, "StartIndex": result.first, "EndIndex": result.last}
            items = media_pool.ImportMedia([spec])
    finally:
        if previous is not None:
            media_pool.SetCurrentFolder(previous)
    if not items:
        raise HostError(
            f"Resolve did not import {movie or result.pattern}; the files are in "
            f"{result.folder}: import them by hand"
        )
    return items[0]


def _place(project: Any, timeline: Any, media: Any, source: ItemSource, result: ShotResult):  # noqa: ANN202
    """The result on the track above the source item, on the same record frames."""
    track = source.track + 1
    while int(timeline.GetTrackCount("video")) < track:
        if not timeline.AddTrack("video"):
            raise HostError(f"could not add video track {track}")
    clip = {
        "mediaPoolItem": media,
        "startFrame": 0,
        "endFrame": result.n_frames - 1,
        "mediaType": 1,
        "trackIndex": track,
        "recordFrame": source.record_start,
    }
    placed = project.GetMediaPool().AppendToTimeline([clip])
    if not placed:
        raise HostError(f"the result is in the {BIN!r} bin but could not be placed on V{track}")
    return placed[0]


def output_name(path: str | os.PathLike[str]) -> str:
    return Path(path).name

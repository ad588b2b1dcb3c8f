"""Video and image-sequence IO that streams: constant memory in clip length.

Reading: :func:`open_frames` opens a video (mp4/mov/mkv/avi/webm, PyAV), a folder of
PNG/TIFF/EXR frames (sorted by the numbers in their names: frame_2 before frame_10), or one
image (a 1-frame clip). Frames come out as numpy (H, W, C) float32, C = 3 or 4 (alpha).
8/16-bit files are scaled to [0, 1]; EXR (and float TIFF) values are linear and returned as
stored, not clipped (highlights may exceed 1).

Writing: :class:`warpcore.writers.FrameWriter` (re-exported here for older imports).
Videos carry a :class:`VideoMeta` (exact rational rate, audio streams, timecode, pixel
aspect, colour tags); frame folders a :class:`~warpcore.sequences.Naming` (``plate.1001``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from warpcore.errors import InvalidInput
from warpcore.sequences import Naming, parse_sequence

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
WRITE_VIDEO_EXTS = (".mp4", ".mov", ".mkv")
IMAGE_EXTS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".exr": "exr"}
DEFAULT_FPS = 24.0
_COLOUR_TAGS = ("color_primaries", "color_trc", "colorspace", "color_range")


def __getattr__(name: str) -> object:
    """The writers moved to :mod:`warpcore.writers`; old imports keep working."""
    if name in ("FrameWriter", "write_video", "FOLDER_FORMATS"):
        from warpcore import writers

        return getattr(writers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class VideoMeta:
    """What a video output keeps from a video input besides the pictures.

    ``rate``: exact frame rate (24000/1001); ``path`` + ``audio``: the input and its audio
    stream indices (copied without re-encoding); ``video_start_s``: the first video frame's
    time (audio is aligned to it); ``timecode`` ("01:00:00:00"); ``sar`` (pixel aspect);
    ``colour``: the codec's colour tags (primaries, transfer, matrix, range) by name.
    """

    rate: Fraction
    path: Path | None = None
    audio: tuple[int, ...] = ()
    video_start_s: float = 0.0
    timecode: str | None = None
    sar: Fraction | None = None
    colour: tuple[tuple[str, int], ...] = ()

    def apply_to(self, stream: object, yuv: bool = True) -> None:
        """Set pixel aspect, colour tags and timecode on an output video stream (PyAV).

        ``yuv=False`` (an RGB codec): the matrix and range tags do not apply and are left out.
        """
        ctx = stream.codec_context  # type: ignore[attr-defined]
        if self.sar:
            ctx.sample_aspect_ratio = self.sar
        for name, value in self.colour:
            if yuv or name in ("color_primaries", "color_trc"):
                setattr(ctx, name, value)
        if self.timecode:
            stream.metadata["timecode"] = self.timecode  # type: ignore[attr-defined]

    def tag(self, name: str) -> int | None:
        """One colour tag's value (``colorspace``, ``color_range`` ...), None when untagged."""
        return dict(self.colour).get(name)


class FrameSource:
    """A clip opened for streaming. Iterate for frames, ``read(i)`` for one frame.

    Attributes: ``path``, ``kind`` ("video" | "png" | "tiff" | "exr"), ``height``, ``width``,
    ``fps``, ``channels`` (3, or 4 with alpha), ``bit_depth`` (8, 16 or 32: float / EXR float;
    EXR half reports 16), ``has_alpha``.
    """

    path: Path
    kind: str
    height: int
    width: int
    fps: float
    channels: int
    bit_depth: int
    meta: VideoMeta | None = None  # videos
    naming: Naming | None = None  # numbered frame folders

    @property
    def rate(self) -> Fraction:
        """The exact frame rate (24000/1001 for 23.976)."""
        return (
            self.meta.rate if self.meta is not None else Fraction(self.fps).limit_denominator(1001)
        )

    @property
    def has_alpha(self) -> bool:
        return self.channels == 4

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def read(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def rgb(self) -> Iterator[np.ndarray]:
        """Frames without alpha, (H, W, 3)."""
        for frame in self:
            yield frame[..., :3]

    def alpha(self) -> Iterator[np.ndarray]:
        """The alpha channel of every frame, (H, W) float32; an error without alpha."""
        if not self.has_alpha:
            raise InvalidInput(f"{self.path}: has no alpha channel (it has {self.channels})")
        for frame in self:
            yield frame[..., 3]

    def _check_index(self, index: int) -> int:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
            raise InvalidInput(f"index: expected an integer in [0, {n}), got {index!r}")
        return index % n


# ---------------------------------------------------------------------------------------------
# Image files


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_image(path: str | Path) -> tuple[np.ndarray, int]:
    """One image file as (H, W, 3|4) float32 and its bit depth; clear errors when unreadable."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTS:
        raise InvalidInput(f"{path}: unsupported image type {ext!r}; accepted: {list(IMAGE_EXTS)}")
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    if ext == ".exr":
        return _read_exr(path)
    raw = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise InvalidInput(f"{path}: cannot decode it as {IMAGE_EXTS[ext].upper()} (corrupt?)")
    if raw.dtype == np.uint8:
        img, depth = raw.astype(np.float32) / 255.0, 8
    elif raw.dtype == np.uint16:
        img, depth = raw.astype(np.float32) / 65535.0, 16
    elif raw.dtype in (np.float32, np.float64):
        img, depth = raw.astype(np.float32), 32
    else:
        raise InvalidInput(f"{path}: unsupported sample type {raw.dtype}; accepted 8/16-bit/float")
    if img.ndim == 2:
        img = img[..., None]
    conv = {1: cv2.COLOR_GRAY2RGB, 2: None, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}
    if img.shape[2] == 2:  # gray + alpha
        img = np.dstack((img[..., 0], img[..., 0], img[..., 0], img[..., 1]))
    else:
        img = cv2.cvtColor(img, conv[img.shape[2]])
    return np.ascontiguousarray(img), depth


def _read_exr(path: Path) -> tuple[np.ndarray, int]:
    import OpenEXR

    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            ch = {k: v.pixels for k, v in f.channels().items()}
    except Exception as exc:  # OpenEXR raises plain Exception subclasses
        raise InvalidInput(f"{path}: cannot read it as EXR ({exc})") from exc
    names = ["R", "G", "B"] if {"R", "G", "B"} <= set(ch) else ["Y", "Y", "Y"] if "Y" in ch else []
    if not names:
        raise InvalidInput(f"{path}: EXR has channels {sorted(ch)}; expected R, G, B (or Y)")
    if "A" in ch:
        names.append("A")
    depth = 16 if ch[names[0]].dtype == np.float16 else 32
    return np.dstack([ch[n].astype(np.float32) for n in names]), depth


class _FolderSource(FrameSource):
    def __init__(self, path: Path, files: list[Path], fps: float) -> None:
        self.path, self._files, self.fps = path, files, fps
        self.kind = IMAGE_EXTS[files[0].suffix.lower()]
        first, self.bit_depth = read_image(files[0])
        self.height, self.width, self.channels = first.shape
        self.naming = parse_sequence(files)

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self._files)):
            yield self.read(i)

    def read(self, index: int) -> np.ndarray:
        file = self._files[self._check_index(index)]
        img, _ = read_image(file)
        if img.shape[:2] != (self.height, self.width):
            raise InvalidInput(
                f"{file}: size {img.shape[1]}x{img.shape[0]} differs from the first frame's "
                f"{self.width}x{self.height}; every frame must have the same size"
            )
        if img.shape[2] != self.channels:
            img = img[..., :3] if img.shape[2] == 4 else np.dstack((img, np.ones_like(img[..., 0])))
        return img


# ---------------------------------------------------------------------------------------------
# Videos (PyAV)


def _has_alpha(pix_fmt: str | None) -> bool:
    if not pix_fmt:
        return False
    import av

    fmt = av.VideoFormat(pix_fmt)
    return (len(fmt.components) == 4 and "0" not in pix_fmt) or pix_fmt.startswith("ya")


class _VideoSource(FrameSource):
    kind = "video"

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        self._cursor: tuple | None = None  # (container, frame iterator, next index)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise InvalidInput(f"{path}: has no video stream")
                stream = container.streams.video[0]
                ctx = stream.codec_context
                self.width, self.height = ctx.width, ctx.height
                rate = stream.average_rate or stream.guessed_rate or Fraction(24)
                self.fps = float(rate)
                self._rate = Fraction(rate)
                self._tb = stream.time_base
                self._start = stream.start_time or 0
                pix = ctx.format.name if ctx.format else None
                self.channels = 4 if _has_alpha(pix) else 3
                self.bit_depth = 16 if pix and ctx.format.components[0].bits > 8 else 8
                self._n = stream.frames or sum(1 for p in container.demux(stream) if p.size)
                self.meta = _video_meta(path, container, stream, Fraction(rate))
        except av.error.FFmpegError as exc:
            raise InvalidInput(f"{path}: cannot read it as a video ({exc})") from exc
        if self.width < 1 or self.height < 1 or self._n < 1:
            raise InvalidInput(f"{path}: no decodable video frames")
        self._fmt = (
            ("rgba64le" if self.channels == 4 else "rgb48le")
            if self.bit_depth > 8
            else ("rgba" if self.channels == 4 else "rgb24")
        )

    def __len__(self) -> int:
        return self._n

    def _to_array(self, frame: object) -> np.ndarray:
        arr = frame.to_ndarray(format=self._fmt)  # type: ignore[attr-defined]
        scale = 65535.0 if arr.dtype == np.uint16 else 255.0
        return arr.astype(np.float32) / scale

    def _decode(self, container: object) -> Iterator[object]:
        stream = container.streams.video[0]  # type: ignore[attr-defined]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        with av.open(str(self.path)) as container:
            for count, frame in enumerate(self._decode(container)):
                if count >= self._n:
                    break
                yield self._to_array(frame)

    def _index_of(self, frame: object) -> int:
        pts = frame.pts  # type: ignore[attr-defined]
        if pts is None:
            return -1
        return round(float((pts - self._start) * self._tb * self._rate))

    def read(self, index: int) -> np.ndarray:
        """Frame ``index``: continues decoding for the next frame, else seeks to a keyframe."""
        import av

        index = self._check_index(index)
        if self._cursor is not None and self._cursor[2] == index:
            container, frames, _ = self._cursor
        else:
            self.close()
            container = av.open(str(self.path))
            stream = container.streams.video[0]
            target = int(self._start + index / (self._rate * self._tb))
            container.seek(max(target, 0), stream=stream, backward=True, any_frame=False)
            frames = self._decode(container)
        last = None
        for frame in frames:
            last = frame
            if self._index_of(frame) >= index:
                break
        if last is None:
            container.close()
            self._cursor = None
            raise InvalidInput(f"{self.path}: frame {index} could not be decoded")
        self._cursor = (container, frames, index + 1)
        return self._to_array(last)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor[0].close()
            self._cursor = None

    def __del__(self) -> None:
        self.close()


def _video_meta(path: Path, container: object, stream: object, rate: Fraction) -> VideoMeta:
    ctx = stream.codec_context  # type: ignore[attr-defined]
    timecode = stream.metadata.get("timecode") or container.metadata.get("timecode")  # type: ignore[attr-defined]
    for other in container.streams:  # type: ignore[attr-defined]
        timecode = timecode or other.metadata.get("timecode")
    sar = ctx.sample_aspect_ratio
    tags = ((n, int(getattr(ctx, n, 0) or 0)) for n in _COLOUR_TAGS)
    colour = tuple((n, v) for n, v in tags if v not in (0, 2))  # 0/2: unspecified (or RGB)
    start = stream.start_time  # type: ignore[attr-defined]
    return VideoMeta(
        rate=rate,
        path=path,
        audio=tuple(s.index for s in container.streams.audio),  # type: ignore[attr-defined]
        video_start_s=float(start * stream.time_base) if start else 0.0,  # type: ignore[attr-defined]
        timecode=timecode or None,
        sar=Fraction(sar) if sar and sar != 1 else None,
        colour=colour,
    )


def open_frames(path: str | Path, fps: float = DEFAULT_FPS) -> FrameSource:
    """Open a video, a folder of PNG/TIFF/EXR frames or one image; ``fps`` for image input."""
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder")
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
        files = [p for p in files if not p.name.startswith(".")]  # skip temp files
        if not files:
            raise InvalidInput(f"{path}: folder holds no {'/'.join(IMAGE_EXTS)} frames")
        kinds = {IMAGE_EXTS[p.suffix.lower()] for p in files}
        if len(kinds) > 1:
            raise InvalidInput(f"{path}: mixes frame types {sorted(kinds)}; expected one type")
        return _FolderSource(path, sorted(files, key=lambda p: _natural_key(p.name)), fps)
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return _FolderSource(path, [path], fps)
    if ext in VIDEO_EXTS:
        return _VideoSource(path)
    accepted = ", ".join(VIDEO_EXTS + tuple(IMAGE_EXTS))
    raise InvalidInput(f"{path}: unsupported file type {ext!r}; accepted: {accepted} or a folder")


# ---------------------------------------------------------------------------------------------
# Masks


class MaskSource:
    """Masks for a clip, (H, W) float32 in [0, 1], 1 = remove; ``len()`` = the clip's length.

    Mask images: the mean of R, G, B; when those are constant and there is an alpha channel
    (an alpha-only matte), the alpha. Values are clipped to [0, 1].
    """

    def __init__(self, spec: str | Path, source: FrameSource) -> None:
        self.spec, self._source = str(spec), source
        self._frames: FrameSource | None = None
        if self.spec == "alpha":
            if not source.has_alpha:
                raise InvalidInput(
                    f"mask: 'alpha' was asked but {source.path} has no alpha channel "
                    f"({source.channels} channels); give a mask file or folder instead"
                )
            return
        self._frames = open_frames(spec)
        m = self._frames
        if (m.height, m.width) != (source.height, source.width):
            raise InvalidInput(
                f"mask: {spec} is {m.width}x{m.height} but the video {source.path} is "
                f"{source.width}x{source.height}; they must be the same size"
            )
        if len(m) not in (1, len(source)):
            raise InvalidInput(
                f"mask: {spec} has {len(m)} frames but the video {source.path} has "
                f"{len(source)}; give one mask per frame or a single image for all"
            )

    def __len__(self) -> int:
        return len(self._source)

    def read(self, index: int) -> np.ndarray:
        """The mask of frame ``index`` (random access)."""
        if self._frames is None:
            return np.clip(self._source.read(index)[..., 3], 0.0, 1.0).astype(np.float32)
        return _to_mask(self._frames.read(0 if len(self._frames) == 1 else index))

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._frames is None:
            for a in self._source.alpha():
                yield np.clip(a, 0.0, 1.0).astype(np.float32)
            return
        if len(self._frames) == 1:
            still = _to_mask(self._frames.read(0))
            for _ in range(len(self._source)):
                yield still
            return
        for frame in self._frames:
            yield _to_mask(frame)


def _to_mask(frame: np.ndarray) -> np.ndarray:
    gray = frame[..., :3].mean(axis=2)
    if frame.shape[2] == 4 and np.ptp(gray) == 0 and np.ptp(frame[..., 3]) > 0:
        gray = frame[..., 3]
    return np.clip(gray, 0.0, 1.0).astype(np.float32)


def open_masks(spec: str | Path, source: FrameSource) -> MaskSource:
    """Masks from a video, a folder, one image (used for every frame) or ``"alpha"``.

    Size and length are checked now, before any compute.
    """
    return MaskSource(spec, source)

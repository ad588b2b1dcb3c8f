"""Video and image-sequence IO that streams: constant memory in clip length.

Reading: :func:`open_frames` opens a video (mp4/mov/mkv/avi/webm, PyAV), a folder of
PNG/TIFF/EXR frames (sorted by the numbers in their names: frame_2 before frame_10), or one
image (a 1-frame clip). Frames come out as numpy (H, W, C) float32, C = 3 or 4 (alpha).
8/16-bit files are scaled to [0, 1]; EXR (and float TIFF) values are linear and returned as
stored, not clipped (highlights may exceed 1).

Writing: :class:`FrameWriter` writes each frame as it comes. Folders: every frame is a
complete file, written to a temp name and renamed, so a killed process keeps every finished
frame. Videos: packets are muxed as frames are encoded, but mp4/mov index their samples on
close; ``fragmented=True`` writes fragmented mp4/mov that stay playable up to the last
fragment after a kill (some editors import fragmented files poorly, hence off by default).
libx264's lookahead holds up to ~40 frames inside the encoder, so a killed h264 writer loses
those whatever the container. mkv (ffv1, intra-only, no lookahead) stays readable after a kill.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from warpcore.errors import InvalidInput

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
WRITE_VIDEO_EXTS = (".mp4", ".mov", ".mkv")
IMAGE_EXTS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".exr": "exr"}
FOLDER_FORMATS = ("png", "png8", "png16", "tiff", "tiff16", "exr", "exr-half", "exr-float")
DEFAULT_FPS = 24.0


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
# Writing


def _as_hwc(frame: object) -> np.ndarray:
    """numpy (H, W, 3|4) float32 from numpy (H, W, C) or torch (C, H, W); validated."""
    if hasattr(frame, "detach"):  # a torch tensor, without importing torch here
        t = frame.detach().cpu().float()  # type: ignore[attr-defined]
        if t.dim() != 3:
            raise InvalidInput(f"frame: expected torch (C, H, W), got {tuple(t.shape)}")
        frame = t.permute(1, 2, 0).numpy()
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3):
        raise InvalidInput("frame: expected numpy (H, W, 3|4) or torch (3|4, H, W) floats")
    arr = frame[..., None] if frame.ndim == 2 else frame
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInput(f"frame: expected (H, W, 3|4) with H, W > 0, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidInput(f"frame: expected floats in [0, 1], got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InvalidInput("frame: contains NaN or infinite values; expected floats in [0, 1]")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _folder_format(fmt: str | None, like: FrameSource | None) -> str:
    """Resolve a folder format to one of png8, png16, tiff16, exr-half, exr-float."""
    if fmt is not None and fmt not in FOLDER_FORMATS:
        raise InvalidInput(f"fmt: got {fmt!r}; accepted: {', '.join(FOLDER_FORMATS)}")
    depth = like.bit_depth if like is not None else 8
    base = fmt or (like.kind if like is not None and like.kind != "video" else "png")
    if base == "png":
        return "png16" if depth >= 16 else "png8"
    if base == "tiff":
        return "tiff16"
    if base == "exr":
        return "exr-float" if depth == 32 else "exr-half"
    return base


class FrameWriter:
    """Write frames one by one to a video (.mp4 h264, .mov ProRes, .mkv FFV1) or a folder.

    ``path`` with a video extension writes that container; any other path is a folder of
    ``frame_000000.ext`` files. ``fmt`` (folders): png / png8 / png16 / tiff (16-bit) / exr
    (half) / exr-half / exr-float; by default the format follows ``like`` (the input clip):
    same file type and depth (a video input gives 8-bit PNG, or 16-bit for >8-bit video).
    Videos: mp4 = libx264 yuv420p crf 16 (even sizes only), mov = prores_ks HQ 10-bit (4444
    with alpha), mkv = ffv1 lossless RGB (16-bit when ``like`` is >8-bit). Use as a context
    manager; ``close()`` finalises the container.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = DEFAULT_FPS,
        like: FrameSource | None = None,
        fmt: str | None = None,
        fragmented: bool = False,
    ) -> None:
        self.path = Path(path)
        if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps <= 1000:
            raise InvalidInput(f"fps: expected a number in (0, 1000], got {fps!r}")
        self.fps = float(fps)
        self._like = like
        self._fragmented = fragmented
        self._count = 0
        self._shape: tuple[int, ...] | None = None
        self._container = None
        self._stream = None
        ext = self.path.suffix.lower()
        if ext in VIDEO_EXTS or ext in IMAGE_EXTS:
            if ext not in WRITE_VIDEO_EXTS:
                raise InvalidInput(
                    f"path: cannot write {ext!r}; accepted: {', '.join(WRITE_VIDEO_EXTS)} "
                    "or a folder path (no extension)"
                )
            if fmt is not None:
                raise InvalidInput(
                    f"fmt: {fmt!r} is for frame folders; a {ext} file's codec is fixed "
                    "(mp4 h264, mov ProRes, mkv FFV1)"
                )
            self.kind = "video"
        else:
            self.kind = _folder_format(fmt, like)
            self.path.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._count

    def write(self, frame: object) -> None:
        """Append one frame: numpy (H, W, 3|4) or torch (3|4, H, W), floats in [0, 1]."""
        arr = _as_hwc(frame)
        if self._shape is None:
            self._shape = arr.shape
        elif arr.shape != self._shape:
            raise InvalidInput(
                f"frame: shape {arr.shape} differs from the first frame's {self._shape}"
            )
        if self.kind == "video":
            self._write_video(arr)
        else:
            self._write_file(arr)
        self._count += 1

    def _write_file(self, arr: np.ndarray) -> None:
        ext = {"png8": "png", "png16": "png", "tiff16": "tif"}.get(self.kind, "exr")
        final = self.path / f"frame_{self._count:06d}.{ext}"
        tmp = self.path / f".{final.name}.tmp.{ext}"
        if ext == "exr":
            _write_exr(tmp, arr, half=self.kind == "exr-half")
        else:
            bits16 = self.kind in ("png16", "tiff16")
            scale, dtype = (65535.0, np.uint16) if bits16 else (255.0, np.uint8)
            q = np.rint(np.clip(arr, 0.0, 1.0) * scale).astype(dtype)
            code = cv2.COLOR_RGBA2BGRA if q.shape[2] == 4 else cv2.COLOR_RGB2BGR
            ok, buf = cv2.imencode(f".{ext}", cv2.cvtColor(q, code))
            if not ok:
                raise InvalidInput(f"{final}: the encoder refused this frame")
            with open(tmp, "wb") as f:
                f.write(buf.tobytes())
                f.flush()
        os.replace(tmp, final)  # atomic: a frame file is either absent or complete

    def _open_video(self, arr: np.ndarray) -> None:
        import av

        h, w, c = arr.shape
        ext = self.path.suffix.lower()
        if ext in (".mp4", ".mov") and (h % 2 or w % 2):
            raise InvalidInput(
                f"frame: {w}x{h} is odd; {ext} (4:2:x chroma) needs even width and height; "
                "crop or pad by one pixel, or write .mkv (lossless, any size)"
            )
        options = {"movflags": "frag_keyframe+empty_moov"} if self._fragmented else {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w", options=options)
        rate = Fraction(self.fps).limit_denominator(1001)
        deep = self._like is not None and self._like.bit_depth > 8
        if ext == ".mp4":
            stream = self._container.add_stream("libx264", rate=rate)
            stream.pix_fmt, stream.options = "yuv420p", {"crf": "16", "preset": "medium"}
        elif ext == ".mov":
            stream = self._container.add_stream("prores_ks", rate=rate)
            stream.pix_fmt = "yuva444p10le" if c == 4 else "yuv422p10le"
            stream.options = {"profile": "4" if c == 4 else "3"}
        else:
            stream = self._container.add_stream("ffv1", rate=rate)
            eight = "bgra" if c == 4 else "bgr0"  # ffv1 takes no 8-bit gbrp
            stream.pix_fmt = ("gbrap16le" if c == 4 else "gbrp16le") if deep else eight
        stream.width, stream.height = w, h
        self._stream = stream
        self._in_fmt = ("rgba" if c == 4 else "rgb") + ("64le" if c == 4 else "48le")
        if ext == ".mp4" or (ext == ".mkv" and not deep):
            self._in_fmt = "rgba" if c == 4 else "rgb24"

    def _write_video(self, arr: np.ndarray) -> None:
        import av

        if self._container is None:
            self._open_video(arr)
        if self.path.suffix.lower() == ".mp4":
            arr = arr[..., :3]
        wide = self._in_fmt.endswith("le")
        scale, dtype = (65535.0, np.uint16) if wide else (255.0, np.uint8)
        q = np.ascontiguousarray(np.rint(np.clip(arr, 0.0, 1.0) * scale).astype(dtype))
        frame = av.VideoFrame.from_ndarray(q, format=self._in_fmt)
        for packet in self._stream.encode(frame):  # type: ignore[union-attr]
            self._container.mux(packet)  # type: ignore[union-attr]

    def close(self) -> None:
        """Flush the encoder and finalise the container (videos); idempotent."""
        if self._container is not None:
            for packet in self._stream.encode(None):  # type: ignore[union-attr]
                self._container.mux(packet)
            self._container.close()
            self._container = None


def _write_exr(path: Path, arr: np.ndarray, half: bool) -> None:
    import OpenEXR

    dtype = np.float16 if half else np.float32
    names = "RGBA"[: arr.shape[2]]
    channels = {n: np.ascontiguousarray(arr[..., i].astype(dtype)) for i, n in enumerate(names)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


def write_video(path: str | Path, frames: Iterable[object], fps: float = DEFAULT_FPS) -> int:
    """Write every frame of ``frames`` to ``path`` (video or folder); returns the count."""
    with FrameWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)
        return len(writer)


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

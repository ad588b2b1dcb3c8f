"""Writing frames as they come: a video file or a folder of numbered frames.

Folders: every frame is a complete file, written to a temp name and renamed, so a killed
process keeps every finished frame; names follow a :class:`~warpcore.sequences.Naming`
(``plate.1001.exr`` ...; ``frame_000000.png`` by default). Videos: packets are muxed as
frames are encoded, but mp4/mov index their samples on close; ``fragmented=True`` writes
fragmented mp4/mov that stay playable up to the last fragment after a kill (some editors
import fragmented files poorly, hence off by default). libx264's lookahead holds up to ~40
frames inside the encoder, so a killed h264 writer loses those whatever the container. mkv
(ffv1, intra-only, no lookahead) stays readable after a kill. With ``meta`` (the input's
:class:`~warpcore.video.VideoMeta`) a video keeps the exact rational frame rate, pixel
aspect, colour tags and timecode, and its audio streams are copied in on close (no
re-encode, cut to the frames written; :mod:`warpcore.remux`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from warpcore.errors import InvalidInput
from warpcore.sequences import DEFAULT_NAMING, Naming
from warpcore.video import (
    DEFAULT_FPS,
    IMAGE_EXTS,
    VIDEO_EXTS,
    WRITE_VIDEO_EXTS,
    FrameSource,
    VideoMeta,
)

FOLDER_FORMATS = ("png", "png8", "png16", "tiff", "tiff16", "exr", "exr-half", "exr-float")
_FORMAT_EXTS = {"png8": (".png",), "png16": (".png",), "tiff16": (".tif", ".tiff")}


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


def folder_format(fmt: str | None, like: FrameSource | None) -> str:
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


def check_video_size(path: Path, width: int, height: int) -> None:
    """mp4/mov (4:2:x chroma) need even sizes: an error naming the way out otherwise."""
    ext = path.suffix.lower()
    if ext in (".mp4", ".mov") and (height % 2 or width % 2):
        raise InvalidInput(
            f"output: {width}x{height} is odd; {ext} (4:2:x chroma) needs even width and "
            "height; crop or pad by one pixel, or write .mkv (lossless, any size)"
        )


class FrameWriter:
    """Write frames one by one to a video (.mp4 h264, .mov ProRes, .mkv FFV1) or a folder.

    ``path`` with a video extension writes that container; any other path is a folder of
    frames named by ``naming`` (default ``frame_000000.ext``). ``fmt`` (folders): png / png8 /
    png16 / tiff (16-bit) / exr (half) / exr-half / exr-float; by default the format follows
    ``like`` (the input clip): same file type and depth (a video input gives 8-bit PNG, or
    16-bit for >8-bit video). Videos: mp4 = libx264 yuv420p crf 16 (even sizes only), mov =
    prores_ks HQ 10-bit (4444 with alpha), mkv = ffv1 lossless RGB (16-bit when ``like`` is
    >8-bit). ``chromaticities`` go into EXR headers. ``meta``: see the module doc. Use as a
    context manager; ``close()`` finalises the container. ``names`` lists the files written.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = DEFAULT_FPS,
        like: FrameSource | None = None,
        fmt: str | None = None,
        fragmented: bool = False,
        naming: Naming | None = None,
        chromaticities: tuple[float, ...] | None = None,
        meta: VideoMeta | None = None,
    ) -> None:
        self.path = Path(path)
        if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps <= 1000:
            raise InvalidInput(f"fps: expected a number in (0, 1000], got {fps!r}")
        self.fps = float(fps)
        self.rate = meta.rate if meta is not None else Fraction(self.fps).limit_denominator(1001)
        self._like = like
        self._fragmented = fragmented
        self._chroma = chromaticities
        self._meta = meta
        self._count = 0
        self._shape: tuple[int, ...] | None = None
        self._container = None
        self._stream = None
        self._video_path = self.path
        self.names: list[str] = []
        self.audio_packets = 0
        self.audio_error: str | None = None
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
            if meta is not None and meta.audio and meta.path is not None:
                self._video_path = self.path.with_name(f".{self.path.stem}.video{ext}")
        else:
            self.kind = folder_format(fmt, like)
            ext = {"png8": ".png", "png16": ".png", "tiff16": ".tif"}.get(self.kind, ".exr")
            naming = naming or DEFAULT_NAMING
            keep = naming.suffix.lower() in _FORMAT_EXTS.get(self.kind, (".exr",))
            self.naming = naming if keep else naming.with_suffix(ext)
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
        final = self.path / self.naming.name(self._count)
        ext = final.suffix.lower()
        tmp = self.path / f".{final.name}.tmp{ext}"
        if ext == ".exr":
            _write_exr(tmp, arr, half=self.kind == "exr-half", chromaticities=self._chroma)
        else:
            bits16 = self.kind in ("png16", "tiff16")
            scale, dtype = (65535.0, np.uint16) if bits16 else (255.0, np.uint8)
            q = np.rint(np.clip(arr, 0.0, 1.0) * scale).astype(dtype)
            code = cv2.COLOR_RGBA2BGRA if q.shape[2] == 4 else cv2.COLOR_RGB2BGR
            ok, buf = cv2.imencode(ext, cv2.cvtColor(q, code))
            if not ok:
                raise InvalidInput(f"{final}: the encoder refused this frame")
            with open(tmp, "wb") as f:
                f.write(buf.tobytes())
                f.flush()
        os.replace(tmp, final)  # atomic: a frame file is either absent or complete
        self.names.append(final.name)

    def _open_video(self, arr: np.ndarray) -> None:
        import av

        h, w, c = arr.shape
        ext = self.path.suffix.lower()
        check_video_size(self.path, w, h)
        options = {"movflags": "frag_keyframe+empty_moov"} if self._fragmented else {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._video_path), mode="w", options=options)
        rate = self.rate
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
        self._yuv: dict[str, object] | None = None
        if self._meta is not None:
            yuv = stream.pix_fmt.startswith("yuv")
            self._meta.apply_to(stream, yuv=yuv)
            space, rng = self._meta.tag("colorspace"), self._meta.tag("color_range")
            if yuv and (space or rng):  # convert with the matrix the file is tagged with
                self._yuv = {"format": stream.pix_fmt, "dst_colorspace": space}
                self._yuv["dst_color_range"] = rng
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
        if self._yuv is not None:
            frame = frame.reformat(**self._yuv)
        for packet in self._stream.encode(frame):  # type: ignore[union-attr]
            self._container.mux(packet)  # type: ignore[union-attr]

    def close(self) -> None:
        """Flush the encoder and finalise the container (videos; audio copied in); idempotent."""
        if self._container is None:
            return
        for packet in self._stream.encode(None):  # type: ignore[union-attr]
            self._container.mux(packet)
        self._container.close()
        self._container = None
        if self._video_path != self.path:
            from warpcore.remux import mux_with_audio

            try:
                self.audio_packets = mux_with_audio(
                    self._video_path, self._meta, self.path, self._count, self.rate
                )
            except Exception as exc:  # noqa: BLE001 -- keep the frames, say what was lost
                os.replace(self._video_path, self.path)
                self.audio_error = f"the audio could not be copied ({exc}); video only"
            else:
                self._video_path.unlink(missing_ok=True)


def _write_exr(
    path: Path, arr: np.ndarray, half: bool, chromaticities: tuple[float, ...] | None = None
) -> None:
    import OpenEXR

    dtype = np.float16 if half else np.float32
    names = "RGBA"[: arr.shape[2]]
    channels = {n: np.ascontiguousarray(arr[..., i].astype(dtype)) for i, n in enumerate(names)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    if chromaticities is not None:
        header["chromaticities"] = tuple(float(v) for v in chromaticities)
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


def write_video(path: str | Path, frames: Iterable[object], fps: float = DEFAULT_FPS) -> int:
    """Write every frame of ``frames`` to ``path`` (video or folder); returns the count."""
    with FrameWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)
        return len(writer)

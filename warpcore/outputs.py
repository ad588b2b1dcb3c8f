"""Where a job writes, checked before any compute: container, naming, size, what exists.

Rules (README "Pipelines"): ``-o`` is a video (.mp4 / .mov / .mkv), a folder, or a frame
pattern (``out/shot_clean.####.exr``, ``%04d`` too). Any other extension is an error listing
these. An existing output is refused unless ``overwrite``; with it, the frames of the old
sequence that this job did not write again are removed when the job ends (finished,
stopped or failed), so a folder never holds a mix of old and new frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from warpcore.errors import InvalidInput
from warpcore.sequences import DEFAULT_NAMING, Naming, is_pattern, parse_pattern
from warpcore.video import IMAGE_EXTS, WRITE_VIDEO_EXTS, FrameSource
from warpcore.writers import FOLDER_FORMATS, check_video_size, folder_format

ACCEPTED = (
    f"{', '.join(WRITE_VIDEO_EXTS)} (video), a folder (no extension), or a frame pattern "
    f"such as out/shot.####.exr ({', '.join(IMAGE_EXTS)})"
)


@dataclass(frozen=True)
class OutputPlan:
    """A checked output: ``path`` (the video file or the frames' folder), ``kind`` ("video",
    "png", "tiff", "exr"), the folder ``fmt`` and ``naming``, and ``existing`` (what a
    ``--overwrite`` job replaces)."""

    path: Path
    kind: str
    fmt: str | None
    naming: Naming | None
    existing: tuple[Path, ...]

    @property
    def is_video(self) -> bool:
        return self.kind == "video"

    def remove_stale(self, written: list[str]) -> list[Path]:
        """Delete the old frames this job did not write again; returns what was removed."""
        keep = set(written)
        removed = [p for p in self.existing if p.name not in keep and p.is_file()]
        for p in removed:
            p.unlink(missing_ok=True)
        return removed


def parse(output: str | Path, fmt: str | None) -> tuple[Path, str | None, Naming | None]:
    """(path, video or pattern kind or None for a folder, pattern naming) of ``-o``."""
    path = Path(output)
    if fmt is not None and fmt not in FOLDER_FORMATS:
        raise InvalidInput(
            f"--format: got {fmt!r}; accepted: {', '.join(FOLDER_FORMATS)} (frame folders; a "
            "video's format is its extension)"
        )
    if is_pattern(path):
        folder, naming = parse_pattern(path)
        ext = naming.suffix.lower()
        if ext not in IMAGE_EXTS:
            raise InvalidInput(f"-o: frame pattern with extension {ext!r}; accepted: {ACCEPTED}")
        if fmt is not None and not fmt.startswith(IMAGE_EXTS[ext]):
            raise InvalidInput(f"--format: {fmt!r} does not match the pattern's {ext} frames")
        return folder, IMAGE_EXTS[ext], naming
    ext = path.suffix.lower()
    if ext in WRITE_VIDEO_EXTS:
        if fmt is not None:
            raise InvalidInput(
                f"--format: {fmt!r} is for frame folders; a {ext} file's codec is fixed "
                "(mp4 h264, mov ProRes, mkv FFV1)"
            )
        return path, "video", None
    if ext == "" or ext[1:].isdigit():  # "out", "shot_v1.2": folders
        return path, None, None
    if ext in IMAGE_EXTS:
        raise InvalidInput(
            f"-o: {path.name!r} names one image; write the frames to a folder (-o out) or a "
            f"pattern (-o out/{path.stem}.####{ext})"
        )
    raise InvalidInput(f"-o: unknown extension {ext!r}; accepted: {ACCEPTED}")


def plan(
    output: str | Path,
    fmt: str | None,
    source: FrameSource,
    size: tuple[int, int],
    overwrite: bool,
    inputs: tuple[str | Path | None, ...] = (),
) -> OutputPlan:
    """Every output check, before any compute. ``size``: the output's (height, width);
    ``inputs``: paths the output must not replace (the clip, the masks)."""
    path, kind, naming = parse(output, fmt)
    for given in inputs:
        if given is not None and str(given) != "alpha" and _same(path, Path(given)):
            raise InvalidInput(f"-o: {path} is an input of this job; choose another output")
    if kind == "video":
        check_video_size(path, size[1], size[0])
        if path.is_dir():
            raise InvalidInput(f"-o: {path} is a folder; a video output must be a file name")
        existing = (path,) if path.exists() else ()
        if existing and not overwrite:
            raise InvalidInput(f"-o: {path} exists; pass --overwrite to replace it")
        return OutputPlan(path, "video", None, None, existing)
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"-o: {path} is a file; frames need a folder (or a new name)")
    folder_fmt = fmt or kind
    resolved = folder_format(folder_fmt, source)
    out_kind = {"png8": "png", "png16": "png", "tiff16": "tiff"}.get(resolved, "exr")
    if naming is None:
        naming = source.naming or DEFAULT_NAMING
    elif source.naming is not None:
        naming = Naming(naming.prefix, naming.padding, naming.suffix, source.naming.first)
    existing = _frames_in(path, naming if kind is not None else None)
    if existing and not overwrite:
        raise InvalidInput(
            f"-o: {path} already holds {len(existing)} frame(s) (e.g. {existing[0].name}); "
            "pass --overwrite to replace them (old frames not written again are removed)"
        )
    return OutputPlan(path, out_kind, folder_fmt, naming, existing)


def _frames_in(folder: Path, pattern: Naming | None) -> tuple[Path, ...]:
    """The frames a reader of ``folder`` would take (all images; a pattern's only)."""
    if not folder.is_dir():
        return ()
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    files = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
    if pattern is not None:
        rx = re.compile(re.escape(pattern.prefix) + r"\d+" + re.escape(pattern.suffix) + "$")
        files = [p for p in files if rx.match(p.name)]
    return tuple(sorted(files))


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False

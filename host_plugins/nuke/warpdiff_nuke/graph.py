"""The node graph side: a selected node -> a shot, and a finished shot -> a Read node.

Everything here touches the node graph, so it runs in Nuke's main thread only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nuke
from warpdiff_host import settings
from warpdiff_host.errors import HostError
from warpdiff_host.exr import frame_file, is_sequence, read_sequence
from warpdiff_host.runner import ShotResult
from warpdiff_host.shot import (
    ShotJob,
    check_mattes,
    input_links,
    link_frames,
    remove_links,
    safe_name,
)

KEY_KNOB = "warpdiff_key"
PARAMS_KNOB = "warpdiff_request"
SEND_MODES = ("auto", "frames", "paths")


@dataclass
class Prepared:
    """A shot ready to send, the node it came from and the temporary files to remove after."""

    job: ShotJob
    source: Any
    out_root: Path
    temp: list[Path] = field(default_factory=list)

    def cleanup(self) -> None:
        for path in self.temp:
            remove_links(path)


def frame_range(node: Any, first: int | None, last: int | None, handles: int) -> tuple[int, int]:
    """The frames to send: given, else the node's (a Read's), else the project's; +- handles."""
    if first is None or last is None:
        lo, hi = _node_range(node)
        first = lo if first is None else first
        last = hi if last is None else last
    if handles < 0:
        raise HostError(f"handles: expected 0 or more frames, got {handles}")
    first, last = int(first) - handles, int(last) + handles
    lo, hi = _node_range(node)
    first, last = max(first, lo), min(last, hi)  # handles never reach past the footage
    if last < first:
        raise HostError(f"frame range: {first}-{last} is empty; expected first <= last")
    return first, last


def _node_range(node: Any) -> tuple[int, int]:
    if node.Class() == "Read":
        return int(node["first"].value()), int(node["last"].value())
    root = nuke.root()
    return int(root["first_frame"].value()), int(root["last_frame"].value())


def prepare(
    task: str,
    node: Any,
    matte: Any,
    first: int | None,
    last: int | None,
    handles: int,
    send: str,
    output_dir: str | None,
    address: str,
    params: dict[str, Any],
) -> Prepared:
    """Build the shot of ``node`` (and ``matte``): as paths when the server can read the
    source's files, otherwise as frames rendered through a temporary float EXR Write."""
    if node is None:
        raise HostError("select the node to process (its RGB is the source)")
    if send not in SEND_MODES:
        raise HostError(f"send: got {send!r}; accepted: {', '.join(SEND_MODES)}")
    if task == "upscale" and matte is not None:
        raise HostError("matte: upscaling takes no matte")
    first, last = frame_range(node, first, last, handles)
    out_root = Path(output_dir) if output_dir else settings.output_root(_beside(node))
    masks: Any = "alpha" if task == "inpaint" and matte is None else None
    prepared = Prepared(None, node, out_root)  # type: ignore[arg-type]
    n, paths, frames = last - first + 1, None, ()
    readable = _readable_sequence(node)
    if send == "paths" or (send == "auto" and readable and matte is None):
        if not readable or matte is not None:
            raise HostError(
                "send='paths' needs a Read of a float EXR sequence as the source and the matte "
                "in its alpha; use send='frames' for other nodes"
            )
        if not settings.is_local(address):
            raise HostError(
                f"send='paths': the server at {address} cannot read this machine's files"
            )
        links = input_links(out_root)
        files = [frame_file(node["file"].value(), f) for f in range(first, last + 1)]
        prepared.temp.append(link_frames(files, links))
        paths = {"frames": str(links), "masks": None}
    else:
        try:
            frames, mattes = _render(node, matte, task, first, last, prepared)
        except BaseException:
            prepared.cleanup()
            raise
        masks = mattes if mattes is not None else masks
    try:
        prepared.job = ShotJob(task, node.name(), first, n, dict(params), frames, masks, paths)
    except HostError:
        prepared.cleanup()
        raise
    return prepared


def _beside(node: Any) -> str | None:
    if node.Class() == "Read" and node["file"].value():
        return os.path.dirname(node["file"].value())
    script = nuke.root()["name"].value()
    return os.path.dirname(script) if script else None


def _readable_sequence(node: Any) -> bool:
    if node.Class() != "Read":
        return False
    file = node["file"].value()
    return file.lower().endswith(".exr") and is_sequence(file)


def _render(node: Any, matte: Any, task: str, first: int, last: int, prepared: Prepared):  # noqa: ANN202
    """Frames (and mattes) through temporary Write nodes: 32-bit float EXR, raw colour."""
    temp = Path(tempfile.mkdtemp(prefix="warpdiff-nuke-"))
    prepared.temp.append(temp)
    rgb_channels = "rgba" if task == "inpaint" and matte is None else "rgb"
    frames = _write_and_read(node, rgb_channels, temp / "source.####.exr", first, last)
    if task == "inpaint" and matte is None:
        check_mattes([f[..., 3] for f in frames], f"{node.name()}'s alpha (or select a matte)")
    mattes = None
    if matte is not None:
        mattes = _write_and_read(matte, "alpha", temp / "matte.####.exr", first, last)
        mattes = [m[..., -1:] for m in mattes]
        check_mattes(mattes, f"{matte.name()}'s alpha")
    return frames, mattes


def _write_and_read(node: Any, channels: str, pattern: Path, first: int, last: int) -> list:
    write = nuke.nodes.Write(
        file=str(pattern).replace(os.sep, "/"),
        file_type="exr",
        datatype="32 bit float",
        channels=channels,
        raw=True,
        create_directories=True,
    )
    write.setInput(0, node)
    try:
        nuke.execute(write, first, last, 1)
    finally:
        nuke.delete(write)
    return read_sequence(str(pattern), range(first, last + 1))


def make_read(prepared: Prepared, result: ShotResult) -> Any:
    """The result as a Read node beside the source, named for the shot, its key in a knob."""
    job, source = prepared.job, prepared.source
    read = nuke.nodes.Read(
        file=result.pattern.replace(os.sep, "/"),
        first=result.first,
        last=result.last,
        origfirst=result.first,
        origlast=result.last,
        raw=True,
        on_error="black",
    )
    read.setName(_unique(f"WD_{safe_name(source.name())}_{job.task}"))
    read["label"].setValue(job.label())
    key = nuke.String_Knob(KEY_KNOB, "shot key")
    read.addKnob(key)
    key.setValue(result.key)
    request = nuke.String_Knob(PARAMS_KNOB, "request")
    read.addKnob(request)
    request.setValue(repr(job.request()))
    read.setXYpos(source.xpos() + source.screenWidth() + 40, source.ypos())
    return read


def _unique(name: str) -> str:
    if nuke.toNode(name) is None:
        return name
    i = 2
    while nuke.toNode(f"{name}{i}") is not None:
        i += 1
    return f"{name}{i}"

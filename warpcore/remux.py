"""Copy a video input's audio into a video output, packet for packet (no re-encoding).

:func:`mux_with_audio` interleaves the freshly encoded video with the input's audio packets
in time order into the final file. Audio is cut to the frames written: packets starting at
or after the last written frame's end are dropped (a stopped job's output keeps the sound of
the frames it has). Audio keeps its offset from the first video frame.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from warpcore.video import VideoMeta


def _timed(
    container: object,
    streams: list[object],
    mapping: dict[int, object],
    shift: float,
    end_s: float | None,
) -> Iterator[tuple[float, int, object]]:
    """(time in s, tie-breaker, packet) of ``streams``, re-targeted to their output streams."""
    for packet in container.demux(streams):  # type: ignore[attr-defined]
        if packet.dts is None and packet.pts is None:
            continue  # the demuxer's flush packet
        ts = packet.pts if packet.pts is not None else packet.dts
        t = float(ts * packet.time_base) - shift
        if end_s is not None and t >= end_s - 1e-9:
            continue
        packet.stream = mapping[packet.stream.index]
        yield t, packet.stream.index, packet


def mux_with_audio(
    video_only: Path, meta: VideoMeta, dest: Path, n_frames: int, rate: Fraction
) -> int:
    """Write ``dest``: the video of ``video_only`` plus ``meta.path``'s audio streams, cut to
    ``n_frames`` at ``rate``. Returns the number of audio packets copied."""
    import av

    if meta.path is None or not meta.audio:
        raise ValueError("mux_with_audio: the input has no audio")
    end_s = n_frames / rate
    tmp = dest.with_name(f".{dest.name}.tmp{dest.suffix}")
    copied = 0
    try:
        with (
            av.open(str(video_only)) as vin,
            av.open(str(meta.path)) as ain,
            av.open(str(tmp), mode="w") as out,
        ):
            vstream = vin.streams.video[0]
            vout = out.add_stream_from_template(vstream)
            if meta.timecode:
                vout.metadata["timecode"] = meta.timecode
            audio = [ain.streams[i] for i in meta.audio]
            mapping = {s.index: out.add_stream_from_template(s) for s in audio}
            vmap = {vstream.index: vout}
            vstart = float(vstream.start_time * vstream.time_base) if vstream.start_time else 0.0
            merged = heapq.merge(
                _timed(vin, [vstream], vmap, vstart, None),
                _timed(ain, audio, mapping, meta.video_start_s, end_s),
                key=lambda item: item[0],
            )
            for _t, _index, packet in merged:
                is_audio = packet.stream is not vout
                if is_audio and meta.video_start_s:
                    offset = round(meta.video_start_s / packet.time_base)
                    packet.pts = None if packet.pts is None else packet.pts - offset
                    packet.dts = None if packet.dts is None else packet.dts - offset
                out.mux(packet)
                copied += int(is_audio)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dest)
    return copied

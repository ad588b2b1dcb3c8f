"""The result as a movie for editors who want one file: ProRes 422 HQ (.mov) or H.264 (.mp4).

Needs PyAV in the host's Python; the EXR sequence stays the reference output.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
from warpdiff_host.errors import HostError


def write_movie(path: Path, frames: Iterable[np.ndarray], fps: float) -> None:
    """Encode (H, W, 3|4) float frames in [0, 1]; written to a temp name, then renamed."""
    import av

    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    mov = path.suffix == ".mov"
    with av.open(str(tmp), mode="w") as container:
        stream = None
        for frame in frames:
            rgb = np.ascontiguousarray(frame[..., :3])
            h, w = rgb.shape[:2]
            if stream is None:
                if h % 2 or w % 2:
                    raise HostError(f"{path.name}: {w}x{h} is odd; movies need even sizes")
                codec = "prores_ks" if mov else "libx264"
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = w, h
                stream.pix_fmt = "yuv422p10le" if mov else "yuv420p"
                stream.options = {"profile": "3"} if mov else {"crf": "16"}
            if mov:
                q = np.rint(np.clip(rgb, 0, 1) * 65535).astype(np.uint16)
                video = av.VideoFrame.from_ndarray(q, format="rgb48le")
            else:
                q = np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
                video = av.VideoFrame.from_ndarray(q, format="rgb24")
            container.mux(stream.encode(video))
        if stream is not None:
            container.mux(stream.encode(None))
    tmp.replace(path)

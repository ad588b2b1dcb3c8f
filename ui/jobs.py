"""The panel's server work, as plain functions of a :class:`server.client.Client`.

Each blocks (it waits on the server), so the panel runs them with :func:`ui.workers.run_call`,
never on the GUI thread. Clips are read by the server (``read_clip``), in chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from server.client import Client, Shot
from ui.runs import Clip
from ui.workers import to_display

CHUNK = 32  # frames per read_clip / analyze request


def probe_clip(client: Client, path: str, matte: str | None) -> dict[str, Any]:
    """Size, rate and first frame of a clip (and of its matte, checked against it)."""
    reply = client.request("read_clip", {"path": path, "stop": 1, "dtype": "uint8"})
    info = dict(reply.body)
    info["first"] = reply.array(reply.body["frames"][0]) if reply.body["frames"] else None
    if matte and matte != "alpha":
        m = client.request("read_clip", {"path": matte, "stop": 1, "matte": True}).body
        if (m["height"], m["width"]) != (info["height"], info["width"]):
            raise ValueError(
                f"matte {matte} is {m['width']}x{m['height']} but the clip is "
                f"{info['width']}x{info['height']}; give a matte of the clip's size"
            )
        if m["n_frames"] not in (1, info["n_frames"]):
            raise ValueError(
                f"matte {matte} has {m['n_frames']} frames but the clip has {info['n_frames']}; "
                "give one matte per frame or a single image"
            )
    elif matte == "alpha" and not info["has_alpha"]:
        raise ValueError(f"matte 'alpha': {path} has no alpha channel; open a matte file instead")
    return info


def read_frames(client: Client, path: str, start: int, stop: int, matte: bool) -> list[np.ndarray]:
    """Frames [start, stop) of a clip on the server machine, float32, in chunks."""
    out: list[np.ndarray] = []
    i = start
    while i < stop:
        body = {"path": path, "start": i, "stop": min(stop, i + CHUNK), "matte": matte}
        body["dtype"] = "float32"  # the file's values exactly (16-bit and float files too)
        reply = client.request("read_clip", body)
        frames = [reply.array(d).astype(np.float32) for d in reply.body["frames"]]
        if not frames:
            break
        out += frames
        i += len(frames)
    return out


def prepare_and_submit(client: Client, clip: Clip, request: dict[str, Any]) -> dict[str, Any]:
    """Read the range, crop it, submit; the key and the inputs to show."""
    start, stop = clip.frame_range()
    if stop <= start:
        raise ValueError(f"range: start {start} must be before stop {stop}")
    frames = read_frames(client, clip.path, start, stop, False)
    masks: list[np.ndarray] | None = None
    if request.get("task") == "inpaint":
        if clip.matte == "alpha":
            masks = [f[..., 3:4] for f in frames]
        elif clip.matte:
            m0, m1 = (0, 1) if _single_matte(client, clip.matte) else (start, stop)
            masks = read_frames(client, clip.matte, m0, m1, True)
            masks = masks * len(frames) if len(masks) == 1 else masks
        else:
            raise ValueError("matte: inpainting needs a matte (a file, a folder, or 'alpha')")
    x, y, w, h = clip.crop_box()
    frames = [np.ascontiguousarray(f[y : y + h, x : x + w, :3]) for f in frames]
    if masks is not None:
        masks = [np.ascontiguousarray(m[y : y + h, x : x + w]) for m in masks]
    key = client.submit(Shot(request, frames, masks=masks))
    return {"key": key, "n_frames": len(frames), "inputs": [to_display(f) for f in frames]}


def _single_matte(client: Client, path: str) -> bool:
    return client.request("read_clip", {"path": path, "stop": 0}).body["n_frames"] == 1


def analyze_shot(client: Client, key: str, start: int = 0) -> dict[str, Any]:
    """Warping errors and heat maps of a shot's finished frames from ``start`` on (the server
    computes them); ``{frame: (warp_pixel_prev, e_warp, in the matte, heat map or None)}``
    and the heat maps' 99th percentile."""
    rows_out: dict[int, tuple[float | None, float | None, float | None, np.ndarray | None]] = {}
    p99 = 0.0
    while True:
        body = {"key": key, "start": start, "stop": start + CHUNK, "heatmaps": True}
        reply = client.request("analyze", body, timeout=120)
        rows = reply.body["frames"]
        if not rows:
            break
        for row in rows:
            heat = None
            if "heatmap" in row:
                heat = reply.array(row["heatmap"])[..., 0].astype(np.float32)
                p99 = max(p99, float(np.quantile(heat, 0.99)))
            values = (row["warp_pixel_prev"], row["e_warp"], row.get("warp_pixel_prev_matte"))
            rows_out[row["frame"]] = (*values, heat)
        start = rows[-1]["frame"] + 1
    return {"rows": rows_out, "p99": p99}

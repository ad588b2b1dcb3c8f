"""``warpdiff bench server --json``: what the protocol costs, and where a shot's time goes.

- ``hello_ms``: median round trip of ``hello`` (client thread -> I/O thread -> server -> back).
- ``mb_per_s``: float16 RGBA frames through ``echo``, **one way**: an echo carries the payload
  there and back, so one way is ``frame bytes / (median round trip / 2)``, in 1e6 bytes/s.
- ``split``: one shot with the built-in model (1920x1080 inpainting; ``--quick``: 256^2) after
  a warm-up shot that loads it, its time split into:

  - ``protocol_s``: serialisation and sockets, one way each: the submit's upload (submit round
    trip minus the server's check and store time, which it reports in ``submit_reply``) plus,
    per output frame, half the median echo round trip of a frame of that size;
  - ``cache_io_s``: storing the inputs, writing each frame and its resume state;
  - ``flow_propagation_s``: reading each input and filling its hole from nearby frames along
    the plate flows (the flows the restorer then reuses);
  - ``model_s``: ``restorer.process`` (denoiser steps, noise warping, guidance);
  - ``check_hash_s``: pixel checks and the content hash of the inputs;

  and each one's ``share`` of their sum. The worker reports its part per frame (``timing`` in
  frame events), so nothing here is inferred from wall time.

The server runs in its own process (``warpdiff serve``), as it does for hosts.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from warpcore.bench.common import machine
from warpcore.bench.schema import MACHINE, MapOf

_PARTS = {
    "protocol": float,
    "cache_io": float,
    "flow_propagation": float,
    "model": float,
    "check_hash": float,
}
SCHEMA = {
    "hello_ms": float,
    "mb_per_s": MapOf(float),
    "split": {
        "frames": int,
        "size": str,
        "wall_s": float,
        "seconds": {f"{k}_s": float for k in _PARTS},
        "share": _PARTS,
        "submit_upload_s": float,
        "output_one_way_s_per_frame": float,
    },
    "protocol_share": float,
    "note": str,
    "load_avg_1m": float,
    "machine": MACHINE,
}

SIZES = {"1024x1024": (1024, 1024), "1920x1080": (1080, 1920)}


def _hello_ms(client: Any, repeats: int) -> float:
    client.hello()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        client.hello()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _echo_s(client: Any, frame: np.ndarray, repeats: int) -> float:
    """Median round trip of ``frame`` through ``echo`` (seconds)."""
    client.echo([frame])  # warm-up: connection buffers, page faults
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        client.echo([frame])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _mb_per_s(client: Any, repeats: int) -> dict[str, float]:
    out = {}
    for name, (h, w) in SIZES.items():
        frame = np.random.default_rng(0).random((h, w, 4)).astype(np.float16)
        out[name] = round(frame.nbytes / (_echo_s(client, frame, repeats) / 2) / 1e6, 1)
    return out


def _plate(n: int, height: int, width: int, seed: int) -> tuple[list, list]:
    """``n`` frames of a smooth pattern panning 2 px a frame, with a moving square hole."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
    frames, masks = [], []
    for t in range(n):
        u = (xx + 2 * t) / width
        rgb = [
            0.5 + 0.4 * np.sin(2 * np.pi * u * (c + 2) + phase[c]) * (yy / height) for c in range(3)
        ]
        frames.append(np.stack(rgb, -1).astype(np.float32))
        mask = np.zeros((height, width, 1), np.float32)
        q = height // 4
        mask[q : 2 * q, width // 3 + 2 * t : width // 3 + 2 * t + q] = 1.0
        masks.append(mask)
    return frames, masks


def _split(client: Any, n: int, height: int, width: int, repeats: int) -> dict[str, Any]:
    from server.client import Shot

    frames, masks = _plate(n, height, width, seed=2)
    request = {"task": "inpaint", "model": "builtin", "seed": 2}
    t0 = time.perf_counter()
    key = client.submit(Shot(request, frames, masks))
    submit_s = time.perf_counter() - t0
    reply = client.last_submit
    parts = {"source_s": 0.0, "model_s": 0.0, "cache_s": 0.0}
    got = 0
    for event in client.events(key, timeout=3600):
        if event.kind == "frame":
            for name in parts:
                parts[name] += float(event.body.get("timing", {}).get(name, 0.0))
            got += 1
        elif event.kind in ("cancelled", "error"):
            raise RuntimeError(f"benchmark shot {event.kind}: {event.message}")
    wall_s = time.perf_counter() - t0
    if got != n:
        raise RuntimeError(f"expected {n} frames, got {got}")
    intake_s = float(reply.get("check_s", 0.0)) + float(reply.get("store_s", 0.0))
    out_one_way = _echo_s(client, frames[0], repeats) / 2  # an output frame: float32 RGB
    split = {
        "protocol_s": max(0.0, submit_s - intake_s) + n * out_one_way,
        "cache_io_s": float(reply.get("store_s", 0.0)) + parts["cache_s"],
        "flow_propagation_s": parts["source_s"],
        "model_s": parts["model_s"],
        "check_hash_s": float(reply.get("check_s", 0.0)),
    }
    total = sum(split.values())
    return {
        "frames": n,
        "size": f"{width}x{height}",
        "wall_s": round(wall_s, 3),
        "seconds": {k: round(v, 4) for k, v in split.items()},
        "share": {k.removesuffix("_s"): round(v / total, 5) for k, v in split.items()},
        "submit_upload_s": round(max(0.0, submit_s - intake_s), 4),
        "output_one_way_s_per_frame": round(out_one_way, 5),
    }


def run_benchmark(quick: bool = False, smoke: bool = False) -> dict[str, Any]:
    """Start a server process, measure, stop it; returns the JSON-able result."""
    from server.client import Client
    from server.testing import ServerProcess

    quick = quick or smoke
    repeats = 2 if smoke else 5 if quick else 15
    n, height, width = (2, 64, 64) if smoke else (2, 256, 256) if quick else (2, 1080, 1920)
    with (
        tempfile.TemporaryDirectory() as cache,
        ServerProcess(cache, "--model", "builtin", threads=None) as srv,
    ):
        with Client(srv.address, timeout=600) as client:
            hello_ms = _hello_ms(client, repeats * 5)
            mb_per_s = _mb_per_s(client, repeats)
            from server.client import Shot

            warm = _plate(2, 64, 64, seed=1)
            key = client.submit(Shot({"task": "inpaint", "model": "builtin"}, *warm))
            list(client.events(key, timeout=600))  # loads the model
            split = _split(client, n, height, width, repeats)
            client.shutdown()
        srv.terminate()
    return {
        "hello_ms": round(hello_ms, 3),
        "mb_per_s": mb_per_s,
        "split": split,
        "protocol_share": split["share"]["protocol"],
        "load_avg_1m": round(os.getloadavg()[0], 2),  # a shared machine: say how busy
        "machine": machine(),
        "note": "mb_per_s and protocol_s are one way (half an echo round trip); the split "
        "sums the worker's own per-frame timing and the submit's check and store times",
    }


def format_result(result: dict[str, Any]) -> str:
    mb = ", ".join(f"{k}: {v:.0f} MB/s" for k, v in result["mb_per_s"].items())
    split = result["split"]
    shares = ", ".join(f"{k} {100 * v:.2f}%" for k, v in split["share"].items())
    return (
        f"hello round trip {result['hello_ms']:.2f} ms; float16 RGBA frames one way {mb}; "
        f"a {split['size']} shot of {split['frames']} frames ({split['wall_s']:.1f} s): {shares}"
    )

"""``python -m server.bench_ofx``: what the OpenFX plugin adds, at 1920x1080 RGBA float (JSON).

- ``upload_mb_s``: "Process shot" through our OFX test host: the plugin reads ``frames``
  frames through the host, packs them and sends them in batches (``open_shot``,
  ``add_frames``, ``start_shot``; the plugin's defaults: up to 4 frames and 32 MiB a batch,
  so one 1080p float frame, with the server's ``batch_limit`` of batches in flight); input
  bytes (float32 RGBA) / wall time of the action, which ends when the server has stored
  every frame. The server has loaded its model first (``warm_up_s``: a 2-frame 64x64
  upload), as a running server has: the first ``open_shot`` loads it to plan the tile. The
  same upload from the Python client (``Client.upload``) is reported beside it.
  ``upload_split``: where the plugin's upload time went (ms in the host's image fetches, in
  packing, the rest waiting for the wire and the server; frame buffers allocated).
- ``cached_round_trip_ms``: renders of a frame the server has already made (a one-frame shot,
  so the worker is idle): the host's render action from entry to return (``get_frame`` on
  loopback, 25 MB back, unpacked into the host's float RGBA image); ``plugin_get_frame_ms`` /
  ``plugin_unpack_ms`` split it (the plugin's ``WD_OFX_TIMING`` diagnostics).
  ``first_render_s``: the render that made the frame (built-in model, 1 step, no
  propagation). ``python_client_get_frame_ms``: the same cached frame by the Python client
  (server + transport alone, for comparison).

The server runs in its own process (``warpdiff serve --model builtin``); the plugin and host
are built with ``server.ofx_build`` into ``build/ofx``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from server.ofx_build import REPO, build_ofx

H, W = 1080, 1920


def _clip(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.random((H, W, 4), dtype=np.float32)
    frames = np.repeat(base[None], n, 0)
    frames[..., 3] = 0.0
    frames[:, 500:540, 900:960, 3] = 1.0  # a small object to remove
    for t in range(n):
        frames[t, ..., 0] = np.roll(base[..., 0], t, 1)
    return frames


def _timings(stderr: str) -> list[tuple[float, float]]:
    """(get_frame ms, unpack ms) of each render, from the plugin's WD_OFX_TIMING lines."""
    found = re.findall(r"get_frame ([0-9.]+) ms, unpack ([0-9.]+) ms", stderr)
    return [(float(a), float(b)) for a, b in found]


def _upload_split(stderr: str) -> dict:
    """The plugin's upload diagnostics (WD_OFX_TIMING): ms in host fetches, in packing, in
    the rest (waiting for the wire and the server), and the frame buffers it allocated."""
    found = re.search(
        r"upload \d+ frames ([0-9.]+) ms: host fetch ([0-9.]+) ms, pack ([0-9.]+) ms, "
        r"rest \(server, wire\) ([0-9.-]+) ms; (\d+) buffers",
        stderr,
    )
    if not found:
        return {}
    total, fetch, pack, rest, buffers = found.groups()
    return {
        "host_fetch_ms": float(fetch),
        "plugin_pack_ms": float(pack),
        "server_and_wire_ms": float(rest),
        "buffers": int(buffers),
    }


def _host(host: Path, clip: Path, n: int, env: dict, *args: str) -> tuple[dict, str]:
    cmd = [str(host), "--input", str(clip), "--size", f"{n},{H},{W}", "--threads", "1", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout), done.stderr


def run(n_frames: int = 8, repeats: int = 7) -> dict:
    from server.client import Client
    from server.testing import ServerProcess

    build = build_ofx(REPO / "build" / "ofx")
    host = build / "ofx_testhost"
    result: dict = {"frame": f"{W}x{H} RGBA float32", "frames": n_frames}
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerProcess(Path(tmp) / "cache", "--model", "builtin", threads=None) as srv,
        Client(srv.address) as client,
    ):
        clip = _clip(n_frames)
        clip.tofile(Path(tmp) / "in.f32")
        clip[:1].tofile(Path(tmp) / "one.f32")
        env = dict(os.environ, OFX_PLUGIN_PATH=str(build), WD_OFX_TIMING="1")
        params = ["--param", f"server={srv.address}", "--param", "steps=1"]
        params += ["--param", "propagate=0", "--param", "timeout=60", "--process"]
        # 0. The server loads its model on the first open_shot (to plan the tile): once per
        #    server, not part of an upload's speed. A 2-frame 64x64 shot loads it first.
        t0 = time.perf_counter()
        warm = np.zeros((2, 64, 64, 4), np.float32)
        request = {"task": "inpaint", "steps": 1, "propagate": 0}
        client.cancel(client.upload(request, iter(warm), 2, "alpha", subscribe=False, timeout=600))
        result["warm_up_s"] = time.perf_counter() - t0
        # 1. Upload: Process shot of the whole clip, no render; then stop the shot it started.
        report, stderr = _host(host, Path(tmp) / "in.f32", n_frames, env, *params, "--no-render")
        result["upload_mb_s"] = clip.nbytes / report["process_s"] / 1e6
        result["upload_s"] = report["process_s"]
        result["upload_split"] = _upload_split(stderr)
        result["released_every_image"] = report["fetched"] == report["released"]
        client.cancel(report["shot"])
        # 2. A one-frame shot: its render makes the frame, the repeats read it from the cache
        #    while the worker is idle.
        one = Path(tmp) / "one.f32"
        args = (*params, "--frames", "0", "--repeat", "0")
        report, stderr = _host(host, one, 1, env, *args)
        result["first_render_s"] = report["renders"][0]["end"] - report["renders"][0]["start"]
        cached = [s * 1e3 for s in report["repeat_s"]]
        split = _timings(stderr)[1:]  # the first render made the frame
        while len(cached) < repeats:
            report, stderr = _host(host, one, 1, env, *args)
            cached += [s * 1e3 for s in report["repeat_s"]]
            split += _timings(stderr)
        result["cached_round_trip_ms"] = statistics.median(cached)
        result["cached_round_trip_ms_all"] = [round(v, 2) for v in cached]
        result["plugin_get_frame_ms"] = statistics.median(t[0] for t in split)
        result["plugin_unpack_ms"] = statistics.median(t[1] for t in split)
        client.get_frame(report["shot"] or _any_key(client), 0)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            client.get_frame(report["shot"] or _any_key(client), 0)
            times.append((time.perf_counter() - t0) * 1e3)
        result["python_client_get_frame_ms"] = statistics.median(times)
        t0 = time.perf_counter()
        key = client.upload(
            {"task": "inpaint", "seed": 1},
            iter(clip),
            n_frames,
            "alpha",
            subscribe=False,
            timeout=120,
        )
        result["python_client_upload_mb_s"] = clip.nbytes / (time.perf_counter() - t0) / 1e6
        client.cancel(key)
    result["targets"] = {"upload_mb_s": 500, "cached_round_trip_ms": 20}
    result["cpus"] = os.cpu_count()
    result["load_average"] = os.getloadavg()
    return result


def _any_key(client: object) -> str:
    return next(s["key"] for s in client.list_shots() if s["done"] > 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.bench_ofx", description=__doc__)
    parser.add_argument("--frames", type=int, default=8, help="frames uploaded (33 MB each)")
    parser.add_argument("--repeats", type=int, default=7, help="cached renders to time")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.frames, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

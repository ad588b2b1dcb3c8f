"""``warpdiff bench server --json``: what the protocol costs on loopback.

- ``hello_ms``: median round trip of ``hello`` (client thread -> I/O thread -> server -> back).
- ``mb_per_s``: float16 RGBA frames through ``echo``; the payload crosses the wire twice per
  round trip (client -> server -> client), and both crossings are counted:
  ``2 * frame bytes / median round-trip time``, in 1e6 bytes per second.
- ``transport_share``: a whole shot with the built-in model (after a warm-up shot that loads
  it): ``(wall time from submit to the last frame - time inside the model) / wall time``.
  Everything that is not the model counts against the protocol (upload, cache writes, events,
  frame delivery), so this is an upper bound on the protocol's share.

The server runs in its own process (``warpdiff serve``), as it does for hosts.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import numpy as np

SIZES = {"1024x1024": (1024, 1024), "1920x1080": (1080, 1920)}


def _hello_ms(client: Any, repeats: int) -> float:
    client.hello()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        client.hello()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _mb_per_s(client: Any, repeats: int) -> dict[str, float]:
    out = {}
    for name, (h, w) in SIZES.items():
        frame = np.random.default_rng(0).random((h, w, 4)).astype(np.float16)
        client.echo([frame])  # warm-up: connection buffers, page faults
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            client.echo([frame])
            times.append(time.perf_counter() - t0)
        out[name] = round(2 * frame.nbytes / statistics.median(times) / 1e6, 1)
    return out


def _shot(client: Any, n: int, size: int, steps: int, seed: int) -> dict[str, float]:
    from server.client import Shot
    from server.testing import tiny_shot

    frames, masks = tiny_shot(n, size, seed=seed)
    request = {"task": "inpaint", "model": "builtin", "steps": steps, "seed": seed}
    t0 = time.perf_counter()
    key = client.submit(Shot(request, frames, masks))
    submit_s = time.perf_counter() - t0
    compute_s, got = 0.0, 0
    for event in client.events(key, timeout=600):
        if event.kind == "frame":
            compute_s += float(event.body.get("compute_s", 0.0))
            got += 1
        elif event.kind in ("cancelled", "error"):
            raise RuntimeError(f"benchmark shot {event.kind}: {event.message}")
    wall_s = time.perf_counter() - t0
    assert got == n, f"expected {n} frames, got {got}"
    overhead_ms = (wall_s - compute_s) * 1e3  # everything outside the model
    return {"wall_s": wall_s, "compute_s": compute_s, "submit_ms": submit_s * 1e3,
            "overhead_ms": overhead_ms}  # fmt: skip


def run_benchmark(quick: bool = False, smoke: bool = False) -> dict[str, Any]:
    """Start a server process, measure, stop it; returns the JSON-able result."""
    from server.client import Client
    from server.testing import ServerProcess

    repeats = 5 if quick else 20
    shot = {"n": 2, "size": 32, "steps": 2} if quick else {"n": 8, "size": 128, "steps": 10}
    with (
        tempfile.TemporaryDirectory() as cache,
        ServerProcess(cache, "--model", "builtin", threads=None) as srv,
    ):
        with Client(srv.address, timeout=120) as client:
            hello_ms = _hello_ms(client, repeats * 5)
            mb_per_s = _mb_per_s(client, repeats)
            _shot(client, 2, 32, 2, seed=1)  # loads the model
            timing = _shot(client, shot["n"], shot["size"], shot["steps"], seed=2)
            client.shutdown()
        srv.terminate()
    share = (timing["wall_s"] - timing["compute_s"]) / timing["wall_s"]
    return {
        "hello_ms": round(hello_ms, 3),
        "mb_per_s": mb_per_s,
        "transport_share": round(share, 4),
        "shot": {**shot, **{k: round(v, 3) for k, v in timing.items()}},
        "note": "mb_per_s counts both directions of an echo round trip; transport_share "
        "counts everything outside the model (an upper bound)",
    }


def format_result(result: dict[str, Any]) -> str:
    mb = ", ".join(f"{k}: {v:.0f} MB/s" for k, v in result["mb_per_s"].items())
    return (
        f"hello round trip {result['hello_ms']:.2f} ms; float16 RGBA frames {mb}; "
        f"transport share of a shot {100 * result['transport_share']:.2f}% "
        f"({result['shot']['n']} frames of {result['shot']['size']}^2, "
        f"{result['shot']['steps']} steps)"
    )

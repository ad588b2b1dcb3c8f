"""``warpdiff bench ray --json``: frames per second of one shot on 1 and 2 Ray workers, and what
a chunk seam costs in warping error against the sequential run.

Throughput: an in-process ``--ray`` server (this module starts a local Ray cluster with 2 CPUs,
or joins ``RAY_ADDRESS``), CPU actors with one torch thread each (GPU actors on a GPU cluster),
one warm flow actor, the same upscaling shot (the motion-sr suite's first clip, built-in
model, its defaults) and the same settings (default chunk size and overlap) for every worker
count: one worker runs the shot whole (``plan_chunks``), two run it in two chunks of equal
work. Actors are warmed on short shots first; the clock runs from submit to the last frame,
flows included. The counts alternate, ``WARPDIFF_BENCH_REPEATS`` times (default 3), and fps
is the median. ``phases``: each chunk of each count's last run, when it started and ended and
the actor's seconds by phase (wall and CPU; ``server.cluster.PhaseClock``). Speed depends on
the machine's load: ``load_average_before`` / ``load_average`` say what it was; on a shared
machine ``actor_cpu_speedup_2`` (CPU seconds, not time) says what the plan would give with a
core per actor. With ``RAY_ADDRESS`` and ``WARPDIFF_BENCH_WORKERS=1,2,4,8`` it is the scaling
bench.

Seams: the evaluation suites' clips (motion-sr, and motion-inpaint with crop and propagation
off, the inpainting that chunks), restored sequentially and in chunks (the same code the actors
run, in this process); the warping error (``warp_pixel_prev``, exact flows) of the frames at
each seam and the one after it, summed, over the sequential run's at the same frames, per
overlap. ``seam_warp_error_ratio`` is that ratio at the defaults (1.0: the seam costs nothing).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

from warpcore.bench.schema import NUMBER, MapOf
from warpcore.chunks import DEFAULT_CHUNK, DEFAULT_OVERLAP, as_flow_fn, flows_between, plan_chunks
from warpcore.chunks import run_chunk as run_chunk_frames

SCHEMA = {
    "workers": MapOf(NUMBER),
    "speedup_2": NUMBER,
    "seam_warp_error_ratio": NUMBER,
    "actor_cpu_speedup_2": NUMBER,
    "chunk": int,
    "overlap": int,
    "frames": int,
    "size": str,
    "shot": str,
    "runs": MapOf(list),
    "settings": {
        "chunk": int,
        "overlap": int,
        "threads": (int, None),
        "cpus_per_actor": NUMBER,
        "flow_actors": int,
        "flow_cpus": NUMBER,
        "cluster": str,
    },
    "phases": MapOf({"seconds": NUMBER, "chunks": list}),
    "seam_by_overlap": MapOf(MapOf(NUMBER)),
    "load_average": {"1m": NUMBER, "5m": NUMBER, "15m": NUMBER},
    "load_average_before": {"1m": NUMBER, "5m": NUMBER, "15m": NUMBER},
    "cluster": str,
}


def run_benchmark(quick: bool = False, smoke: bool = False) -> dict[str, Any]:
    from warpcore.suites import SuiteConfig, suite_clips

    frames = 6 if smoke else (16 if quick else 32)
    size = (32, 32) if smoke else (64, 64)
    # The throughput shot is larger than the seam clips: at 64x64 a frame takes ~0.1 s and the
    # per-chunk overheads (Ray calls, the flow tasks, events) hide the scaling being measured.
    shot_size = size if smoke else ((64, 64) if quick else (128, 128))
    sr = suite_clips("motion-sr", SuiteConfig(clips=1, frames=frames, size=shot_size, scales=(2,)))[
        0
    ]
    seam_frames = 6 if smoke else 16
    chunk = 3 if smoke else DEFAULT_CHUNK
    seam_k = 3 if smoke else 6  # short chunks for the seam measurement: many seams per clip
    overlaps = (0, DEFAULT_OVERLAP) if smoke else (0, 1, 2, 4)
    seams = _seam_ratios(seam_frames, size, seam_k, overlaps)
    at_default = seams[str(DEFAULT_OVERLAP)]["mean"]
    repeats = int(os.environ.get("WARPDIFF_BENCH_REPEATS", "1" if smoke or quick else "3"))
    load_before = os.getloadavg()
    runs, settings, phases = _throughput(sr, chunk, DEFAULT_OVERLAP, repeats)
    fps = {w: float(np.median(v)) for w, v in runs.items()}
    cpu = {w: _busiest_actor_cpu(p) for w, p in phases.items()}
    return {
        "workers": {str(w): v for w, v in fps.items()},
        "speedup_2": fps.get(2, 0.0) / fps[min(fps)],
        "seam_warp_error_ratio": at_default,
        # Not a throughput: the speedup if every actor had a core to itself and nothing else
        # ran (actor CPU seconds, the 1-worker run's over the busiest actor's of the 2-worker
        # run; the last repeat's), which a loaded machine cannot show in fps.
        "actor_cpu_speedup_2": cpu[str(min(fps))] / cpu["2"] if "2" in cpu else 0.0,
        "chunk": chunk,
        "overlap": DEFAULT_OVERLAP,
        "frames": frames,
        "size": f"{shot_size[0] // 2}x{shot_size[1] // 2} -> {shot_size[0]}x{shot_size[1]}",
        "shot": f"motion-sr clip 0, {frames} frames, built-in model, upscale x2, flow dis, "
        "the model's default steps and guidance; the same shot and settings for every count",
        "runs": {str(w): v for w, v in runs.items()},
        "settings": settings,
        "phases": phases,
        "seam_by_overlap": seams,
        "load_average": dict(zip(("1m", "5m", "15m"), os.getloadavg(), strict=True)),
        "load_average_before": dict(zip(("1m", "5m", "15m"), load_before, strict=True)),
        "cluster": settings["cluster"],
    }


def format_result(result: dict[str, Any]) -> str:
    fps = ", ".join(f"{w} workers {v:.2f} fps" for w, v in result["workers"].items())
    return (
        f"{fps}; speedup at 2: {result['speedup_2']:.2f}; seam warping error ratio "
        f"{result['seam_warp_error_ratio']:.3f} (chunk {result['chunk']}, overlap "
        f"{result['overlap']}); load average {result['load_average']['1m']:.1f}"
    )


# -- seams --------------------------------------------------------------------------------------
def _seam_ratios(
    n: int, size: tuple[int, int], k: int, overlaps: tuple[int, ...]
) -> dict[str, dict[str, float]]:
    import torch

    from warpcore.evaluate import ExactFlowScorer
    from warpcore.models import load_denoiser
    from warpcore.request import RestoreRequest
    from warpcore.suites import SuiteConfig, suite_clips

    torch.set_num_threads(1)
    cases = [
        ("motion-sr", {"task": "upscale", "scale": 2}, (2,)),
        ("motion-inpaint", {"task": "inpaint", "crop": False, "propagate": 0}, (4,)),
    ]
    out: dict[str, dict[str, float]] = {str(o): {} for o in overlaps}
    for suite, fields, scales in cases:
        clip = suite_clips(suite, SuiteConfig(clips=1, frames=n, size=size, scales=scales))[0]
        request = RestoreRequest(**fields, flow="dis")
        denoiser = load_denoiser(request.model, request.task)
        inputs = [np.asarray(f, np.float32) for f in clip.inputs]
        masks = [np.asarray(m, np.float32) for m in clip.masks] if clip.masks is not None else None

        def source(i: int, inputs=inputs, masks=masks) -> tuple[np.ndarray, np.ndarray | None]:
            return inputs[i], None if masks is None else masks[i]

        flows = {
            j: flows_between(request, denoiser.downscale, source(j - 1), source(j))
            for j in range(1, n)
        }

        def errors(chunk: int, overlap: int, clip=clip, request=request, denoiser=denoiser,
                   flows=flows, source=source) -> list[float]:  # fmt: skip
            from warpcore.restore import ClipRestorer

            frames: dict[int, np.ndarray] = {}
            for c in plan_chunks(list(range(n)), chunk, overlap):
                r = ClipRestorer(request, denoiser, source(0)[0].shape[:2], n, as_flow_fn(flows))
                for i, f in run_chunk_frames(r, c, source, flows):
                    if i >= c.start:
                        frames[i] = f
            scorer = ExactFlowScorer(clip.forward, clip.backward)
            for i in range(n):
                scorer.add(frames[i], frames[i])
            return [v or 0.0 for v in scorer.per_frame["warp_pixel_prev"]]

        sequential = errors(n, 0)
        seam_at = [s + d for s in range(k, n, k) for d in (0, 1) if s + d < n]
        for o in overlaps:
            chunked = errors(k, o)
            base = max(sum(sequential[i] for i in seam_at), 1e-12)
            out[str(o)][suite] = sum(chunked[i] for i in seam_at) / base
    for row in out.values():
        row["mean"] = float(np.mean(list(row.values())))
    return out


# -- throughput ----------------------------------------------------------------------------------
def _throughput(
    clip: Any, chunk: int, overlap: int, repeats: int
) -> tuple[dict[int, list[float]], dict[str, Any], dict[str, Any]]:
    """fps per worker count (one per repeat; the counts alternate within a repeat, so a load
    that drifts hits them alike), the settings, and the phases of each count's last run."""
    import ray

    from server.cluster import ClusterConfig

    address = os.environ.get("RAY_ADDRESS")
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, logging_level="ERROR")
        else:
            ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
                     logging_level="ERROR")  # fmt: skip
            started = True
    workers = [int(w) for w in os.environ.get("WARPDIFF_BENCH_WORKERS", "1,2").split(",")]
    gpus = ray.cluster_resources().get("GPU", 0.0)
    frames = [np.asarray(f, np.float32) for f in clip.inputs]
    request = {"task": "upscale", "scale": clip.scale, "flow": "dis"}
    # The same settings for every worker count; only the number of chunk actors differs (one
    # actor runs the shot whole: warpcore.chunks.plan_chunks).
    settings = {
        "chunk": chunk,
        "overlap": overlap,
        "threads": None if gpus else 1,
        "cpus_per_actor": 1.0 if gpus else 0.75,
        "flow_actors": 1,
        "flow_cpus": 0.5,
    }
    fps: dict[int, list[float]] = {w: [] for w in workers}
    phases: dict[str, Any] = {}
    try:
        for _ in range(repeats):
            for w in workers:
                config = ClusterConfig(actors=w, **settings)
                rate, phases[str(w)] = _one_run(config, request, frames)
                fps[w].append(rate)
    finally:
        if started:
            ray.shutdown()
    where = address or "local (ray.init num_cpus=2)"
    return fps, {**settings, "cluster": f"{where}; {gpus:g} GPUs"}, phases


def _busiest_actor_cpu(phases: dict[str, Any]) -> float:
    """CPU seconds of the actor that computed the most in a run (its chunks' totals)."""
    per_actor: dict[int, float] = {}
    for c in phases["chunks"]:
        per_actor[c["actor"]] = per_actor.get(c["actor"], 0.0) + c["cpu"]["total"]
    return max(per_actor.values(), default=0.0)


def _one_run(config: Any, request: dict[str, Any], frames: list[np.ndarray]) -> tuple[float, Any]:
    """A fresh ``--ray`` server with ``config``: its actors warmed on short shots (one per
    actor, side by side), then the shot timed from submit to its last event, flows included."""
    from server.client import Client, Shot
    from server.testing import running_server

    n = len(frames)
    with tempfile.TemporaryDirectory() as cache, running_server(cache, ray=config) as srv:
        with Client(srv.address, timeout=600) as client:
            warm = [
                client.submit(Shot({**request, "seed": 1000 + k}, frames[:2], None))
                for k in range(config.actors)
            ]
            for key in warm:
                list(client.events(key, timeout=600))
            t0 = time.perf_counter()
            key = client.submit(Shot(request, frames, None))
            events = list(client.events(key, timeout=1800))
            elapsed = time.perf_counter() - t0
        if events[-1].kind != "finished":
            raise RuntimeError(f"bench shot ended with {events[-1].kind}")
        timeline = [r for r in srv.worker.timeline if r["key"] == key and "phases" in r]
    return n / elapsed, {"seconds": round(elapsed, 3), "chunks": [_chunk_row(r) for r in timeline]}


def _chunk_row(record: dict[str, Any]) -> dict[str, Any]:
    """One chunk's line in the JSON: what it ran, when (seconds since submit), and the actor's
    seconds by phase (server.cluster.PhaseClock), wall and CPU."""
    start, stop, warm = record["chunk"]
    ph = record["phases"]
    return {
        "actor": record["slot"],
        "frames": [start, stop],
        "warm_from": warm,
        "dispatch_s": round(record["dispatch"], 3),
        "first_frame_s": round(record.get("first_frame", float("nan")), 3),
        "end_s": round(record["end"], 3),
        "wall": {k: round(v, 3) for k, v in ph["wall"].items()},
        "cpu": {k: round(v, 3) for k, v in ph["cpu"].items()},
    }


# -- the choice of the default chunk size and overlap ---------------------------------------------
def chunk_size_grid(
    ks: tuple[int, ...] = (4, 8, 16),
    overlaps: tuple[int, ...] = (0, 1, 2, 4),
    startup: float = 0.3,
) -> dict[str, Any]:
    """What ``DEFAULT_CHUNK`` and ``DEFAULT_OVERLAP`` were chosen from
    (``python -m server.bench_ray``): the seam cost per chunk size and overlap (32-frame clips,
    64 px), and per chunk size the parallel efficiency of the plan at the default overlap: on
    a busy cluster (K / (K + overlap + startup)) and for one shot alone (N = 24..240 frames on
    A = 2..8 actors, chunks run first come first served). ``startup``: a chunk's start-up in
    frame times (the phases of ``warpdiff bench ray``: setup, first flows and fast-forward CPU
    over the model's CPU per frame: about 0.3)."""
    import heapq

    def alone(k: int) -> float:
        effs = []
        for n in (24, 48, 72, 96, 144, 240):
            for a in (2, 4, 8):
                free = [0.0] * a
                for c in plan_chunks(list(range(n)), k, DEFAULT_OVERLAP, workers=a):
                    t = heapq.heappop(free) + (c.stop - c.warm) + (startup if c.warm else 0.0)
                    heapq.heappush(free, t)
                effs.append(n / (a * max(free)))
        return float(np.mean(effs))

    efficiency = {
        str(k): {"busy": k / (k + DEFAULT_OVERLAP + startup), "alone": alone(k)}
        for k in (8, 12, 14, 16, 18, 20, 22, 24, 32)
    }
    seams = {str(k): _seam_ratios(32, (64, 64), k, overlaps) for k in ks}
    return {"seam_by_chunk": seams, "efficiency_by_chunk": efficiency}


if __name__ == "__main__":
    import json

    print(json.dumps(chunk_size_grid(), indent=1))

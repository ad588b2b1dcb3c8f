"""``warpdiff bench soak --json``: well-behaved clients run shots while hostile ones attack.

For a fixed time (``--seconds``, default 60; ``--quick``: 6), against ``warpdiff serve`` in its
own process (a small cache limit, 8 MiB parts):

- ``clients`` well-behaved clients submit small shots one after another (retrying a
  ``queue_full`` later) and read every event; each shot's frames must arrive exactly once, in
  order;
- a heartbeat client sends ``heartbeat`` every 20 ms and times each round trip, first for a
  calm period (the clients alone: what the machine itself gives), then during the attack;
- hostile peers: *malformed* (random bytes, bad envelopes and bodies, odd keys, NaN pixels,
  paths outside the allowed roots), *oversized* (a 32 MiB part, refused by ZeroMQ), *amplifying*
  (one part named by 200 descriptors) and *never-reading* (4 MiB ``echo``s, replies never read).

It reports delivery (exactly once or not), heartbeat p50/p99, server RSS and cache bytes at the
start (after a warm-up shot), peak and end (after the attack stopped and the hostile peers
left), and whether the issue's targets were met: p99 < 100 ms, peak RSS < start + 1 GB, end
RSS within 100 MB of the start, cache never above its limit.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from server.protocol import array_part, encode
from warpcore.bench.schema import MACHINE, MapOf

FAST = {
    "task": "inpaint",
    "model": "gaussian",
    "steps": 2,
    "noise": "fixed",
    "guidance": 0.0,
    "flow": "dis-ultrafast",
    "propagate": 0,
}
MB = 2**20

_STATS = {"start": float, "peak": float, "end": float}
SCHEMA = {
    "seconds": float,
    "clients": int,
    "shots": int,
    "frames_delivered": int,
    "exactly_once": bool,
    "duplicates": int,
    "missing": int,
    "queue_full_retries": int,
    "heartbeat_ms": {"p50": float, "p99": float, "max": (float, None), "n": int},
    "heartbeat_calm_ms": {"p50": float, "p99": float, "n": int},
    "rss_mb": _STATS,
    "cache_mb": {**_STATS, "limit": float, "held_peak": float},
    "hostile_sent": MapOf(int),
    "server": MapOf((int, float)),
    "targets_met": MapOf(bool),
    "load_avg_1m": float,
    "machine": MACHINE,
}


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n


def _good_client(address: str, seed: int, stop: threading.Event, out: dict, n: int) -> None:
    from server.client import Client, ServerError, Shot
    from server.testing import tiny_shot

    shots, duplicates, missing, refused = 0, 0, 0, 0
    with Client(address, timeout=60) as client:
        while not stop.is_set():
            frames, masks = tiny_shot(n, 32, seed=seed)
            seed += 1000
            try:
                key = client.submit(Shot(FAST, frames, masks))
            except ServerError as exc:
                if exc.code != "queue_full":
                    raise
                refused += 1
                time.sleep(0.2)
                continue
            got = [e.frame for e in client.events(key, timeout=120) if e.kind == "frame"]
            duplicates += len(got) - len(set(got))
            missing += len(set(range(n)) - set(got))
            shots += 1
    out.update(shots=shots, duplicates=duplicates, missing=missing, refused=refused)


def _heartbeats(address: str, stop: threading.Event, times: list[tuple[float, float]]) -> None:
    """(sent at, round trip seconds) of a heartbeat every 20 ms until ``stop``."""
    from server.client import Client

    with Client(address, timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.heartbeat()
            times.append((t0, time.perf_counter() - t0))
            time.sleep(0.02)


def _socket(context: zmq.Context, address: str, **options: int) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(address)
    return sock


def _drain(sock: zmq.Socket) -> None:
    while sock.poll(0):
        sock.recv_multipart()


def _malformed(address: str, stop: threading.Event, sent: _Counter) -> None:
    rng = np.random.default_rng(7)
    bad = np.full((32, 32, 3), np.nan, np.float32)
    desc, buf = array_part(bad, 0)
    messages = [
        lambda: [rng.bytes(int(rng.integers(1, 2000)))],
        lambda: [msgpack.packb({"v": 1, "type": "submit", "id": 3, "body": [1, 2]})],
        lambda: encode("status", {"key": "a" * 300}),
        lambda: encode("get_frame", {"key": "../" * 20, "frame": -1}),
        lambda: encode("submit", {"request": {"task": "upscale"}, "paths": {"frames": "/etc"}}),
        lambda: encode(
            "submit", {"request": {**FAST, "task": "upscale"}, "frames": [desc]}, parts=[buf]
        ),
        lambda: encode("submit", {"request": {**FAST, "model": "/etc"}, "frames": []}),
        lambda: encode("no_such_type", {}),
    ]  # fmt: skip
    context = zmq.Context()
    sock = _socket(context, address)
    try:
        while not stop.is_set():
            sock.send_multipart(messages[int(rng.integers(len(messages)))]())
            sent.add("malformed")
            _drain(sock)
            time.sleep(0.005)
    finally:
        sock.close(0)
        context.term()


def _oversized(address: str, stop: threading.Event, sent: _Counter) -> None:
    big = np.zeros(32 * MB, np.uint8)
    desc = {"part": 0, "dtype": "uint8", "shape": [4096, 8192, 1]}
    context = zmq.Context()
    try:
        while not stop.is_set():
            sock = _socket(context, address)  # ZeroMQ disconnects it: a fresh one each time
            sock.send_multipart(encode("echo", {"arrays": [desc]}, parts=[big]), copy=False)
            sent.add("oversized")
            time.sleep(0.25)
            sock.close(0)
    finally:
        context.term()


def _amplifying(address: str, stop: threading.Event, sent: _Counter) -> None:
    frame = np.random.default_rng(1).random((256, 256, 3)).astype(np.float32)
    desc, buf = array_part(frame, 0)
    body = {"request": {**FAST, "task": "upscale"}, "frames": [desc] * 200}
    context = zmq.Context()
    sock = _socket(context, address)
    try:
        while not stop.is_set():
            sock.send_multipart(encode("submit", body, parts=[buf]), copy=False)
            sent.add("amplifying")
            _drain(sock)
            time.sleep(0.05)
    finally:
        sock.close(0)
        context.term()


def _never_reading(address: str, stop: threading.Event, sent: _Counter) -> None:
    part = np.zeros(4 * MB, np.uint8)
    desc = {"part": 0, "dtype": "uint8", "shape": [2048, 2048, 1]}
    context = zmq.Context()
    sock = _socket(context, address, RCVHWM=1, RCVBUF=65536, SNDHWM=4)
    try:
        while not stop.is_set():
            try:
                sock.send_multipart(encode("echo", {"arrays": [desc]}, parts=[part]), zmq.NOBLOCK)
                sent.add("never_reading")
            except zmq.Again:
                pass
            time.sleep(0.01)
    finally:
        sock.close(0)
        context.term()


def _run_hostile(address: str, calm: float, seconds: float, out: Any) -> None:
    """Child process: after ``calm`` seconds, every hostile peer for ``seconds``; puts the
    counts and the attack's start (perf_counter, one clock for the machine) on ``out``."""
    time.sleep(calm)
    attack, sent = threading.Event(), _Counter()
    began = time.perf_counter()
    hostile = [
        threading.Thread(target=f, args=(address, attack, sent))
        for f in (_malformed, _oversized, _amplifying, _never_reading)
    ]
    for t in hostile:
        t.start()
    time.sleep(seconds)
    attack.set()
    for t in hostile:
        t.join(30)
    out.put((dict(sent.counts), began))


def _run_clients(address: str, seconds: float, clients: int, n: int, out: Any) -> None:
    """Child process: ``clients`` well-behaved clients for ``seconds``; puts their results."""
    stop = threading.Event()
    results: list[dict] = [{} for _ in range(clients)]
    threads = [
        threading.Thread(target=_good_client, args=(address, 10 * i, stop, results[i], n))
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(180)
    out.put(results)


def _sample(pid: int, cache: Path, stop: threading.Event, rss: list, disk: list) -> None:
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss.append(int(line.split()[1]) * 1024)
        disk.append(_disk_snapshot(cache))
        time.sleep(0.05)


def _disk_snapshot(root: Path) -> int:
    """Bytes of the files under ``root`` that all exist at the end of one walk.

    A plain walk is not a snapshot: a shot counted early in the walk may be evicted to make
    room for frames that a later folder of the same walk then shows, so it adds up bytes that
    were never on the disk together (about one tiny frame over the limit, once in a while).
    Counting only the files still there (same inode) after the walk gives bytes that were all
    present at that moment: never more than the disk held."""
    found: list[tuple[str, int]] = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                found.append((path, os.lstat(path).st_ino))
    total, seen = 0, set()
    for path, ino in found:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if st.st_ino == ino and ino not in seen:
            seen.add(ino)
            total += st.st_size
    return total


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_benchmark(
    quick: bool = False, smoke: bool = False, seconds: float | None = None
) -> dict[str, Any]:
    """Start a server, attack it for ``seconds`` while clients work; returns the report.

    ``quick``: 6 s, one client; ``smoke``: 3 s, one client."""
    from server.client import Client, Shot
    from server.testing import ServerProcess, tiny_shot

    seconds = float(seconds if seconds is not None else (3 if smoke else 6 if quick else 60))
    calm = min(10.0, seconds / 3)  # clients alone first: the machine's own heartbeat latency
    clients, n = (1, 3) if quick or smoke else (3, 4)
    limit_gb = 0.005  # small enough that finished shots get evicted
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        args = ("--model", "gaussian", "--max-part-mb", "8", "--cache-max-gb", str(limit_gb))
        with ServerProcess(cache, *args, "--allow-paths", tmp) as srv:
            with Client(srv.address, timeout=60) as c:  # warm-up: model, flow, first shot
                key = c.submit(Shot(FAST, *tiny_shot(2, 32, seed=99)))
                list(c.events(key, timeout=60))
            time.sleep(0.5)
            rss: list[int] = []
            disk: list[int] = []
            sampler_stop = threading.Event()
            sampler = threading.Thread(
                target=_sample, args=(srv.pid, cache, sampler_stop, rss, disk)
            )
            sampler.start()
            time.sleep(0.2)
            start_rss, start_disk = rss[-1], disk[-1]
            # hostile peers and well-behaved clients in their own processes: the heartbeat
            # times measure the server, not this process's interpreter lock
            spawn = multiprocessing.get_context("spawn")
            queue = spawn.Queue()
            good_queue = spawn.Queue()
            procs = [
                spawn.Process(target=_run_hostile, args=(srv.address, calm, seconds, queue)),
                spawn.Process(
                    target=_run_clients,
                    args=(srv.address, calm + seconds, clients, n, good_queue),
                ),
            ]
            stop = threading.Event()
            times: list[tuple[float, float]] = []
            beater = threading.Thread(target=_heartbeats, args=(srv.address, stop, times))
            for p in procs:
                p.start()
            beater.start()
            sent, began = queue.get(timeout=calm + seconds + 120)
            results = good_queue.get(timeout=calm + seconds + 300)
            stop.set()
            beater.join(30)
            for p in procs:
                p.join(30)
            time.sleep(2.0)  # the hostile peers are gone: their memory should be back
            with Client(srv.address, timeout=30) as c:
                info = c.status()
            end_rss, end_disk = rss[-1], disk[-1]
            sampler_stop.set()
            sampler.join()
            srv.terminate()
    shots = sum(r.get("shots", 0) for r in results)
    duplicates = sum(r.get("duplicates", 0) for r in results)
    missing = sum(r.get("missing", 0) for r in results)
    beats = [dt for t0, dt in times if began <= t0 <= began + seconds]
    calm_beats = [dt for t0, dt in times if t0 < began]
    p50, p99 = _pct(beats, 0.5) * 1e3, _pct(beats, 0.99) * 1e3
    limit = int(limit_gb * 2**30)
    result = {
        "seconds": seconds,
        "clients": clients,
        "shots": shots,
        "frames_delivered": shots * n,
        "exactly_once": shots > 0 and duplicates == 0 and missing == 0,
        "duplicates": duplicates,
        "missing": missing,
        "queue_full_retries": sum(r.get("refused", 0) for r in results),
        "heartbeat_ms": {
            "p50": round(p50, 2),
            "p99": round(p99, 2),
            "max": round(max(beats) * 1e3, 2) if beats else None,
            "n": len(beats),
        },
        "heartbeat_calm_ms": {  # before the attack, the same clients: what the machine gives
            "p50": round(_pct(calm_beats, 0.5) * 1e3, 2),
            "p99": round(_pct(calm_beats, 0.99) * 1e3, 2),
            "n": len(calm_beats),
        },
        "rss_mb": {
            "start": round(start_rss / MB, 1),
            "peak": round(max(rss) / MB, 1),
            "end": round(end_rss / MB, 1),
        },
        "cache_mb": {
            "start": round(start_disk / MB, 2),
            "peak": round(max(disk) / MB, 2),
            "end": round(end_disk / MB, 2),
            "limit": round(limit / MB, 2),
            # the server's own count: stored + reserved, the most it ever held at once
            "held_peak": round(info["cache"]["held_peak_bytes"] / MB, 2),
        },
        "hostile_sent": sent,
        "server": {
            "dropped_peers": info["dropped_peers"],
            "loop_stall_max_ms": info["loop_stall_max_ms"],  # wall time between two polls
            "loop_cpu_max_ms": info["loop_cpu_max_ms"],  # the loop thread's CPU time in them
            "evicted_shots": info["cache"]["evicted"],
        },
    }
    from warpcore.bench.common import machine

    result["load_avg_1m"] = round(os.getloadavg()[0], 2)  # a shared machine: say how busy
    result["machine"] = machine()
    result["targets_met"] = {
        "exactly_once": result["exactly_once"],
        "heartbeat_p99_under_100ms": p99 < 100,
        "peak_rss_under_start_plus_1gb": max(rss) < start_rss + 2**30,
        "end_rss_within_100mb": abs(end_rss - start_rss) < 100 * MB,
        "cache_never_above_limit": max(disk) <= limit and info["cache"]["held_peak_bytes"] <= limit,
    }
    return result


def format_result(result: dict[str, Any]) -> str:
    hb, rss, cache = result["heartbeat_ms"], result["rss_mb"], result["cache_mb"]
    return (
        f"{result['seconds']:.0f} s, {result['shots']} shots ({result['frames_delivered']} frames) "
        f"{'exactly once' if result['exactly_once'] else 'NOT exactly once'}; heartbeat p50 "
        f"{hb['p50']} ms p99 {hb['p99']} ms; RSS {rss['start']} -> peak {rss['peak']} -> "
        f"{rss['end']} MB; cache {cache['start']} -> peak {cache['peak']} -> {cache['end']} MB "
        f"(limit {cache['limit']}); targets {result['targets_met']}"
    )

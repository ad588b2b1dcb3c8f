"""``warpdiff serve --ray``: shots on a local Ray cluster this test starts (2 CPUs, CPU actors
with the built-in model), through the unchanged protocol.

Shown: a shot in 3 chunks equals the sequential run exactly with guidance off, and within a
measured tolerance with guidance on (only frames after a seam differ); two shots run side by
side; an actor killed mid-chunk has its chunk resumed on a new actor from its last delivered
frame (nothing delivered recomputed, every frame exactly once, the result bit-identical to an
undisturbed run); cancel reaches every actor; kill -9 of the server and resume; a server that
cannot reach its cluster says so and exits non-zero.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from server.client import Client, Shot  # noqa: E402
from server.cluster import ClusterConfig  # noqa: E402
from server.testing import ServerProcess, running_server, tiny_shot, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(300)

N = 9  # 3 chunks of 3, overlap 1
CHUNKS = ClusterConfig(address="auto", actors=2, cpus_per_actor=0.5, chunk=3, overlap=1,
                       threads=1, flow_cpus=0.25, flow_actors=1)  # fmt: skip
UPSCALE = {"task": "upscale", "scale": 2, "steps": 4, "strength": 1.0, "flow": "dis-ultrafast"}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20,
             logging_level="ERROR")  # fmt: skip
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def server(cluster, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("cache"), ray=CHUNKS) as srv:
        yield srv


def _frames(seed: int) -> list[np.ndarray]:
    return tiny_shot(N, 32, seed=seed)[0]


def _run(server, request, frames, timeout=120):  # noqa: ANN001, ANN202
    """Submit and collect every event; the frames as delivered."""
    with Client(server.address, timeout=60) as client:
        key = client.submit(Shot(request, frames, None))
        events = list(client.events(key, timeout=timeout))
    return key, events


def _sequential(request, frames):  # noqa: ANN001, ANN202
    import torch

    from warpcore.models import load_denoiser
    from warpcore.request import RestoreRequest
    from warpcore.restore import restore_clip

    req = RestoreRequest.from_dict(request)
    denoiser = load_denoiser(req.model, req.task)
    # The actors compute with one thread (CHUNKS.threads): so does the reference, or a
    # different float summation order changes the last bit of some pixels.
    threads = torch.get_num_threads()
    torch.set_num_threads(CHUNKS.threads)
    try:
        return [out for _, out in restore_clip(req, denoiser, iter(frames), n_frames=len(frames))]
    finally:
        torch.set_num_threads(threads)


def _delivered(events) -> dict[int, np.ndarray]:  # noqa: ANN001
    order = [e.frame for e in events if e.kind == "frame"]
    assert order == list(range(N)), f"every frame once, in order: {order}"
    assert events[-1].kind == "finished", events[-1].body
    return {e.frame: e.image.copy() for e in events if e.kind == "frame"}


def _logs(server) -> list[list[tuple[str, int, float]]]:  # noqa: ANN001
    return [ray.get(a.stats.remote())["log"] for a in server.worker.actors]


def test_unreachable_cluster_says_so_and_exits_non_zero(tmp_path):
    cmd = [sys.executable, "-m", "warpcore.cli", "serve", "--bind", "tcp://127.0.0.1:0",
           "--cache", str(tmp_path), "--ray", "127.0.0.1:1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
    assert "ray start --head" in proc.stderr
    assert "listening" not in proc.stdout


def test_three_chunks_equal_the_sequential_run_without_guidance(server):
    request = {**UPSCALE, "guidance": 0.0, "seed": 3}
    _, events = _run(server, request, _frames(1))
    got = _delivered(events)
    reference = _sequential(request, _frames(1))
    for i in range(N):  # identical noise: every frame equal, seams included
        np.testing.assert_array_equal(got[i], reference[i], err_msg=f"frame {i}")
    # both actors worked on it (chunks in parallel), each frame kept from one chunk only
    logs = _logs(server)
    assert all(logs), "both actors ran chunks"
    # the flows came from the warm flow actor, once per frame pair (none made by the chunks)
    pairs = sum(ray.get(a.stats.remote())["pairs"] for a in server.worker.flow_actors)
    assert pairs >= N - 1


def test_three_chunks_with_guidance_within_the_measured_tolerance(server):
    request = {**UPSCALE, "seed": 4}  # guidance: the task's default (dps, lambda 1)
    _, events = _run(server, request, _frames(2))
    got = _delivered(events)
    reference = _sequential(request, _frames(2))
    diffs = [float(np.abs(got[i] - reference[i]).mean()) for i in range(N)]
    # The first chunk is the sequential run. Later chunks start their guidance chain at the
    # overlap frame (no estimates before it), so the frames after a seam differ: measured mean
    # |difference| <= 0.005 here (overlap 1; 0 two frames after the warm-up with overlap 2),
    # against a mean change of 0.05 between neighbouring frames.
    assert max(diffs[:3]) == 0.0, diffs
    assert 0.0 < max(diffs[3:]) < 0.01, diffs


def test_two_shots_run_side_by_side(server):
    request = {**UPSCALE, "guidance": 0.0, "seed": 5}
    with Client(server.address, timeout=60) as client:
        keys = [client.submit(Shot(request, _frames(s)[:3], None)) for s in (10, 11)]
        both = wait_until(lambda: len(server.worker.snapshot()["ray"]["running"]) == 2, 30)
        results = [list(client.events(k, timeout=120)) for k in keys]
    assert both, "the second shot waited for the first"
    for events in results:
        assert [e.frame for e in events if e.kind == "frame"] == [0, 1, 2]
        assert events[-1].kind == "finished"


def test_actor_killed_mid_chunk_is_retried_without_recomputing(server):
    request = {**UPSCALE, "steps": 6, "seed": 6}
    frames = _frames(3)
    key, undisturbed = _run(server, request, frames)
    reference = _delivered(undisturbed)
    server.cache.remove(key)  # the same shot again, from nothing
    retries = server.worker.retries
    t_kill = None
    with Client(server.address, timeout=60) as client:
        key = client.submit(Shot(request, frames, None))
        events = []
        for ev in client.events(key, timeout=120):
            events.append(ev)
            if ev.kind == "frame" and ev.frame == 0:  # chunk 0's actor is on frame 1 now
                made_0 = [max((t for _, f, t in log if f == 0), default=0) for log in _logs(server)]
                t_kill = time.time()
                ray.kill(server.worker.actors[int(np.argmax(made_0))])
    got = _delivered(events)  # every frame exactly once, in order
    assert server.worker.retries == retries + 1
    for i in range(N):  # resumed from the state after its last delivered frame: bit-identical
        np.testing.assert_array_equal(got[i], reference[i], err_msg=f"frame {i}")
    after = [f for log in _logs(server) for _, f, t in log if t > t_kill]
    assert 0 not in after, "a delivered frame was made again"
    assert {1, 2} <= set(after), "the rest of the chunk was made on a live actor"


def test_cancel_reaches_every_actor(server):
    request = {**UPSCALE, "steps": 30, "guidance": 0.0, "seed": 7}  # slow frames
    before = {r for log in _logs(server) for r, _, _ in log}

    def runs_per_actor() -> list[set[str]]:
        return [{r for r, _, _ in log} - before for log in _logs(server)]

    with Client(server.address, timeout=60) as client:
        key = client.submit(Shot(request, _frames(4), None))
        busy = wait_until(lambda: all(runs_per_actor()), 90, interval=0.2)
        runs = set().union(*runs_per_actor())
        client.cancel(key)
        t_cancel = time.time()
        events = list(client.events(key, timeout=60))
    assert busy, "both actors were running chunks of the shot"
    assert len(runs) == 1 and events[-1].kind == "cancelled"
    time.sleep(1.0)
    for actor in server.worker.actors:
        stats = ray.get(actor.stats.remote())
        assert runs <= set(stats["cancelled"]), "the cancel reached this actor"
        late = [f for r, f, t in stats["log"] if r in runs and t > t_cancel + 1.0]
        assert late == [], f"frames computed after the cancel: {late}"
    assert len([e for e in events if e.kind == "frame"]) < N


def test_kill_9_of_the_server_then_resume(cluster, tmp_path):
    """A --ray server killed mid-shot; a new one on the same cache and cluster resumes it: the
    frames finished before are neither lost nor made again, every frame is streamed once."""
    request = {**UPSCALE, "model": "gaussian", "steps": 40, "guidance": 0.0, "seed": 8}
    frames = _frames(5)
    args = ("--model", "gaussian", "--ray", cluster, "--ray-actors", "2", "--ray-cpus-per-actor",
            "0.25", "--ray-flow-cpus", "0.25", "--ray-flow-actors", "1", "--ray-chunk", "3",
            "--ray-overlap", "1", "--ray-threads", "1")  # fmt: skip
    print("T0", time.time(), flush=True)
    first = ServerProcess(tmp_path, *args, timeout=120)
    print("T1", time.time(), flush=True)
    with first, Client(first.address, timeout=60) as client:
        key = client.submit(Shot(request, frames, None))
        for ev in client.events(key, timeout=120):
            if ev.kind == "frame" and ev.frame == 1:
                first.kill9()  # mid-shot
                break
    folder = tmp_path / key / "frames"
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    assert 2 <= len(kept) < N, sorted(kept)

    print("T2", time.time(), flush=True)
    second = ServerProcess(tmp_path, *args, timeout=120)
    print("T3", time.time(), flush=True)
    with second, Client(second.address, timeout=60) as client:
        assert client.subscribe(key)["done"] >= 2
        events = list(client.events(key, timeout=120))
    print("T4", time.time(), flush=True)
    started = next(e for e in events if e.kind == "started")
    assert 2 <= started.body["resume_from"] < N
    got = _delivered(events)
    for name, mtime in kept.items():  # finished frames are not made (or written) again
        assert (folder / name).stat().st_mtime_ns == mtime, name
    reference = _sequential(request, frames)
    for i in range(N):
        np.testing.assert_array_equal(got[i], reference[i], err_msg=f"frame {i}")


def test_lazy_flows_fetch_when_read_and_keep_nothing(monkeypatch):
    """A chunk's actor fetches a flow only when the restorer reads it (the flows before a
    chunk never, at the built-in upscale default) and keeps none of them."""
    from server.cluster import _LazyFlows

    fetched = []
    monkeypatch.setattr(ray, "get", lambda ref: (fetched.append(ref), (ref, ref))[1])
    flows = _LazyFlows({1: "a", 2: "b", 3: "c"})
    assert 2 in flows and 7 not in flows and fetched == []
    assert flows[2] == ("b", "b") and flows[2] == ("b", "b")
    assert fetched == ["b", "b"]  # read twice, fetched twice: nothing cached
    assert not any(isinstance(v, tuple) for v in vars(flows).values())

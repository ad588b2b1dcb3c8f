"""Whole shots through a real server on loopback with a real model (the analytic Gaussian).

Shots are tiny (32x32, 3 steps, cheap noise and flow) so the suite stays fast on 2 CPU cores.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.cache import ShotCache
from server.client import Client, ServerError, Shot
from server.testing import running_server, tiny_shot, wait_until

pytestmark = pytest.mark.timeout(120)

FAST = {
    "task": "inpaint",
    "model": "gaussian",
    "steps": 3,
    "noise": "fixed",
    "guidance": 0.0,
    "flow": "dis-ultrafast",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    roots = (str(tmp_path_factory.getbasetemp()),)  # the paths test writes its frames there
    cache = tmp_path_factory.mktemp("cache")
    with running_server(cache, model="gaussian", queue_limit=8, allow_paths=roots) as srv:
        yield srv


@pytest.fixture
def client(server):
    with Client(server.address, timeout=60) as c:
        yield c


def _shot(n=4, size=32, seed=0, **request):
    frames, masks = tiny_shot(n, size, seed=seed)
    return Shot({**FAST, **request}, frames, masks)


def _collect(client, key, timeout=60):
    return list(client.events(key, timeout=timeout))


def test_a_whole_shot_streams_progress_then_frames_in_order(server, client):
    shot = _shot(seed=1)
    key = client.submit(shot)
    beats = []
    with Client(server.address, timeout=5) as other:  # heartbeats while the worker computes
        events = []
        for ev in client.events(key, timeout=60):
            events.append(ev)
            t0 = time.perf_counter()
            beats.append((other.heartbeat()["busy"], time.perf_counter() - t0))
    kinds = [e.kind for e in events]
    assert kinds[0] == "queued" and kinds[-1] == "finished", kinds
    assert "started" in kinds
    frames = [e for e in events if e.kind == "frame"]
    assert [e.frame for e in frames] == [0, 1, 2, 3]
    for e in frames:
        assert e.image.shape == (32, 32, 3) and e.image.dtype == np.float32
        assert e.image.min() >= 0.0 and e.image.max() <= 1.0
        assert e.body["compute_s"] > 0
    steps = [(e.frame, e.step) for e in events if e.kind == "progress" and e.step >= 0]
    assert steps == [(f, s) for f in range(4) for s in range(3)]
    assert all(e.n_steps == 3 and e.eta_s is not None for e in events if e.step >= 0)
    # each progress event precedes its frame: frame k comes after step 2 of frame k
    positions = {(e.kind, e.frame, e.step): i for i, e in enumerate(events)}
    assert all(positions[("progress", k, 2)] < positions[("frame", k, -1)] for k in range(4))
    assert any(busy for busy, _ in beats), "the heartbeat never saw the worker busy"
    assert max(dt for _, dt in beats) < 2.0
    # outside the masked square the composite keeps the input exactly
    outside = shot.masks[2][..., 0] == 0
    np.testing.assert_allclose(frames[2].image[outside], shot.frames[2][outside], atol=1e-6)
    assert client.status(key)["state"] == "finished"


def test_frames_of_a_finished_shot_come_from_the_cache(server, client):
    shot = _shot(seed=2)
    key = client.submit(shot)
    first = {e.frame: e.image for e in _collect(client, key) if e.kind == "frame"}
    again = client.submit(shot, dtype="uint8")  # same shot and parameters: same key
    assert again == key
    replay = _collect(client, key)
    assert [e.kind for e in replay] == ["frame"] * 4 + ["finished"]
    assert replay[1].image.dtype == np.uint8
    np.testing.assert_allclose(replay[1].image / 255.0, first[1], atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(client.get_frame(key, 3), first[3])
    assert set(client.fetch(key, 1, 3)) == {1, 2}
    changed = client.submit(_shot(seed=2, steps=2), subscribe=False)
    assert changed != key  # a changed parameter is another shot
    client.cancel(changed)


def test_frame_t_in_any_order_from_many_threads_is_made_once(server, client):
    shot = _shot(n=5, seed=3)
    key = client.submit(shot, subscribe=False)
    with Client(server.address, timeout=60) as watcher:
        watcher.subscribe(key, resume=False, stream=False)
        order = [4, 0, 3, 1, 2, 4, 0]
        with ThreadPoolExecutor(len(order)) as pool:
            got = list(pool.map(lambda t: (t, client.get_frame(key, t, timeout=60)), order))
        made = [e.frame for e in watcher.events(key, timeout=60) if e.kind == "frame"]
    assert made == [0, 1, 2, 3, 4]  # every frame computed exactly once, in order
    by_t = {}
    for t, img in got:
        if t in by_t:
            np.testing.assert_array_equal(img, by_t[t])
        by_t[t] = img
    for t in range(5):
        np.testing.assert_array_equal(client.get_frame(key, t, wait=False), by_t[t])


def _idle(server) -> bool:
    snap = server.worker.snapshot()
    return snap["running"] is None and snap["queued"] == 0


class _Gate:
    """Holds the worker thread at a chosen point until the test lets it go (no sleeps)."""

    def __init__(self) -> None:
        self.reached, self.go = threading.Event(), threading.Event()

    def hold(self) -> None:
        self.reached.set()
        assert self.go.wait(60), "the test never released the worker"


def test_cancel_while_a_frame_finishes_keeps_that_frame_and_can_resume(server, client, monkeypatch):
    """The cancel arrives just as frame 1 is finished: its last step is done, nothing is stored
    yet (the worker is held on leaving ``ClipRestorer.process``). Deterministic: the job is
    running, so ``was`` is 'running'; frame 1 is stored and reported before 'cancelled' (a
    finished frame is never dropped), the shot stops there, and a later request resumes from
    frame 2. Fails if the worker checks the stop flag between computing and storing a frame."""
    from warpcore.restore import ClipRestorer

    shot = _shot(n=8, seed=4)
    gate, process, held = _Gate(), ClipRestorer.process, []

    def held_process(self, index, *args, **kwargs):
        out = process(self, index, *args, **kwargs)
        if index == 1 and not held:  # the first frame 1 made after the patch: this shot's
            held.append(True)
            gate.hold()
        return out

    assert wait_until(lambda: _idle(server), 60)
    monkeypatch.setattr(ClipRestorer, "process", held_process)
    key = client.submit(shot)
    try:
        assert gate.reached.wait(60)
        reply = client.cancel(key)
        assert reply["was"] == "running"
    finally:
        gate.go.set()
    seen = _collect(client, key)
    assert seen[-1].kind == "cancelled"
    delivered = [e.frame for e in seen if e.kind == "frame"]
    assert delivered == [0, 1] and client.status(key)["done"] == 2
    frame_1 = next(e.image for e in seen if e.kind == "frame" and e.frame == 1)
    np.testing.assert_array_equal(client.get_frame(key, 1, wait=False), frame_1)
    with pytest.raises(ServerError) as info:
        client.get_frame(key, 7, wait=False)
    assert info.value.code == "not_ready"
    assert client.get_frame(key, 7, timeout=60).shape == (32, 32, 3)  # resumes from `done`
    assert wait_until(lambda: client.status(key)["state"] == "finished", 30)


def test_cancel_as_the_last_frame_is_reported_finds_the_job_gone(server, client, monkeypatch):
    """The cancel arrives after the worker made the last frame but before its 'finished' event
    reaches the loop (the worker thread is held as it hands that event to the emitter). The
    worker lets go of the job before emitting its last event, so the cancel answers 'idle' and
    the shot ends 'finished' with every frame. Fails if the job is released after the event
    (the reply says 'running' for a shot that then finishes, and a resubmit at that moment
    would join a dead job)."""
    from server.jobs import JobWorker

    gate, emit, held = _Gate(), JobWorker._emit, []

    def held_emit(self, key, kind, *args, **body):
        if kind == "finished" and not held:  # the first shot to finish after the patch
            held.append(key)
            gate.hold()
        emit(self, key, kind, *args, **body)

    assert wait_until(lambda: _idle(server), 60)
    monkeypatch.setattr(JobWorker, "_emit", held_emit)
    key = client.submit(_shot(n=2, seed=5), subscribe=False)
    try:
        assert gate.reached.wait(60)
        assert held == [key] and client.cancel(key)["was"] == "idle"
        assert server.worker.state(key) is None
    finally:
        gate.go.set()
    assert wait_until(lambda: client.status(key)["state"] == "finished", 30)
    assert client.status(key)["done"] == 2


def test_two_clients_at_once_get_their_own_frames(server):
    results: dict[int, list] = {}

    def run(i: int) -> None:
        with Client(server.address, timeout=60) as c:
            key = c.submit(_shot(n=3, seed=10 + i))
            results[i] = [(e.kind, e.frame, e.key) for e in c.events(key, timeout=60)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    keys = {i: {k for _, _, k in r} for i, r in results.items()}
    assert len(keys[0]) == len(keys[1]) == 1 and keys[0] != keys[1]
    for r in results.values():
        assert [f for kind, f, _ in r if kind == "frame"] == [0, 1, 2]
        assert r[-1][0] == "finished"


def test_two_clients_on_one_shot_each_get_every_frame_once(server):
    shot = _shot(n=4, seed=20)
    with Client(server.address, timeout=60) as a, Client(server.address, timeout=60) as b:
        key = a.submit(shot)
        first = next(a.events(key))  # queued
        assert first.kind == "queued"
        assert b.submit(shot) == key  # joins the running shot
        got_a = [e.frame for e in a.events(key, timeout=60) if e.kind == "frame"]
        got_b = [e.frame for e in b.events(key, timeout=60) if e.kind == "frame"]
    assert got_a == [0, 1, 2, 3] and got_b == [0, 1, 2, 3]


def test_a_client_that_vanishes_mid_shot_does_not_hurt(server, client):
    shot = _shot(n=4, seed=30)
    gone = Client(server.address, timeout=60)
    key = gone.submit(shot)
    for ev in gone.events(key, timeout=60):
        if ev.kind == "frame":
            break
    gone.close()  # its socket disappears with events still due
    assert client.hello()["protocol"] == 1
    assert client.get_frame(key, 3, timeout=60).shape == (32, 32, 3)
    assert wait_until(lambda: client.status(key)["state"] == "finished", 30)
    assert wait_until(lambda: key not in server.registry.shots, 10)  # nothing kept for it


def test_a_full_queue_is_an_error_reply(tmp_path):
    with (
        running_server(tmp_path, model="gaussian", queue_limit=1) as srv,
        Client(srv.address, timeout=60) as c,
    ):
        keys = [c.submit(_shot(n=6, seed=40), subscribe=False)]
        assert wait_until(lambda: srv.worker.snapshot()["running"] == keys[0], 30)
        keys.append(c.submit(_shot(n=2, seed=41), subscribe=False))
        with pytest.raises(ServerError) as info:
            c.submit(_shot(n=2, seed=42), subscribe=False)
        assert info.value.code == "queue_full" and "limit 1" in info.value.message
        assert c.cancel(keys[1])["was"] == "queued"
        assert c.cancel(keys[0])["was"] == "running"
        assert wait_until(lambda: srv.worker.snapshot()["running"] is None, 30)
        assert c.heartbeat()["busy"] is False


def test_a_shot_given_as_file_paths_on_the_server(server, client, tmp_path):
    from warpcore.video import FrameWriter

    frames, masks = tiny_shot(3, 32, seed=50)
    with (
        FrameWriter(tmp_path / "frames", fmt="png16") as fw,
        FrameWriter(tmp_path / "mattes") as mw,
    ):
        for f, m in zip(frames, masks, strict=True):
            fw.write(f)
            mw.write(m[..., 0])
    shot = Shot(FAST, paths={"frames": str(tmp_path / "frames"), "masks": str(tmp_path / "mattes")})
    key = client.submit(shot)
    events = _collect(client, key)
    assert [e.frame for e in events if e.kind == "frame"] == [0, 1, 2]
    assert client.submit(shot, subscribe=False) == key  # same files, same key
    with pytest.raises(ServerError) as info:
        client.submit(Shot(FAST, paths={"frames": str(tmp_path / "nothing")}))
    assert info.value.code == "bad_request" and "paths.frames" in info.value.message


def test_previews_without_frames_then_shutdown_mid_shot(tmp_path):
    with (
        running_server(tmp_path, model="gaussian") as srv,
        Client(srv.address, timeout=60) as c,
    ):
        key = c.submit(_shot(n=6, size=32, seed=60), stream=False, previews=True)
        for ev in c.events(key, timeout=60):
            if ev.kind == "frame":
                assert ev.image is None and ev.preview.dtype == np.uint8
                assert ev.preview.shape == (32, 32, 3)  # at most 128 px: kept whole
                break
        assert c.shutdown() == {"stopping": True}
        srv._thread.join(20)
        assert not srv._thread.is_alive()
    done = ShotCache(tmp_path).done(key)
    assert 1 <= done <= 6  # finished frames stay; the running one was cancelled

"""Finished frames are read off the socket loop (issue 10, item 6; issue 12's cached renders).

``get_frame``, ``fetch`` and a late subscriber's catch-up read cached frames on the reader
thread: a read that is stuck never holds up another client's heartbeat, each client still gets
its replies in the order it asked, a slow reader's bytes count against its backlog bound, and
recently served frames come from a small in-memory LRU bounded in bytes.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import numpy as np
import pytest

from server.client import Client, Shot
from server.frames import FrameMemory
from server.outbox import Outbox
from server.protocol import encode
from server.registry import Peer
from server.soak import FAST
from server.testing import RawPeer, running_server, tiny_shot, wait_until

pytestmark = pytest.mark.timeout(120)
N = 3


class GatedReads:
    """Wraps the server's ``cache.read_frame``: each read waits for :meth:`open` and records the
    thread it ran on."""

    def __init__(self, server: Any) -> None:
        self.read = server.cache.read_frame
        self.gate = threading.Event()
        self.threads: list[str] = []
        server.cache.read_frame = self

    def __call__(self, key: str, index: int) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        self.gate.wait(20)  # on the loop (the old server) this stalls everything: bounded
        return self.read(key, index)


@contextmanager
def finished_shot(tmp_path: Any, **config: Any) -> Iterator[tuple[Any, str, list[np.ndarray]]]:
    """A server holding one finished 3-frame shot; its frames as made."""
    frames, masks = tiny_shot(N, 32, seed=3)
    with (
        running_server(tmp_path / "cache", model="gaussian", **config) as srv,
        Client(srv.address, timeout=60) as c,
    ):
        key = c.submit(Shot(FAST, frames, masks))
        made = {e.frame: e.image for e in c.events(key, timeout=60) if e.kind == "frame"}
        assert sorted(made) == list(range(N))
        yield srv, key, [made[i] for i in range(N)]


def test_a_stuck_frame_read_holds_up_no_other_client_and_runs_off_the_loop(tmp_path):
    with (
        finished_shot(tmp_path, frame_memory_bytes=0) as (srv, key, made),
        Client(srv.address, timeout=60) as fetcher,
        Client(srv.address, timeout=5) as beat,
    ):
        reads = GatedReads(srv)
        got: dict[str, Any] = {}
        threads = [
            threading.Thread(target=lambda: got.update(fetch=fetcher.fetch(key))),
            threading.Thread(target=lambda: got.update(one=fetcher.get_frame(key, 1))),
        ]
        for t in threads:
            t.start()
        assert wait_until(lambda: reads.threads, 10)  # a read is under way, and stuck
        for _ in range(3):
            beat.heartbeat(timeout=5)  # the old server read on its loop: this timed out
        assert beat.status()["queue"] is not None
        reads.gate.set()
        for t in threads:
            t.join(30)
        assert sorted(got["fetch"]) == list(range(N))
        for i in range(N):
            np.testing.assert_array_equal(got["fetch"][i], made[i])
        np.testing.assert_array_equal(got["one"], made[1])
        assert reads.threads and "warpdiff-server" not in reads.threads, reads.threads


def test_replies_to_one_client_keep_the_order_it_asked_in(tmp_path):
    with (
        finished_shot(tmp_path, frame_memory_bytes=0) as (srv, key, made),
        RawPeer(srv.address) as peer,
    ):
        reads = GatedReads(srv)
        asks = [
            encode("get_frame", {"key": key, "frame": 2}, id="a"),
            encode("heartbeat", {}, id="b"),
            encode("get_frame", {"key": key, "frame": 0, "dtype": "uint8"}, id="c"),
            encode("status", {"key": key}, id="d"),
        ]
        for frames in asks:
            peer.send(frames)
        assert wait_until(lambda: reads.threads, 10)
        assert peer.recv(0.3) is None  # everything waits behind the first reply
        reads.gate.set()
        replies = [peer.recv(10) for _ in asks]
        assert [r[0]["parent"] for r in replies] == ["a", "b", "c", "d"]
        assert [r[0]["type"] for r in replies][0] == "get_frame_reply"
        frame2 = np.frombuffer(replies[0][1][0], "<f4").reshape(made[2].shape)
        np.testing.assert_array_equal(frame2, made[2])
        frame0 = np.frombuffer(replies[2][1][0], "u1").reshape(made[0].shape)
        want = (np.clip(made[0], 0, 1) * 255 + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(frame0, want)


def test_a_late_subscriber_gets_every_frame_once_in_order_read_off_the_loop(tmp_path):
    with (
        finished_shot(tmp_path, frame_memory_bytes=0) as (srv, key, made),
        Client(srv.address, timeout=30) as late,
    ):
        reads = GatedReads(srv)
        reads.gate.set()
        late.subscribe(key, resume=False)
        events = list(late.events(key, timeout=30))
        frames = [e for e in events if e.kind == "frame"]
        assert [e.frame for e in frames] == list(range(N))
        assert events[-1].kind == "finished"
        for e in frames:
            np.testing.assert_array_equal(e.image, made[e.frame])
        assert len(reads.threads) == N and "warpdiff-server" not in reads.threads


def test_recent_frames_are_served_from_memory_without_reading(tmp_path):
    with finished_shot(tmp_path) as (srv, key, made), Client(srv.address, timeout=30) as c:
        reads = GatedReads(srv)
        reads.gate.set()
        srv.frames.forget(key)
        for _ in range(3):
            np.testing.assert_array_equal(c.get_frame(key, 0), made[0])
        assert len(reads.threads) == 1  # read once; the repeats came from memory
        assert c.status()["frame_memory"]["bytes"] == made[0].nbytes


def test_frame_memory_is_bounded_in_bytes_and_drops_the_least_recently_used():
    frame = np.zeros((16, 16, 3), np.float32)  # 3 KiB
    memory = FrameMemory(max_bytes=3 * frame.nbytes)
    for i in range(3):
        memory.put("k", i, frame.copy())
    assert memory.get("k", 0) is not None  # now the most recently used
    memory.put("k", 3, frame.copy())
    assert memory.bytes == 3 * frame.nbytes and len(memory) == 3
    assert memory.get("k", 1) is None and memory.get("k", 0) is not None
    memory.put("k", 9, np.zeros((64, 64, 3), np.float32))  # larger than the whole bound
    assert memory.get("k", 9) is None and memory.bytes <= memory.max_bytes
    with pytest.raises(ValueError):
        memory.get("k", 0)[0, 0, 0] = 1.0  # read-only: a reply's buffer never changes


class Router:
    """A stand-in ZeroMQ socket that takes every message (records it)."""

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []

    def send_multipart(self, frames: list[Any], *args: Any, **kwargs: Any) -> None:
        self.sent.append(frames)


def test_a_reserved_reply_keeps_its_place_and_counts_against_the_peer_bound():
    router, dropped = Router(), []
    outbox = Outbox(router, dropped.append, max_messages=100, max_bytes=1000)
    peer = Peer(b"p")
    slot = outbox.reserve(peer, 600)
    outbox.send(peer, "heartbeat_reply", {}, (), "b")
    assert router.sent == [] and outbox.bytes_held() >= 600  # waits behind the slot
    outbox.fill(slot, "get_frame_reply", {}, (np.zeros(10, np.uint8),), "a")
    assert [msgpack.unpackb(f[1])["parent"] for f in router.sent] == ["a", "b"]
    assert outbox.bytes_held() == 0 and not outbox.backlogged(peer)
    # A peer that asks for more than its bound while a read is pending is dropped, and the
    # pending read is marked dead (the reader skips it).
    first = outbox.reserve(peer, 600)
    assert outbox.reserve(peer, 600) is None and dropped == [peer]
    assert first.dead and outbox.bytes_held() == 0


@pytest.mark.parametrize("memory", [0, 2**20])
def test_a_fetch_reply_stops_at_its_byte_bound(tmp_path, monkeypatch, memory):
    """One ``fetch`` reply holds at most ``MAX_FETCH_BYTES`` of frames (at least one); the
    client asks again from the next frame. Read off the loop or from memory alike."""
    import server.handlers

    with (
        finished_shot(tmp_path, frame_memory_bytes=memory) as (srv, key, made),
        Client(srv.address, timeout=30) as c,
    ):
        monkeypatch.setattr(server.handlers, "MAX_FETCH_BYTES", made[0].nbytes + 1)
        first = c.fetch(key)
        assert sorted(first) == [0, 1]  # the second frame passed the bound: the reply ends
        rest = c.fetch(key, start=2)
        assert sorted(rest) == [2]
        np.testing.assert_array_equal(rest[2], made[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_worker_thread_yields_the_cpu_to_the_socket_loop(tmp_path):
    """When the CPUs are short, the loop (heartbeats) goes before the model's compute."""
    from server.worker import WORKER_NICE

    def nice(tid: int) -> int:
        with open(f"/proc/self/task/{tid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[16])  # field 19: nice

    with running_server(tmp_path / "cache", model="gaussian") as srv:
        assert wait_until(lambda: srv.worker._thread.native_id is not None, 10)
        loop, worker = srv._thread.native_id, srv.worker._thread.native_id
        assert wait_until(lambda: nice(worker) == min(19, nice(loop) + WORKER_NICE), 10)


def test_list_shots_reads_the_cache_off_the_loop(tmp_path):
    """``list_shots`` reads every shot's files (O(shots)): on the reader thread, in its turn."""
    with (
        finished_shot(tmp_path) as (srv, key, made),
        Client(srv.address, timeout=30) as lister,
        Client(srv.address, timeout=5) as beat,
    ):
        list_keys, gate, threads = srv.cache.list_keys, threading.Event(), []

        def gated() -> list[str]:
            threads.append(threading.current_thread().name)
            gate.wait(20)
            return list_keys()

        srv.cache.list_keys = gated
        got: dict[str, Any] = {}
        t = threading.Thread(target=lambda: got.update(shots=lister.list_shots()))
        t.start()
        assert wait_until(lambda: threads, 10)
        beat.heartbeat(timeout=5)  # answered while the listing is stuck
        gate.set()
        t.join(30)
        assert [s["key"] for s in got["shots"]] == [key]
        assert got["shots"][0]["state"] == "finished" and got["shots"][0]["done"] == N
        assert "warpdiff-server" not in threads


def test_heartbeats_in_a_burst_go_first_but_each_peer_keeps_its_order():
    """A burst of requests read in one loop iteration: heartbeats and hellos are handled
    first (a hostile burst no longer delays them), unless their peer asked something before."""
    from server.app import urgent_first

    def msg(peer: bytes, type: str, parts: tuple = ()) -> list[bytes]:
        return [peer, *encode(type, {"key": "k" * 32}, id=f"{peer.decode()}-{type}", parts=parts)]

    batch = [
        msg(b"a", "submit", (b"x" * 100,)),
        msg(b"b", "echo"),
        msg(b"a", "heartbeat"),  # behind a's submit: stays behind it
        msg(b"c", "heartbeat"),
        msg(b"b", "status"),
        msg(b"d", "hello"),
        msg(b"e", "heartbeat"),
        msg(b"e", "get_frame"),
    ]
    order = [msgpack.unpackb(m[1])["id"] for m in urgent_first(batch)]
    assert order[:3] == ["c-heartbeat", "d-hello", "e-heartbeat"]
    assert order[3:] == ["a-submit", "b-echo", "a-heartbeat", "b-status", "e-get_frame"]
    req = [b"f", b"", *encode("heartbeat", {}, id="f")]  # a REQ peer's delimiter frame
    assert urgent_first([msg(b"a", "submit"), req])[0] is req

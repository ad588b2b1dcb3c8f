"""Issue 10: a hostile or careless client gets no more than its request is worth.

One test (or more) per item of the issue, each failing on the server before the hardening:
files outside the allowed roots, unauthenticated non-loopback binds, disk amplification and the
cache limit, refused submits leaving traces, memory bounded by bytes, slow work off the loop,
validation before compute, internal errors without paths, failed shots remembering why, and
key folders never replaced.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from server.client import Client, ServerError, Shot
from server.protocol import ProtocolError, array_part, encode
from server.shots import parse_submit
from server.soak import FAST  # the soak's fast request: the gaussian oracle, 2 steps
from server.testing import RawPeer, envelope, running_server, tiny_shot, wait_until

pytestmark = pytest.mark.timeout(120)


def _shot(n: int = 3, size: int = 32, seed: int = 0, **request) -> Shot:
    frames, masks = tiny_shot(n, size, seed=seed)
    return Shot({**FAST, **request}, frames, masks)


def _write_frames(folder: Path, n: int = 3, size: int = 32) -> None:
    from warpcore.video import FrameWriter

    frames, _ = tiny_shot(n, size, seed=9)
    with FrameWriter(folder, fmt="png16") as fw:
        for f in frames:
            fw.write(f)


def _finish(client: Client, key: str) -> list:
    return [e for e in client.events(key, timeout=60)]


# -- 1. client-chosen files and folders --------------------------------------------------------


def test_paths_outside_the_allowed_roots_are_refused_alike_and_models_must_be_listed(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "private"
    _write_frames(allowed / "frames")
    _write_frames(outside / "frames")
    (allowed / "link").symlink_to(outside / "frames")  # a symlink out of the root
    cache = tmp_path / "cache"
    with (
        running_server(cache, model="gaussian", allow_paths=(str(allowed),)) as srv,
        Client(srv.address, timeout=30) as c,
    ):
        messages = []
        for path in (outside / "frames", outside / "nothing", allowed / "link", Path("/etc")):
            with pytest.raises(ServerError) as info:
                c.submit(Shot({**FAST, "task": "upscale"}, paths={"frames": str(path)}))
            assert info.value.code == "bad_request" and "paths.frames" in info.value.message
            messages.append(info.value.message)
        assert len(set(messages)) == 1  # the same words whether the file exists or not
        assert str(tmp_path) not in messages[0] and "--allow-paths" in messages[0]
        # inside the root: served
        key = c.submit(Shot({**FAST, "task": "upscale"}, paths={"frames": str(allowed / "frames")}))
        assert _finish(c, key)[-1].kind == "finished"
        # models: only those hello lists; the error names no server folder
        assert set(c.hello()["models"]["available"]) == {"builtin", "gaussian"}
        for model in (str(tmp_path), "some-org/some-hub-model", 7):
            with pytest.raises(ServerError) as info:
                c.submit(_shot(model=model))
            assert info.value.code == "bad_request" and "request.model" in info.value.message
            assert str(cache) not in info.value.message and str(tmp_path) not in info.value.message
        assert list(cache.iterdir()) == [cache / key]  # nothing else was stored


def test_paths_default_to_home_on_loopback_and_to_nothing_elsewhere(tmp_path):
    from server.app import ServerConfig, allowed_roots

    home = Path.home().resolve()
    assert allowed_roots(ServerConfig(str(tmp_path), bind="tcp://127.0.0.1:0")) == (home,)
    assert allowed_roots(ServerConfig(str(tmp_path), bind="tcp://0.0.0.0:0")) == ()
    only = ServerConfig(str(tmp_path), bind="tcp://0.0.0.0:0", allow_paths=(str(tmp_path),))
    assert allowed_roots(only) == (tmp_path.resolve(),)


# -- 2. non-loopback without authentication ----------------------------------------------------


def _serve(cache: Path, *args: str) -> subprocess.Popen:
    repo = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=repo, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "warpcore.cli", "serve", "--cache", str(cache), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_non_loopback_bind_without_keys_refuses_to_start_and_says_so_on_stderr(tmp_path):
    proc = _serve(tmp_path, "--bind", "tcp://0.0.0.0:0", "--log-level", "CRITICAL")
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2, (out, err)
    assert "listening" not in out
    assert "without authentication" in err and "--curve-keys" in err
    assert "--insecure-no-auth" in err
    # with the explicit opt-out it serves
    proc = _serve(tmp_path, "--bind", "tcp://0.0.0.0:0", "--insecure-no-auth")
    try:
        line = proc.stdout.readline()
        assert "listening on tcp://0.0.0.0:" in line
    finally:
        proc.kill()
        proc.communicate(timeout=30)


# -- 3. disk amplification and the cache limit -------------------------------------------------


def test_a_part_named_by_two_descriptors_is_refused_and_nothing_is_stored(tmp_path):
    frame = tiny_shot(1, 32)[0][0]
    desc, buf = array_part(frame, 0)
    body = {"request": {**FAST, "task": "upscale"}, "frames": [desc] * 50}
    with running_server(tmp_path / "cache", model="gaussian") as srv, RawPeer(srv.address) as p:
        p.send(encode("submit", body, id="amp", parts=[buf]))
        env, _ = p.recv(10)
        assert env["type"] == "error" and env["body"]["code"] == "bad_body"
        assert "already named" in env["body"]["message"]
        assert "frames[1].part" in env["body"]["message"]
        assert not any((tmp_path / "cache").iterdir())


def test_stored_bytes_are_bounded_by_the_bytes_sent(tmp_path):
    shot = _shot(n=3, seed=3)
    sent = sum(a.nbytes for a in (*shot.frames, *shot.masks))
    with running_server(tmp_path / "cache", model="gaussian") as srv, Client(srv.address) as c:
        key = c.submit(shot, subscribe=False)
        inputs = tmp_path / "cache" / key / "inputs"
        stored = sum(p.stat().st_size for p in inputs.iterdir())
        assert sent <= stored <= sent + 128 * len(list(inputs.iterdir()))
        c.cancel(key)


def test_the_cache_evicts_least_recently_used_finished_shots_never_running_ones(tmp_path):
    one_shot = 2 * 3 * 32 * 32 * (3 + 1 + 3) * 4  # inputs + mattes + outputs, with room
    cache = tmp_path / "cache"
    with (
        running_server(cache, model="gaussian", cache_max_bytes=int(2.5 * one_shot)) as srv,
        Client(srv.address, timeout=60) as c,
    ):
        keys = []
        for seed in range(4):
            keys.append(c.submit(_shot(seed=10 + seed)))
            assert _finish(c, keys[-1])[-1].kind == "finished"
            assert srv.cache.used <= srv.cache.max_bytes
            c.fetch(keys[0])  # the first shot is used again: the second goes first
        assert (cache / keys[0]).is_dir() and (cache / keys[-1]).is_dir()
        assert not (cache / keys[1]).exists()
        assert srv.cache.evicted >= 1
        assert c.status()["cache"]["bytes"] <= srv.cache.max_bytes
        # a shot bigger than the whole cache: a clear error for it, the server goes on
        with pytest.raises(ServerError) as info:
            c.submit(_shot(n=6, size=96, seed=20))
        assert info.value.code == "disk_full" and "--cache-max-gb" in info.value.message
        assert c.heartbeat()["busy"] is False
        assert not any(p.name.startswith(".") for p in cache.iterdir())


def test_running_shots_are_never_evicted(tmp_path):
    from server.cache import CacheFull, ShotCache, ShotMeta

    old_busy, idle, writer = "a" * 32, "b" * 32, "c" * 32
    cache = ShotCache(tmp_path, max_bytes=80_000, busy=lambda key: key == old_busy)
    frame = np.zeros((32, 32, 3), np.float32)  # 12 KiB
    for key in (old_busy, idle, writer):  # created in this order: a is the least recent
        cache.create(ShotMeta(key, {"task": "upscale"}, 3, 32, 32, "none", "parts"), [frame] * 2)
        os.utime(tmp_path / key, (time.time() - 100 + len(cache.list_keys()),) * 2)
    cache.write_frame(writer, 0, frame)  # over the limit: the idle shot goes, not the busy one
    assert not (tmp_path / idle).exists() and (tmp_path / old_busy).is_dir()
    assert cache.used <= cache.max_bytes
    with pytest.raises(CacheFull):
        cache.write_frame(writer, 1, np.zeros((64, 64, 3), np.float32))
    assert (tmp_path / old_busy).is_dir() and cache.used <= cache.max_bytes
    assert (tmp_path / writer / "frames" / "00000.npy").is_file()


# -- 4. refused submits leave no trace ---------------------------------------------------------


def test_refused_submits_leave_no_folder_and_no_active_shot(tmp_path):
    cache = tmp_path / "cache"
    with (
        running_server(cache, model="gaussian", queue_limit=1) as srv,
        Client(srv.address, timeout=60) as c,
    ):
        running = c.submit(_shot(n=8, seed=30, steps=20), subscribe=False)
        assert wait_until(lambda: srv.worker.snapshot()["running"] == running, 30)
        queued = c.submit(_shot(n=2, seed=31), subscribe=False)
        for seed in range(32, 40):
            with pytest.raises(ServerError) as info:
                c.submit(_shot(n=2, seed=seed), subscribe=False)
            assert info.value.code == "queue_full"
        assert sorted(p.name for p in cache.iterdir()) == sorted([running, queued])
        assert c.status()["active_shots"] == 2
        # a known idle shot asked for while the queue is full: refused, not kept active
        c.cancel(queued)
        assert wait_until(lambda: c.status()["active_shots"] == 1, 10)
        other = c.submit(_shot(n=2, seed=41), subscribe=False)
        for ask in (lambda: c.get_frame(queued, 1), lambda: c.subscribe(queued)):
            with pytest.raises(ServerError) as info:
                ask()
            assert info.value.code == "queue_full"
        assert c.status()["active_shots"] == 2
        c.cancel(other)
        c.cancel(running)
        assert wait_until(lambda: c.status()["active_shots"] == 0, 30)


# -- 5. memory bounded by bytes ----------------------------------------------------------------


def test_an_oversized_part_is_refused_by_zeromq_before_it_is_buffered(tmp_path):
    from server.protocol import Limits

    limits = Limits(max_part_bytes=2**20)
    with (
        running_server(tmp_path / "cache", model="gaussian", limits=limits) as srv,
        RawPeer(srv.address) as p,
        Client(srv.address, timeout=10) as c,
    ):
        assert srv.router.getsockopt(zmq.MAXMSGSIZE) == limits.max_envelope_bytes
        received = c.status()["messages_received"]
        p.send([envelope("echo", {"arrays": []}), b"\0" * (16 * 2**20)])
        assert p.recv(1.5) is None  # the peer was disconnected, nothing decoded or answered
        assert c.status()["messages_received"] == received + 1  # only the status itself
        assert c.hello()["server"] == "warpdiff"


def test_a_peer_that_never_reads_is_dropped_once_its_backlog_passes_the_byte_bound(tmp_path):
    bound = 4 * 2**20
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    for opt, value in ((zmq.RCVHWM, 1), (zmq.RCVBUF, 65536), (zmq.LINGER, 0)):
        sock.setsockopt(opt, value)
    part = np.zeros(2**20, np.uint8)
    try:
        with running_server(
            tmp_path / "cache", model="gaussian", send_hwm=1, max_backlog_bytes=bound
        ) as srv:
            sock.connect(srv.address)
            peak = 0
            for i in range(64):
                desc = {"part": 0, "dtype": "uint8", "shape": [1024, 1024, 1]}
                sock.send_multipart(encode("echo", {"arrays": [desc]}, id=i, parts=[part]))
                peak = max(peak, srv.outbox.bytes_held())
            assert wait_until(lambda: srv.outbox.dropped >= 1, 30)
            with Client(srv.address, timeout=10) as c:
                info = c.status()
            assert info["dropped_peers"] >= 1
            assert peak <= bound and info["backlog_bytes"] <= bound
    finally:
        sock.close(0)
        ctx.term()


# -- 6. slow work off the socket loop ----------------------------------------------------------


def test_heartbeats_answer_while_a_large_paths_folder_is_hashed(tmp_path):
    folder = tmp_path / "frames"
    _write_frames(folder)
    with open(folder / "big.bin", "wb") as f:  # sparse: read back as zeros, no disk used
        f.truncate(512 * 2**20)
    shot = Shot({**FAST, "task": "upscale"}, paths={"frames": str(folder)})
    with (
        running_server(tmp_path / "cache", model="gaussian", allow_paths=(str(tmp_path),)) as srv,
        Client(srv.address, timeout=120) as c,
        Client(srv.address, timeout=120) as beat,
    ):
        beat.heartbeat()
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(key=c.submit(shot)))
        srv.max_busy_s = 0.0
        thread.start()
        answered = 0
        while thread.is_alive():
            beat.heartbeat()
            answered += 1
            time.sleep(0.01)
        thread.join()
        assert "key" in result and answered >= 3
        # the loop thread's own CPU time between two polls, not wall time: a loaded machine
        # (CI runs the suite on parallel workers) stretches wall time, never this. Hashing the
        # 512 MiB on the loop costs it seconds of CPU; handing it over costs microseconds (a
        # garbage collection pass on the loop may cost tens of milliseconds)
        assert srv.max_busy_s < 0.25, srv.max_busy_s
        c.cancel(result["key"])


# -- 7. validation before compute --------------------------------------------------------------


def _body(frames, masks, **request):
    parts, body = [], {"request": {**FAST, **request}, "frames": []}
    for f in frames:
        desc, buf = array_part(f, len(parts))
        body["frames"].append(desc)
        parts.append(memoryview(buf).cast("B"))
    if masks is not None:
        body["masks"] = []
        for m in masks:
            desc, buf = array_part(m, len(parts))
            body["masks"].append(desc)
            parts.append(memoryview(buf).cast("B"))
    return body, parts


def _poisoned(value: float, where: str = "frames"):
    frames, masks = tiny_shot(2, 32)
    target = frames if where == "frames" else masks
    target[1] = target[1].copy()
    target[1][3, 4, 0] = value
    return frames, masks


@pytest.mark.parametrize(
    "frames_masks, request_, words",
    [
        (_poisoned(np.nan), {}, "frames[1]: holds NaN or infinite"),
        (_poisoned(np.inf, "masks"), {}, "masks[1]: holds NaN or infinite"),
        (_poisoned(1e30), {}, "frames[1]: values span"),
        (tiny_shot(2, 8), {}, "too small for optical flow"),
        (tiny_shot(2, 32), {"scale": float("nan")}, "request.scale"),
        (tiny_shot(2, 32), {"scale": 10**9}, "request.scale"),
        (tiny_shot(2, 32), {"prompt": 5}, "request.prompt"),
        (tiny_shot(2, 32), {"negative_prompt": ["x"]}, "request.negative_prompt"),
    ],
)  # fmt: skip
def test_bad_pixels_sizes_scales_and_prompts_are_refused_before_compute(
    frames_masks, request_, words
):
    with pytest.raises(ProtocolError) as info:
        parse_submit(*_body(*frames_masks, **request_), "gaussian", "cpu")
    assert info.value.code == "bad_request" and words in info.value.message
    assert "accepted" in info.value.message


class _NanDenoiser:
    """A model whose every estimate is NaN (a broken fine-tune, a half-precision overflow)."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __call__(self, x, sigma, prepared):
        return self._inner(x, sigma, prepared) * float("nan")


def _nan_engine():
    from server.engine import Engine
    from warpcore.models import load_denoiser

    engine = Engine("gaussian", "cpu")
    engine._models[("gaussian", "inpaint")] = _NanDenoiser(load_denoiser("gaussian", "inpaint"))
    return engine


def test_nan_pixels_are_refused_by_the_server_before_anything_is_stored(tmp_path):
    frames, masks = _poisoned(np.nan)
    with running_server(tmp_path / "cache", model="gaussian") as srv, Client(srv.address) as c:
        with pytest.raises(ServerError) as info:
            c.submit(Shot(FAST, frames, masks))
        assert info.value.code == "bad_request" and "frames[1]" in info.value.message
        assert not any((tmp_path / "cache").iterdir())


# -- 7 + 9. a NaN frame fails the shot; the failure is remembered ------------------------------


def test_a_model_returning_nan_fails_the_shot_and_the_failure_is_kept_until_resubmitted(tmp_path):
    from server.app import Server, ServerConfig
    from server.testing import LOOPBACK

    cache = tmp_path / "cache"
    shot = _shot(n=3, seed=5)
    srv = Server(ServerConfig(str(cache), bind=LOOPBACK, model="gaussian"), _nan_engine())
    srv.start()
    try:
        with Client(srv.address, timeout=60) as c:
            key = c.submit(shot)
            events = _finish(c, key)
            assert events[-1].kind == "error" and "NaN" in events[-1].message
            assert not [e for e in events if e.kind == "frame"]
            status = c.status(key)
            assert status["state"] == "error" and "NaN" in status["message"]
    finally:
        srv.stop()
    assert not list((cache / key / "frames").iterdir())  # no NaN frame was kept
    with running_server(cache, model="gaussian") as srv2, Client(srv2.address, timeout=60) as c:
        listed = {s["key"]: s for s in c.list_shots()}
        assert listed[key]["state"] == "error" and "NaN" in listed[key]["message"]
        assert c.submit(shot) == key  # resubmitted (a healthy model now): the error is gone
        assert c.status(key)["state"] in ("queued", "running", "finished")
        assert _finish(c, key)[-1].kind == "finished"
        assert c.status(key)["message"] == "" and not (cache / key / "error.json").exists()


# -- 8. keys validated, internal errors carry an id, not paths ---------------------------------


def test_long_or_odd_keys_are_bad_body_and_internal_errors_carry_an_id_not_paths(tmp_path, caplog):
    cache = tmp_path / "cache"
    with running_server(cache, model="gaussian") as srv, Client(srv.address) as c:
        for key in ("a" * 300, "A" * 32, "../" * 10 + "ab", "ab12"):
            with pytest.raises(ServerError) as info:
                c.status(key)
            assert info.value.code == "bad_body" and info.value.message.startswith("key:")
            assert "32 lowercase hex" in info.value.message and str(cache) not in info.value.message
        broken = "c" * 32  # a shot whose metadata a bug (or a disk) broke
        (cache / broken).mkdir()
        (cache / broken / "meta.json").write_text(f'{{"{cache}/secret": 1}}')
        with pytest.raises(ServerError) as info:
            c.status(broken)
        assert info.value.code == "internal" and str(cache) not in info.value.message
        error_id = re.search(r"internal server error ([0-9a-f]{12})", info.value.message)
        assert error_id is not None
        assert c.heartbeat()["busy"] is False
    assert any(error_id.group(1) in r.getMessage() for r in caplog.records)


# -- 10. key folders are never replaced --------------------------------------------------------


def test_make_keys_refuses_existing_keys_and_add_client_keeps_the_old_ones(tmp_path):
    from server.keys import CurveKeys, add_client, make_keys

    folder = tmp_path / "keys"
    old_umask = os.umask(0)  # secret files must not depend on the umask
    try:
        make_keys(folder)
    finally:
        os.umask(old_umask)
    before = (folder / "client.key_secret").read_bytes()
    assert (folder / "client.key_secret").stat().st_mode & 0o777 == 0o600
    assert (folder / "server.key_secret").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError, match="add-client"):
        make_keys(folder)
    add_client(folder, "nuke-2")
    assert (folder / "client.key_secret").read_bytes() == before
    assert sorted(p.name for p in (folder / "clients").iterdir()) == ["client.key", "nuke-2.key"]
    assert CurveKeys.from_dir(folder, "nuke-2").public != CurveKeys.from_dir(folder).public
    with pytest.raises(FileExistsError):
        add_client(folder, "nuke-2")
    proc = _serve(tmp_path / "cache", "--curve-keys", str(folder), "--make-keys")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "already holds keys" in err
    assert (folder / "client.key_secret").read_bytes() == before


# -- the soak: well-behaved clients under attack -----------------------------------------------


def test_the_soak_at_its_smallest_delivers_exactly_once_and_reports_json():
    import json

    from server.soak import SCHEMA, run_benchmark
    from warpcore.bench.schema import check

    result = json.loads(json.dumps(run_benchmark(smoke=True)))
    check(result, SCHEMA)
    assert result["shots"] >= 1 and result["exactly_once"] is True
    assert result["duplicates"] == 0 and result["missing"] == 0
    assert set(result["hostile_sent"]) == {"malformed", "oversized", "amplifying", "never_reading"}
    assert all(v > 0 for v in result["hostile_sent"].values())
    assert result["heartbeat_ms"]["n"] > 10 and result["heartbeat_ms"]["p50"] > 0
    rss, cache = result["rss_mb"], result["cache_mb"]
    assert rss["start"] <= rss["peak"] and cache["peak"] <= cache["limit"]
    assert result["targets_met"]["cache_never_above_limit"] is True
    assert result["targets_met"]["peak_rss_under_start_plus_1gb"] is True
    assert set(result["targets_met"]) == {
        "exactly_once",
        "heartbeat_p99_under_100ms",
        "peak_rss_under_start_plus_1gb",
        "end_rss_within_100mb",
        "cache_never_above_limit",
    }


def test_an_error_record_is_counted_so_eviction_keeps_the_cache_in_step(tmp_path):
    """``used`` equals the bytes on disk after a failed shot's error record is written and
    after it is evicted (an uncounted record made eviction subtract bytes never added, and
    the soak's cache then crept over its limit)."""
    from server.cache import ShotCache, ShotMeta, tree_bytes

    cache = ShotCache(tmp_path, max_bytes=10**9, busy=lambda key: False)
    frame = np.zeros((16, 16, 3), np.float32)
    for key in ("a" * 32, "b" * 32):
        cache.create(ShotMeta(key, {"task": "upscale"}, 1, 16, 16, "none", "parts"), [frame])
    cache.write_error("a" * 32, "the model returned NaN " + "x" * 2000)
    assert cache.used == tree_bytes(tmp_path)
    cache.remove("a" * 32)
    assert cache.used == tree_bytes(tmp_path)
    cache.clear_error("b" * 32)  # nothing to clear: nothing changes
    assert cache.used == tree_bytes(tmp_path)


def test_the_disk_sampler_counts_a_file_renamed_during_its_walk_once(tmp_path, monkeypatch):
    """The soak samples the cache with ``tree_bytes`` while the server renames temporaries into
    place; a file moved into a folder the walk has not reached yet was counted twice (the
    soak reported a peak over the limit that the disk never held)."""
    from server.cache import tree_bytes

    (tmp_path / ".a.tmp").mkdir()  # a shot being built: sorts first, walked first
    (tmp_path / ".a.tmp" / "f.npy").write_bytes(b"x" * 1000)
    (tmp_path / "zz").mkdir()
    walk = os.walk

    def walk_and_rename(top, *args, **kwargs):
        for entry in walk(top, *args, **kwargs):
            yield entry
            if entry[0].endswith(".a.tmp"):  # renamed into place between two folders
                os.rename(tmp_path / ".a.tmp" / "f.npy", tmp_path / "zz" / "f.npy")

    monkeypatch.setattr(os, "walk", walk_and_rename)
    assert tree_bytes(tmp_path) == 1000
    monkeypatch.setattr(os, "walk", walk)
    os.link(tmp_path / "zz" / "f.npy", tmp_path / "zz" / "g.npy")  # one file, two names
    assert tree_bytes(tmp_path) == 1000


def test_a_shots_meta_file_is_reserved_before_it_is_written(tmp_path):
    """A long prompt makes ``meta.json`` tens of KB (JSON escapes non-ASCII): it was written
    beyond the 4 KB reserved for it (``create``) or with nothing reserved (a chunked upload's
    ``adopt``), so the cache passed its limit."""
    from server.cache import CacheFull, ShotCache, ShotMeta

    frame = np.zeros((16, 16, 3), np.float32)
    request = {"task": "upscale", "prompt": "\u00e9" * 4096}  # ~25 KB of JSON
    limit = frame.nbytes + 128 + 8192
    for how in ("create", "adopt"):
        cache = ShotCache(tmp_path / how, max_bytes=limit, busy=lambda key: False)
        meta = ShotMeta("c" * 32, request, 1, 16, 16, "none", "parts")
        with pytest.raises(CacheFull):
            if how == "create":
                cache.create(meta, [frame])
            else:
                folder = cache.root / ".upload-x.tmp"
                (folder / "inputs").mkdir(parents=True)
                cache.reserve(frame.nbytes + 128)
                np.save(folder / "inputs" / "f00000.npy", frame)
                cache.adopt(folder, meta, frame.nbytes + 128)
        assert cache.used == 0 and cache.reserved == 0 and not cache.exists(meta.key)


def test_the_soak_samples_bytes_that_were_on_disk_together(tmp_path, monkeypatch):
    """A plain walk is not a snapshot: a shot counted early in the walk and then evicted to
    make room for a frame that a later folder shows adds up bytes never on disk together (the
    soak's "cache over its limit by one tiny frame"). The soak's sampler counts only what is
    still there when its walk ends."""
    from server.cache import tree_bytes
    from server.soak import _disk_snapshot

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "f.npy").write_bytes(b"x" * 1000)
    walk = os.walk

    def walk_while_evicting(top, *args, **kwargs):
        for entry in walk(top, *args, **kwargs):
            entry[1].sort()  # a before b (a top-down walk follows its dirnames list)
            yield entry
            if entry[0].endswith("/a"):  # shot a evicted, then a frame of b written
                (tmp_path / "b" / "g.npy").write_bytes(b"y" * 700)  # (not a's inode reused)
                (tmp_path / "a" / "f.npy").unlink()

    monkeypatch.setattr(os, "walk", walk_while_evicting)
    assert tree_bytes(tmp_path) == 1700  # what the soak used to report: never on disk
    (tmp_path / "b" / "g.npy").unlink()
    (tmp_path / "a" / "f.npy").write_bytes(b"x" * 1000)
    assert _disk_snapshot(tmp_path) == 700
    monkeypatch.setattr(os, "walk", walk)
    assert _disk_snapshot(tmp_path) == 700 == tree_bytes(tmp_path)


def test_the_cache_never_holds_more_than_its_limit_counting_writes_under_way(tmp_path):
    """``held_peak`` (stored + reserved, what ``status`` reports and the soak checks) stays
    within the limit while evictions make room, and is an upper bound of the disk."""
    from server.cache import ShotCache, ShotMeta, tree_bytes

    frame = np.zeros((16, 16, 3), np.float32)
    limit = 3 * (frame.nbytes + 128) + 3 * 600
    cache = ShotCache(tmp_path, max_bytes=limit, busy=lambda key: False)
    peak_disk = 0
    for i in range(8):
        key = f"{i:032x}"
        cache.create(ShotMeta(key, {"task": "upscale"}, 1, 16, 16, "none", "parts"), [frame])
        cache.write_frame(key, 0, frame)
        peak_disk = max(peak_disk, tree_bytes(tmp_path))
        assert cache.used == tree_bytes(tmp_path)
    assert cache.evicted > 0
    assert peak_disk <= cache.held_peak <= limit

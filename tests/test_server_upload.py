"""Chunked upload (open_shot / add_frames / start_shot): same frames as submit, every body
field validated with an error naming it, and keys that follow content and parameters."""

from __future__ import annotations

import numpy as np
import pytest

from server.client import Client, ServerError, Shot
from server.testing import running_server, tiny_shot, wait_until

REQUEST = {"task": "inpaint", "steps": 2, "propagate": 2}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("cache")) as srv, Client(srv.address) as c:
        yield c


@pytest.fixture(scope="module")
def shot():
    frames, masks = tiny_shot(3, 24)
    rgba = [np.concatenate([f, m], -1) for f, m in zip(frames, masks, strict=True)]
    return frames, masks, rgba


def test_upload_in_batches_equals_submit(client, shot):
    frames, masks, rgba = shot
    key = client.upload(REQUEST, iter(rgba), len(rgba), "alpha", batch=3, subscribe=False)
    ref = client.submit(Shot(REQUEST, rgba, masks="alpha"), subscribe=False)
    for t in range(3):
        np.testing.assert_array_equal(client.get_frame(key, t), client.get_frame(ref, t))
    key_m = client.upload(REQUEST, iter(frames), 3, iter(masks), batch=2, subscribe=False)
    ref_m = client.submit(Shot(REQUEST, frames, masks=masks), subscribe=False)
    np.testing.assert_array_equal(client.get_frame(key_m, 1), client.get_frame(ref_m, 1))


def test_keys_follow_content_and_parameters(client, shot):
    _, _, rgba = shot
    a = client.upload(REQUEST, rgba, 3, "alpha", subscribe=False)
    assert client.upload(REQUEST, rgba, 3, "alpha", batch=1, subscribe=False) == a
    assert client.upload({**REQUEST, "seed": 1}, rgba, 3, "alpha", subscribe=False) != a
    changed = [f.copy() for f in rgba]
    changed[2][5, 5, 0] += 0.25
    assert client.upload(REQUEST, changed, 3, "alpha", subscribe=False) != a


def test_streamed_events_after_start_shot(client, shot):
    frames, _, _ = shot
    key = client.upload({"task": "upscale", "scale": 2, "steps": 1}, frames[:2], 2)
    kinds = [ev.kind for ev in client.events(key, timeout=120)]
    assert kinds[-1] == "finished" and kinds.count("frame") == 2


def _open(client: Client, **body):
    base = {"request": REQUEST, "n_frames": 2, "height": 16, "width": 16, "masks": "masks"}
    return client.request("open_shot", {**base, **body}).body["upload"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"n_frames": 0}, "bad_body", "n_frames"),
        ({"height": 20000}, "bad_body", "height"),
        ({"height": 8}, "bad_body", "height"),
        ({"width": "8"}, "bad_body", "width"),
        ({"channels": 2}, "bad_body", "channels"),
        ({"dtype": "float64"}, "bad_body", "dtype"),
        ({"masks": "painted"}, "bad_body", "masks"),
        ({"masks": "alpha", "channels": 3}, "bad_body", "masks"),
        ({"request": {"task": "upscale"}, "masks": "alpha"}, "bad_body", "masks"),
        ({"request": {"task": "paint"}}, "bad_request", "task"),
        ({"request": None}, "bad_body", "request"),
    ],
)
def test_open_shot_validates_every_field(client, body, code, field):
    with pytest.raises(ServerError) as err:
        _open(client, **body)
    assert err.value.code == code and field in err.value.message


def test_add_frames_and_start_shot_validate(client):
    token = _open(client)
    frame = np.zeros((16, 16, 4), np.float32)
    matte = np.zeros((16, 16, 1), np.float32)
    from server.protocol import array_part

    def send(start, frames, masks, **extra):
        parts, fd, md = [], [], []
        for f in frames:
            d, buf = array_part(f, len(parts))
            parts.append(buf)
            fd.append(d)
        for m in masks:
            d, buf = array_part(m, len(parts))
            parts.append(buf)
            md.append(d)
        body = {"upload": token, "start": start, "frames": fd, "masks": md, **extra}
        return client.request("add_frames", body, parts)

    cases = [
        (lambda: send(1, [frame], [matte]), "bad_body", "start"),
        (lambda: send(0, [frame[:4]], [matte]), "bad_body", "frames[0]"),
        (lambda: send(0, [frame.astype(np.float16)], [matte]), "bad_body", "frames[0]"),
        (lambda: send(0, [frame], []), "bad_body", "masks"),
        (lambda: send(0, [frame] * 3, [matte] * 3), "bad_body", "frames"),
        (lambda: send(0, [frame], [matte[:4]]), "bad_body", "masks[0]"),
        (lambda: send(0, [frame], [matte], upload="nope"), "unknown_shot", "upload"),
        (lambda: send(0, [frame], [matte], upload="0" * 32), "unknown_shot", "upload"),
    ]
    for call, code, field in cases:
        with pytest.raises(ServerError) as err:
            call()
        assert err.value.code == code and field in err.value.message, err.value
    nan = frame.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ServerError) as err:  # checked on the intake thread; the upload is gone
        send(0, [nan], [matte])
    assert err.value.code == "bad_request" and "frames[0]" in err.value.message
    with pytest.raises(ServerError) as err:
        send(0, [frame], [matte])
    assert err.value.code == "unknown_shot"
    token = _open(client)
    assert send(0, [frame], [matte]).body["received"] == 1
    with pytest.raises(ServerError) as err:  # one frame still missing
        client.request("start_shot", {"upload": token})
    assert err.value.code == "bad_body" and "1 of 2" in err.value.message
    with pytest.raises(ServerError) as err:
        client.request("start_shot", {"upload": token, "dtype": "float64"})
    assert err.value.code == "bad_body"
    assert send(1, [frame], [matte]).body["received"] == 2
    with pytest.raises(ServerError) as err:
        client.request("start_shot", {"upload": token, "stream": "yes"})
    assert "stream" in err.value.message
    body = client.request("start_shot", {"upload": token, "subscribe": False}).body
    assert body["n_frames"] == 2 and len(body["key"]) == 32
    with pytest.raises(ServerError) as err:  # an upload starts once
        client.request("start_shot", {"upload": token})
    assert err.value.code == "unknown_shot"


def test_cache_accounting_after_uploads(tmp_path, shot):
    """Reservations of stored, duplicate and failed uploads are all given back."""
    _, _, rgba = shot
    with running_server(tmp_path) as srv, Client(srv.address) as c:
        c.upload(REQUEST, rgba, 3, "alpha", subscribe=False)
        c.upload(REQUEST, rgba, 3, "alpha", subscribe=False)  # the same shot: not stored twice
        bad = [f.copy() for f in rgba]
        bad[1][0, 0, 0] = np.inf
        with pytest.raises(ServerError):
            c.upload(REQUEST, bad, 3, "alpha", batch=1, subscribe=False)
        # the failed upload's files and reservation go on the intake thread, after the reply
        assert wait_until(lambda: srv.cache.reserved == 0, timeout=10)
        assert srv.cache.used > 0
        assert wait_until(lambda: not list(tmp_path.glob(".upload-*")), timeout=10)


def test_bad_image_inside_a_batch_is_named_and_reserves_nothing(tmp_path, shot):
    """Each image is checked (on its own thread, while the one before is written) before room
    is reserved for it: a bad image never makes the cache evict an idle shot to make room for
    itself, and a bad one later in a batch is named by its place in the batch."""
    frames, masks, rgba = shot
    frames = [f.astype(np.float32) for f in frames]
    masks = [m.astype(np.float32) for m in masks]
    one_shot = sum(f.nbytes + m.nbytes + 256 for f, m in zip(frames, masks, strict=True))
    with running_server(tmp_path, cache_max_bytes=one_shot + 4096) as srv, Client(srv.address) as c:
        kept = c.upload(REQUEST, frames, 3, masks, subscribe=False)
        c.cancel(kept)
        assert wait_until(lambda: not srv.cache.busy(kept), timeout=30)
        request = {**REQUEST, "seed": 7}  # another shot: it needs room of its own
        for bad_frames, bad_masks, where in [
            ([frames[0] * np.nan, frames[1], frames[2]], masks, "frames[0]"),
            ([frames[0], frames[1], frames[2] * np.nan], masks, "frames[2]"),
            (frames, [masks[0], masks[1] + np.inf, masks[2]], "masks[1]"),
        ]:
            with pytest.raises(ServerError) as err:
                c.upload(request, bad_frames, 3, bad_masks, batch=3, subscribe=False)
            assert err.value.code == "bad_request" and where in err.value.message, err.value
            assert wait_until(lambda: srv.cache.reserved == 0, timeout=10)
            assert wait_until(lambda: not list(tmp_path.glob(".upload-*")), timeout=10)
            if where == "frames[0]":  # nothing of the batch was good: nothing made room
                assert srv.cache.exists(kept) and srv.cache.evicted == 0


def test_upload_keeps_the_servers_window_of_batches_in_flight(client, shot, monkeypatch):
    """The client posts the next batch while the server stores the ones before, up to
    open_shot's batch_limit and never more; the key is the one-batch upload's. A bad frame
    in a pipelined upload is named by the first failed batch's reply, the later batches'
    replies are dropped (nothing left waiting), and the client goes on working."""
    _, _, rgba = shot
    six = [f * (0.5 + i / 20) for i in range(2) for f in rgba]
    in_flight, most = set(), [0]
    post, wait = client._post, client._await

    def counting_post(type, *args, **kwargs):
        posted = post(type, *args, **kwargs)
        if type == "add_frames":
            in_flight.add(posted.id)
            most[0] = max(most[0], len(in_flight))
        return posted

    def counting_await(posted, *args, **kwargs):
        try:
            return wait(posted, *args, **kwargs)
        finally:
            in_flight.discard(posted.id)

    monkeypatch.setattr(client, "_post", counting_post)
    monkeypatch.setattr(client, "_await", counting_await)
    key = client.upload(REQUEST, iter(six), 6, "alpha", batch=1, subscribe=False)
    assert most[0] == 2  # the server's batch_limit (open_shot reply)
    monkeypatch.undo()
    assert key == client.upload(REQUEST, iter(six), 6, "alpha", batch=6, subscribe=False)
    bad = [f.copy() for f in six]
    bad[2][0, 0, 0] = np.nan
    with pytest.raises(ServerError) as err:
        client.upload({**REQUEST, "seed": 9}, iter(bad), 6, "alpha", batch=1, subscribe=False)
    assert err.value.code == "bad_request" and "NaN" in err.value.message, err.value
    assert wait_until(lambda: not client._pending, timeout=5)  # the later replies were dropped
    assert client.hello()["protocol"]
    client.cancel(key)

"""The wire protocol: envelope, binary parts, limits, and bad messages on a real socket."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import numpy as np
import pytest

from server.protocol import (
    PROTOCOL_VERSION,
    Limits,
    ProtocolError,
    array_part,
    decode,
    encode,
    from_float,
    unpack_array,
)
from server.testing import RawPeer, envelope, running_server

pytestmark = pytest.mark.timeout(60)


def test_envelope_round_trip_keeps_parts_zero_copy():
    frame = np.arange(2 * 3 * 4, dtype=np.float16).reshape(2, 3, 4)
    desc, buf = array_part(frame, 0)
    msg = decode(encode("echo", {"arrays": [desc]}, id="m1", parent="p0", parts=[buf]))
    assert (msg.v, msg.type, msg.id, msg.parent) == (PROTOCOL_VERSION, "echo", "m1", "p0")
    assert desc == {"part": 0, "dtype": "float16", "shape": [2, 3, 4]}
    out = unpack_array(msg.body["arrays"][0], msg.parts, "arrays[0]")
    np.testing.assert_array_equal(out, frame)
    assert np.shares_memory(out, buf)  # np.frombuffer over the part: no copy


@pytest.mark.parametrize("dtype", ["float16", "float32", "uint8", "uint16"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_every_dtype_and_channel_count_travels(dtype, channels):
    arr = (np.random.default_rng(0).random((5, 7, channels)) * 200).astype(dtype)
    desc, buf = array_part(arr, 0)
    back = unpack_array(desc, [memoryview(buf).cast("B")], "x")
    np.testing.assert_array_equal(back, arr)


def test_from_float_scales_integers():
    x = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    assert from_float(x, "uint8").tolist() == [[[0, 128, 255]]]
    assert from_float(x, "uint16").tolist() == [[[0, 32768, 65535]]]
    assert from_float(x, "float16").dtype == np.float16


@pytest.mark.parametrize(
    "frames, code, words",
    [
        ([b"\xc1"], "bad_envelope", "not valid msgpack"),
        ([msgpack.packb([1, 2])], "bad_envelope", "must be a map"),
        ([envelope("hello", v=99)], "bad_version", "accepted: [1]"),
        ([envelope("hello", v="1")], "bad_envelope", "protocol version"),
        ([envelope("hello", id=None)], "bad_envelope", "id:"),
        ([envelope("hello", body=[1])], "bad_envelope", "body: expected a map"),
        ([envelope(7)], "bad_envelope", "type:"),
        ([], "bad_envelope", "empty message"),
    ],
)
def test_decode_rejects_bad_envelopes_with_a_reason(frames, code, words):
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    assert info.value.code == code and words in info.value.message


def test_limits_are_checked_before_unpacking():
    small = Limits(max_parts=2, max_part_bytes=100, max_total_bytes=210, max_envelope_bytes=64)
    for frames, words in [
        ([envelope("echo"), b"", b"", b""], "3 binary parts"),
        ([envelope("echo"), b"x" * 101], "part 0 is 101 bytes"),
        ([envelope("echo"), b"x" * 100, b"x" * 100], "bytes in all"),
        ([envelope("echo", body={"pad": "x" * 80})], "envelope is"),
    ]:
        with pytest.raises(ProtocolError) as info:
            decode(frames, small)
        assert info.value.code == "too_large" and words in info.value.message


def test_unpack_array_names_the_problem():
    parts = [memoryview(bytes(10))]
    cases = [
        ({"part": 1, "dtype": "uint8", "shape": [2, 5, 1]}, "truncated", "has 1 binary parts"),
        ({"part": 0, "dtype": "uint8", "shape": [4, 5, 1]}, "truncated", "needs 20"),
        ({"part": 0, "dtype": "uint8", "shape": [1, 5, 1]}, "bad_body", "needs 5"),
        ({"part": 0, "dtype": "int64", "shape": [2, 5, 1]}, "bad_body", "accepted"),
        ({"part": 0, "dtype": "uint8", "shape": [2, 5, 2]}, "bad_body", "C must be"),
        ({"part": 0, "dtype": "uint8", "shape": [10]}, "bad_body", "[H, W, C]"),
        ({"part": -1, "dtype": "uint8", "shape": [2, 5, 1]}, "bad_body", "part index"),
        ("x", "bad_body", "{part, dtype, shape}"),
    ]
    for desc, code, words in cases:
        with pytest.raises(ProtocolError) as info:
            unpack_array(desc, parts, "frames[0]")
        assert info.value.code == code and words in info.value.message, (desc, info.value)


def test_client_imports_no_torch():
    code = (
        "import sys, server.client, server.testing; "
        "bad = [m for m in ('torch', 'warpcore') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def _error(peer: RawPeer) -> dict:
    got = peer.recv(5.0)
    assert got is not None, "no reply"
    env, _ = got
    assert env["type"] == "error", env
    return env


def test_bad_messages_get_error_replies_and_the_server_keeps_serving(tmp_path):
    limits = Limits(max_parts=8, max_part_bytes=4096, max_total_bytes=16384)
    with running_server(tmp_path, limits=limits) as server, RawPeer(server.address) as peer:
        frame_desc = {"part": 0, "dtype": "float32", "shape": [32, 32, 3]}
        req = {"task": "inpaint", "model": "gaussian"}
        cases = [
            ([b"not msgpack \xc1"], "bad_envelope"),
            ([msgpack.packb("a string")], "bad_envelope"),
            ([envelope("hello", v=2)], "bad_version"),
            ([envelope("hello", v=0, id="old")], "bad_version"),
            ([envelope("launch_missiles")], "unknown_type"),
            ([envelope("echo"), b"x" * 5000], "too_large"),
            ([envelope("echo"), *([b"x"] * 9)], "too_large"),
            ([envelope("submit", {"request": req, "frames": [frame_desc]})], "truncated"),
            (
                [envelope("submit", {"request": req, "frames": [frame_desc]}), b"\0" * 100],
                "truncated",
            ),
            ([envelope("submit", {"request": {"task": "paint"}})], "bad_request"),
            (
                [envelope("submit", {"request": {"task": "inpaint", "steps": "many"}})],
                "bad_request",
            ),
            ([envelope("submit", {"request": req, "frames": "all of them"})], "bad_body"),
            ([envelope("get_frame", {"key": "0" * 32, "frame": 0})], "unknown_shot"),
            ([envelope("get_frame", {"key": 5})], "bad_body"),
            ([envelope("cancel", {})], "bad_body"),
        ]
        for frames, code in cases:
            peer.send(frames)
            env = _error(peer)
            assert env["body"]["code"] == code, (frames[0][:40], env)
            assert env["body"]["message"], env
            assert env["v"] == PROTOCOL_VERSION
        # the id of a wrong-version message still comes back as the parent
        peer.send([envelope("hello", v=0, id="old-client")])
        assert _error(peer)["parent"] == "old-client"
        peer.send([envelope("hello", id="after")])
        env, _ = peer.recv(5.0)
        assert env["type"] == "hello_reply" and env["parent"] == "after"


def test_a_req_socket_gets_replies_too(tmp_path):
    with running_server(tmp_path) as server, RawPeer(server.address, req=True) as peer:
        peer.send([envelope("heartbeat", id=1)])
        env, _ = peer.recv(5.0)
        assert env["type"] == "heartbeat_reply" and env["parent"] == 1
        assert env["body"]["busy"] is False
        peer.send([b"\x00garbage"])
        assert _error(peer)["body"]["code"] == "bad_envelope"


def test_echo_returns_the_parts_unchanged(tmp_path):
    from server.client import Client, ServerError

    with running_server(tmp_path) as server, Client(server.address, timeout=10) as client:
        a = np.random.default_rng(1).random((64, 48, 4)).astype(np.float16)
        m = (np.random.default_rng(2).random((64, 48, 1)) * 65535).astype(np.uint16)
        back = client.echo([a, m])
        np.testing.assert_array_equal(back[0], a)
        np.testing.assert_array_equal(back[1], m)
        with pytest.raises(ServerError) as info:
            client.request("echo", {"arrays": [{"part": 3, "dtype": "uint8", "shape": [1, 1, 1]}]})
        assert info.value.code == "truncated"

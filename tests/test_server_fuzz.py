"""Property-based fuzzing of the server over real loopback sockets: no crash, no hang.

Every generated message (random envelopes, random bodies for every request type, random
descriptors and parts, raw random bytes) must get exactly one reply within a deadline: a
``*_reply`` or an ``error`` with a code the protocol documents. ``shutdown`` is left out.
"""

from __future__ import annotations

import itertools

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.protocol import ERROR_CODES, REQUEST_TYPES, Limits
from server.testing import RawPeer, running_server

pytestmark = pytest.mark.timeout(120)

REPLY_WITHIN_S = 5.0
TYPES = [t for t in REQUEST_TYPES if t != "shutdown"]
FIELDS = [
    "request", "frames", "masks", "paths", "key", "frame", "wait", "dtype", "stream",
    "previews", "subscribe", "start", "stop", "from", "resume", "arrays",
]  # fmt: skip
_ids = itertools.count()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.binary(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
descriptors = st.fixed_dictionaries(
    {
        "part": st.integers(-1, 3),
        "dtype": st.sampled_from(["float16", "float32", "uint8", "uint16", "int8", ""]),
        "shape": st.lists(st.integers(-1, 9), max_size=4),
    }
)
requests = st.fixed_dictionaries(
    {"task": st.sampled_from(["inpaint", "upscale", "paint"])},
    optional={
        "steps": st.integers(-1, 3),
        "model": st.sampled_from(["gaussian", "nope"]),
        "scale": st.sampled_from([1, 2, 4]),
        "noise": values,
    },
)
field_values = st.one_of(values, descriptors, st.lists(descriptors, max_size=3), requests)
bodies = st.one_of(
    values, st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), field_values, max_size=5)
)
parts = st.lists(st.binary(max_size=300), max_size=4)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    limits = Limits(max_parts=6, max_part_bytes=256, max_total_bytes=1024, max_envelope_bytes=4096)
    cache = tmp_path_factory.mktemp("fuzz-cache")
    with running_server(cache, model="gaussian", limits=limits, queue_limit=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def peer(server):
    with RawPeer(server.address) as p:
        yield p


def _reply_to(peer: RawPeer, msg_id: object) -> dict:
    """The next non-event message (events of a fuzzed submit may come in between)."""
    while True:
        got = peer.recv(REPLY_WITHIN_S)
        assert got is not None, f"no reply within {REPLY_WITHIN_S} s: the server hangs"
        env, _ = got
        if env.get("type") != "event":
            return env


def _check(env: dict, msg_id: object) -> None:
    assert env["v"] == 1
    if env["type"] == "error":
        assert env["body"]["code"] in ERROR_CODES, env
        assert env["body"]["code"] != "internal", env  # a bug, even if the server survived it
        assert isinstance(env["body"]["message"], str) and env["body"]["message"]
    else:
        assert env["type"].endswith("_reply"), env
    if env["parent"] is not None:
        assert env["parent"] == msg_id


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    v=st.one_of(st.just(1), st.just(1), values),
    type_=st.one_of(st.sampled_from(TYPES), st.text(max_size=10), values),
    body=bodies,
    extra=parts,
)
def test_fuzzed_envelopes_get_one_reply_each(peer, v, type_, body, extra):
    if type_ == "shutdown":
        type_ = "status"
    msg_id = f"fuzz-{next(_ids)}"
    env = {"v": v, "type": type_, "id": msg_id, "parent": None, "body": body}
    peer.send([msgpack.packb(env, use_bin_type=True), *extra])
    _check(_reply_to(peer, msg_id), msg_id)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_raw_bytes_get_an_error_or_a_reply(peer, frames):
    if b"shutdown" in frames[0]:
        return
    peer.send(frames)
    env = _reply_to(peer, None)
    assert env["type"] == "error" or env["type"].endswith("_reply")


def test_the_server_still_serves_after_the_fuzzing(server, peer):
    peer.send([msgpack.packb({"v": 1, "type": "hello", "id": "last", "body": {}})])
    env = _reply_to(peer, "last")
    assert env["type"] == "hello_reply" and env["parent"] == "last"
    assert server._thread.is_alive()

"""Optional CURVE authentication: only clients whose public key is in the folder get in."""

from __future__ import annotations

import pytest
import zmq

from server.client import Client
from server.keys import CurveKeys, make_keys, write_key_pair
from server.testing import running_server

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE"),
]


def test_only_clients_with_an_allowed_key_are_served(tmp_path):
    keys = make_keys(tmp_path / "keys")
    stranger = tmp_path / "stranger"  # a well-formed key pair the server never allowed
    write_key_pair(stranger, "client", *zmq.curve_keypair())
    (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
    with running_server(tmp_path / "cache", curve_keys=str(keys)) as server:
        with Client(server.address, curve_keys=keys, timeout=10) as good:
            assert good.hello()["protocol"] == 1
        with Client(server.address, timeout=1.5) as plain, pytest.raises(TimeoutError):
            plain.hello()
        with (
            Client(server.address, curve_keys=stranger, timeout=1.5) as other,
            pytest.raises(TimeoutError, match="keys allowed"),
        ):
            other.hello()
        with Client(server.address, curve_keys=CurveKeys.from_dir(keys)) as again:
            assert again.heartbeat()["busy"] is False  # refusals did not hurt the server


def test_missing_key_files_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="--make-keys"):
        CurveKeys.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="--make-keys"):
        running_server(tmp_path / "cache", curve_keys=str(tmp_path)).__enter__()

"""ZeroMQ CURVE keys in files (optional authentication for a server on another machine).

A key folder (``warpdiff serve --curve-keys DIR``) holds::

    DIR/server.key          server public key   (give to hosts)
    DIR/server.key_secret   server key pair     (stays on the server)
    DIR/clients/NAME.key    public keys of the clients allowed in
    DIR/NAME.key_secret     a client key pair made by ``make_keys`` (give to that host)

The files are in ZeroMQ's certificate format (``zmq.auth.load_certificate`` reads them); the
keys come from ``zmq.curve_keypair``. Imports pyzmq only: the client uses this module too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

_TEMPLATE = """#   ZeroMQ CURVE certificate written by warpdiff ({kind})
metadata
curve
    public-key = "{public}"
{secret_line}"""


@dataclass(frozen=True)
class CurveKeys:
    """A client's key pair and the server's public key (Z85 bytes, 40 characters each)."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_dir(cls, folder: str | os.PathLike[str], name: str = "client") -> CurveKeys:
        """Load ``folder/NAME.key_secret`` and ``folder/server.key``."""
        folder = Path(folder)
        mine, server = folder / f"{name}.key_secret", folder / "server.key"
        for path in (mine, server):
            if not path.is_file():
                raise FileNotFoundError(
                    f"curve keys: {path} is missing; make a key folder with "
                    f"`warpdiff serve --curve-keys {folder} --make-keys` and copy "
                    f"{name}.key_secret and server.key to this host"
                )
        public, secret = zmq.auth.load_certificate(str(mine))
        server_public, _ = zmq.auth.load_certificate(str(server))
        if secret is None:
            raise ValueError(f"curve keys: {mine} holds no secret key")
        return cls(public, secret, server_public)


def write_key_pair(folder: Path, name: str, public: bytes, secret: bytes | None) -> None:
    """Write ``NAME.key`` (public) and, given a secret, ``NAME.key_secret`` (mode 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    pub = _TEMPLATE.format(kind="public", public=public.decode(), secret_line="")
    (folder / f"{name}.key").write_text(pub)
    if secret is None:
        return
    secret_path = folder / f"{name}.key_secret"
    line = f'    secret-key = "{secret.decode()}"\n'
    secret_path.write_text(
        _TEMPLATE.format(kind="secret", public=public.decode(), secret_line=line)
    )
    secret_path.chmod(0o600)


def make_keys(folder: str | os.PathLike[str], clients: tuple[str, ...] = ("client",)) -> Path:
    """Create a server key pair (if missing) and a key pair per named client; returns the folder."""
    folder = Path(folder)
    if not (folder / "server.key_secret").is_file():
        write_key_pair(folder, "server", *zmq.curve_keypair())
    for name in clients:
        public, secret = zmq.curve_keypair()
        write_key_pair(folder, name, public, secret)
        write_key_pair(folder / "clients", name, public, None)
    return folder


def server_keys(folder: str | os.PathLike[str]) -> tuple[bytes, bytes, Path]:
    """(server public, server secret, folder of allowed client public keys)."""
    folder = Path(folder)
    path = folder / "server.key_secret"
    if not path.is_file():
        raise FileNotFoundError(
            f"curve keys: {path} is missing; create the folder with "
            f"`warpdiff serve --curve-keys {folder} --make-keys`"
        )
    public, secret = zmq.auth.load_certificate(str(path))
    clients = folder / "clients"
    if not clients.is_dir() or not any(clients.glob("*.key")):
        raise FileNotFoundError(
            f"curve keys: no client public keys in {clients}; every allowed host needs one "
            "(`--make-keys` writes one)"
        )
    return public, secret, clients

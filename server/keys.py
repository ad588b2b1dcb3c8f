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
import re
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

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


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never there with wider permissions);
    refuses to replace a file that exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_key_pair(folder: Path, name: str, public: bytes, secret: bytes | None) -> None:
    """Write ``NAME.key`` (public) and, given a secret, ``NAME.key_secret`` (created 0600).

    Raises ``FileExistsError`` rather than replace a key that exists."""
    if not NAME.fullmatch(name):
        raise ValueError(f"key name: expected letters, digits, '-' or '_', got {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    for path in (folder / f"{name}.key", folder / f"{name}.key_secret"):
        if path.exists():
            raise FileExistsError(f"curve keys: {path} exists; keys are never replaced")
    if secret is not None:
        line = f'    secret-key = "{secret.decode()}"\n'
        text = _TEMPLATE.format(kind="secret", public=public.decode(), secret_line=line)
        _write_new(folder / f"{name}.key_secret", text, 0o600)
    pub = _TEMPLATE.format(kind="public", public=public.decode(), secret_line="")
    _write_new(folder / f"{name}.key", pub, 0o644)


def make_keys(folder: str | os.PathLike[str], clients: tuple[str, ...] = ("client",)) -> Path:
    """Create a new key folder: a server key pair and a key pair per named client.

    Refuses (``FileExistsError``) when the folder already holds keys: the keys handed out
    would stop working. Add a host to an existing folder with :func:`add_client`."""
    folder = Path(folder)
    if (folder / "server.key_secret").exists() or (folder / "server.key").exists():
        raise FileExistsError(
            f"curve keys: {folder} already holds keys; making new ones would lock out every "
            f"host that has them. Add a host with `warpdiff serve --curve-keys {folder} "
            "--add-client NAME`"
        )
    write_key_pair(folder, "server", *zmq.curve_keypair())
    for name in clients:
        add_client(folder, name)
    return folder


def add_client(folder: str | os.PathLike[str], name: str) -> Path:
    """A new client key pair beside the existing ones; the server lets it in at its next
    start. Refuses (``FileExistsError``) a name already used."""
    folder = Path(folder)
    if not (folder / "server.key").is_file():
        raise FileNotFoundError(
            f"curve keys: no server key in {folder}; make the folder with --make-keys first"
        )
    if (folder / "clients" / f"{name}.key").exists():
        raise FileExistsError(f"curve keys: a client named {name!r} exists in {folder}")
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

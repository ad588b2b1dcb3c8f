"""Where the server is and where results go: environment first, then defaults."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from warpdiff_host.errors import HostError

DEFAULT_ADDRESS = "tcp://127.0.0.1:5557"
CONNECT_TIMEOUT_S = 3.0


_ADDRESS = re.compile(r"^(tcp://(\[[0-9a-fA-F:]+\]|[\w.-]+):\d{1,5}|ipc://.+)$")


def server_address(address: str | None = None) -> str:
    """``address``, else ``$WARPDIFF_SERVER``, else the default loopback address; ``host:port``
    gets ``tcp://``. A malformed address is an error naming the accepted forms."""
    value = (address or os.environ.get("WARPDIFF_SERVER") or DEFAULT_ADDRESS).strip()
    value = value if "://" in value else f"tcp://{value}"
    if not _ADDRESS.match(value):
        raise HostError(
            f"server address {value!r}: expected tcp://HOST:PORT, HOST:PORT or ipc://PATH "
            "(set WARPDIFF_SERVER)"
        )
    return value


def curve_keys() -> str | None:
    """``$WARPDIFF_CURVE_KEYS``: the client key folder, when the server uses CURVE."""
    return os.environ.get("WARPDIFF_CURVE_KEYS") or None


def connect_timeout() -> float:
    return float(os.environ.get("WARPDIFF_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S))


def is_local(address: str) -> bool:
    """True when the server runs on this machine (so it can read this machine's files)."""
    if address.startswith("ipc://"):
        return True
    host = urlparse(address).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def output_root(beside: str | os.PathLike[str] | None = None) -> Path:
    """``$WARPDIFF_OUTPUT_DIR``, else a ``warpdiff`` folder beside ``beside``, else temp."""
    env = os.environ.get("WARPDIFF_OUTPUT_DIR")
    if env:
        return Path(env)
    if beside:
        return Path(beside) / "warpdiff"
    return Path(tempfile.gettempdir()) / "warpdiff"

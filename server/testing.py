"""Helpers for tests of the server and of hosts that talk to it (loopback, ephemeral ports).

- :func:`running_server`: a server in a background thread of this process.
- :class:`ServerProcess`: ``warpdiff serve`` in a subprocess (for ``kill -9`` and memory tests);
  always killed and reaped on exit.
- :class:`RawPeer`: a bare DEALER socket to send arbitrary (malformed) multipart messages.
- :func:`tiny_shot`: small moving frames and mattes, deterministic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

LOOPBACK = "tcp://127.0.0.1:0"


@contextmanager
def running_server(cache_dir: str | os.PathLike[str], **config: Any) -> Iterator[Any]:
    """A :class:`server.app.Server` on an ephemeral loopback port, stopped on exit."""
    from server.app import Server, ServerConfig

    server = Server(ServerConfig(cache_dir=str(cache_dir), bind=LOOPBACK, **config)).start()
    try:
        yield server
    finally:
        server.stop()


class ServerProcess:
    """``python -m warpcore.cli serve ...`` on an ephemeral port; kill with :meth:`kill9`."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *args: str,
        timeout: float = 60,
        threads: int | None = 1,
    ) -> None:
        """``threads``: torch/OpenMP threads of the server (None: the library default)."""
        cmd = [sys.executable, "-m", "warpcore.cli", "serve", "--bind", LOOPBACK]
        cmd += ["--cache", str(cache_dir), "--log-level", "WARNING", *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if threads is not None:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        line = self._first_line(timeout)
        if "listening on " not in line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.kill9()
            raise RuntimeError(f"server did not start: {line!r} {err}")
        self.address = line.rsplit(" ", 1)[-1].strip()

    def _first_line(self, timeout: float) -> str:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        return self.proc.stdout.readline() if ready else ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident memory of the server process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def terminate(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill9()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill9()


class RawPeer:
    """A DEALER socket for hand-made messages; replies are decoded from msgpack."""

    def __init__(self, address: str, req: bool = False) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.REQ if req else zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)

    def send(self, frames: Sequence[bytes]) -> None:
        self.socket.send_multipart(list(frames))

    def recv(self, timeout: float = 5.0) -> tuple[dict[str, Any], list[bytes]] | None:
        """(envelope, parts) of the next message, or None after ``timeout`` seconds."""
        if not self.socket.poll(int(timeout * 1000)):
            return None
        frames = self.socket.recv_multipart()
        if len(frames) > 1 and not frames[0]:  # a reply to a message taken as from REQ
            frames = frames[1:]
        return msgpack.unpackb(frames[0], raw=False), frames[1:]

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def envelope(type: str, body: Any = None, id: Any = "t1", v: Any = 1, **extra: Any) -> bytes:
    """A msgpack envelope, possibly malformed on purpose (any field can be anything)."""
    return msgpack.packb({"v": v, "type": type, "id": id, "parent": None, "body": body, **extra})


def tiny_shot(
    n: int = 4, size: int = 32, seed: int = 0, dtype: str = "float32"
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` RGB frames of a smooth pattern moving 1 px per frame, and square mattes (H, W, 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
    frames, masks = [], []
    for t in range(n):
        shift = t / size
        rgb = [
            0.5 + 0.4 * np.sin(2 * np.pi * (xx + shift) * (c + 1) + phase[c]) * yy for c in range(3)
        ]
        frame = np.stack(rgb, -1).astype(np.float32)
        mask = np.zeros((size, size, 1), np.float32)
        q = size // 4
        mask[q : 2 * q, q + t % 2 : 2 * q + t % 2] = 1.0
        frames.append(frame.astype(dtype) if dtype.startswith("float") else frame)
        masks.append(mask)
    return frames, masks


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds have passed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())

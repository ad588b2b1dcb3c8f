"""Errors a host shows to its user: each says what happened and what to do."""

from __future__ import annotations


class HostError(Exception):
    """Anything the host should show as a message (bad input, server trouble)."""


class ServerUnavailable(HostError):
    """No warpdiff server answers at the address (nothing was sent, or it stopped mid-shot)."""


class ShotCancelled(HostError):
    """The user cancelled; the server keeps the finished frames and a rerun resumes."""

    def __init__(self, message: str, done: int = 0) -> None:
        super().__init__(message)
        self.done = done


class ShotFailed(HostError):
    """The server refused the shot (``code``: the protocol's error code) or the model failed."""

    def __init__(self, message: str, code: str = "failed") -> None:
        super().__init__(message)
        self.code = code


def refused_paths(exc: ShotFailed) -> bool:
    """The server refused to read the files a ``paths`` shot names (send the frames instead)."""
    return exc.code == "bad_request" and "paths" in str(exc)

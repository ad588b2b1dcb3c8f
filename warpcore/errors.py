"""The one error type for bad input anywhere in the engine.

Every message says what was wrong and what is accepted, e.g.
``InvalidInput("flow: expected shape (2, H, W) with H, W > 0, got (3, 64, 64)")``.
"""

from __future__ import annotations


class InvalidInput(ValueError):
    """Bad input (a file, a parameter, a tensor, a message): raised before any compute."""


class ModelNotFound(FileNotFoundError):
    """A model folder or hub id that is not on this machine; the message says how to get it."""


class Cancelled(Exception):
    """Raised inside the engine when ``should_stop()`` answered True; finished frames are kept."""

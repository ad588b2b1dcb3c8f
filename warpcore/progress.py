"""One progress/cancel mechanism, used by the engine, the server, the CLI and the panel.

Producers call ``on_event(Event(...))``; long loops poll ``should_stop()`` and raise
:class:`warpcore.errors.Cancelled` when it answers True.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["queued", "started", "progress", "frame", "finished", "cancelled", "error"]


@dataclass(frozen=True)
class Event:
    """A typed progress event. ``frame``/``step`` are 0-based; ``n_*`` are totals."""

    kind: EventKind
    frame: int = -1
    n_frames: int = 0
    step: int = -1
    n_steps: int = 0
    eta_s: float | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[Event], None]
ShouldStop = Callable[[], bool]


def no_events(_event: Event) -> None:
    """An event sink that drops everything."""


def never_stop() -> bool:
    """A ``should_stop`` that never asks to stop."""
    return False

"""Everything that waits on the server runs here, off the GUI thread; results come back by signal.

- :func:`run_call`: one blocking call on the global ``QThreadPool``; ``done(result)`` or
  ``failed(message)`` arrive on the GUI thread.
- :class:`EventPump`: a ``QThread`` that reads one shot's events and emits each with its frame
  already converted for display (so the GUI thread never converts big images).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal

from server.client import Client, ServerError


def error_text(exc: BaseException) -> str:
    """A message for the panel: the server's words for a ServerError, else type and message."""
    if isinstance(exc, ServerError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def to_display(image: np.ndarray) -> np.ndarray:
    """A float/uint image (H, W, C) -> contiguous uint8 RGB (H, W, 3) for a QImage."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr >> 8).astype(np.uint8)
    else:
        out = (np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(
            np.uint8
        )
    if out.ndim == 2:
        out = out[..., None]
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out[..., :3])


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(str)


class _Call(QRunnable):
    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn, self.signals = fn, _Signals()
        self.setAutoDelete(True)

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # every failure becomes a message in the panel
            self.signals.failed.emit(error_text(exc))
            return
        self.signals.done.emit(result)


_live: set[_Signals] = set()  # keep the signal objects alive until they have fired


def run_call(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None] | None = None,
    on_failed: Callable[[str], None] | None = None,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Run ``fn()`` on the thread pool; the callbacks run on the GUI thread, unless ``alive()``
    says their owner has closed meanwhile (then the result is dropped)."""
    call = _Call(fn)
    signals = call.signals
    _live.add(signals)

    def finish(*_: object) -> None:
        _live.discard(signals)

    if on_done is not None:
        signals.done.connect(lambda result: on_done(result) if alive() else None)
    if on_failed is not None:
        signals.failed.connect(lambda message: on_failed(message) if alive() else None)
    signals.done.connect(finish)
    signals.failed.connect(finish)
    QThreadPool.globalInstance().start(call)


class EventPump(QThread):
    """Reads ``client.events(key)`` until the shot's last event; emits ``(event, display)``."""

    event = Signal(object, object)  # ShotEvent, uint8 (H, W, 3) or None
    failed = Signal(str)

    def __init__(self, client: Client, key: str, timeout: float = 600.0) -> None:
        super().__init__()
        self.client, self.key, self.timeout = client, key, timeout
        self._stop = False

    def stop(self) -> None:
        """Stop reading at the next event (the shot goes on in the server)."""
        self._stop = True

    def run(self) -> None:
        try:
            for ev in self.client.events(self.key, timeout=self.timeout):
                if self._stop:
                    return
                shown = ev.image if ev.image is not None else ev.preview
                self.event.emit(ev, to_display(shown) if shown is not None else None)
        except Exception as exc:
            if not self._stop:
                self.failed.emit(error_text(exc))

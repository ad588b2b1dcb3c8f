"""Slow request work off the socket loop: hashing inputs, checking pixels, writing the cache.

The loop hands :meth:`Intake.run` a function and a callback; a thread runs the function and
the loop runs the callback (with the result, or the exception) on its own thread, woken by a
``intake`` message on the same inproc socket the worker reports on. So ``hello`` and
``heartbeat`` keep answering while a large submit is hashed and stored. The server runs two:
``intake`` (hashing, pixel checks, cache writes) and ``reader`` (finished frames read from the
cache for replies, :mod:`server.frames`), so a reply never waits behind an upload's writes.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from server.protocol import encode

log = logging.getLogger("warpdiff.server")

Done = Callable[[Any, BaseException | None], None]


class Intake:
    """One thread; jobs run in order. ``pending`` counts jobs not yet handed back."""

    def __init__(self, context: zmq.Context, events_address: str, name: str = "intake") -> None:
        """``name``: the thread's name suffix and the type of the wake-up message it sends."""
        self.context, self.events_address, self.name = context, events_address, name
        self._jobs: deque[tuple[Callable[[], Any], Done]] = deque()
        self._results: deque[tuple[Done, Any, BaseException | None]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self.pending = 0
        self._thread = threading.Thread(target=self._main, name=f"warpdiff-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run(self, work: Callable[[], Any], done: Done) -> None:
        """Run ``work()`` on the intake thread; ``done(result, error)`` later on the loop."""
        with self._cond:
            self._jobs.append((work, done))
            self.pending += 1
            self._cond.notify()

    def deliver(self) -> None:
        """On the loop thread: run the callbacks of finished jobs."""
        while True:
            with self._cond:
                if not self._results:
                    return
                done, result, error = self._results.popleft()
                self.pending -= 1
            try:
                done(result, error)
            except Exception:  # a bug in a callback: log it, keep serving
                log.exception("internal error in an intake callback")

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _main(self) -> None:
        push = self.context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self.events_address)
        try:
            while True:
                with self._cond:
                    while not self._jobs and not self._closing:
                        self._cond.wait()
                    if self._closing:
                        return
                    work, done = self._jobs.popleft()
                try:
                    result, error = work(), None
                except BaseException as exc:  # handed to the callback, never lost
                    result, error = None, exc
                with self._cond:
                    self._results.append((done, result, error))
                push.send_multipart(encode(self.name, {}))
        finally:
            push.close()

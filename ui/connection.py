"""The panel's link to a server: its state, a heartbeat, and starting a local server.

States: ``starting`` (a server we started is loading), ``ready`` (model and device known),
``busy`` (a shot is running; the queue length), ``unreachable`` (with the reason). Every call
goes through :func:`ui.workers.run_call`, so nothing here blocks the GUI thread.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from server.client import DEFAULT_ADDRESS, Client
from ui.workers import run_call

HEARTBEAT_MS = 1000
HELLO_TIMEOUT_S = 3.0
MAX_LOG_LINES = 5000
PYTHON_ENV = "WARPDIFF_PYTHON"


def describe(state: str, info: dict[str, Any]) -> str:
    """One line for the status bar."""
    if state == "ready":
        models = info.get("models", {})
        return f"ready: model {models.get('default')} on {info.get('device', '?')}"
    if state == "busy":
        q = info.get("queue", info)
        return f"busy: running {str(q.get('running'))[:8]}, {q.get('queued', 0)} queued"
    return f"{state}: {info.get('reason', '')}".rstrip(": ")


def server_python() -> str:
    """The Python that runs ``warpdiff serve``: ``$WARPDIFF_PYTHON`` (the server environment's
    interpreter; inside a host such as Nuke, ``sys.executable`` is the host), else this one."""
    return os.environ.get(PYTHON_ENV) or sys.executable


class Connection(QObject):
    """Owns the :class:`Client` and watches the server at ``address``."""

    state_changed = Signal(str, str)  # state, one-line description
    log_line = Signal(str)  # output of a server this panel started

    def __init__(self, address: str = DEFAULT_ADDRESS, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.address = address
        self.client = Client(address, timeout=30.0)
        self.state, self.info = "unreachable", {"reason": "not checked yet"}
        self.log: list[str] = []
        self.process: QProcess | None = None
        self._checking = False
        self.closed = False
        self._timer = QTimer(self)
        self._timer.setInterval(HEARTBEAT_MS)
        self._timer.timeout.connect(self.check)

    def start(self) -> None:
        """Check now, then every second."""
        if self.closed:
            return
        self.check()
        self._timer.start()

    def _set(self, state: str, info: dict[str, Any]) -> None:
        self.state, self.info = state, info
        self.state_changed.emit(state, describe(state, info))

    def check(self) -> None:
        """Ask ``hello`` off the GUI thread; the state follows the answer."""
        if self._checking or self.closed:
            return
        self._checking = True
        client = self.client
        run_call(
            lambda: client.hello(timeout=HELLO_TIMEOUT_S),
            self._on_hello,
            self._on_fail,
            alive=lambda: not self.closed,
        )

    def _on_hello(self, info: dict[str, Any]) -> None:
        self._checking = False
        busy = info.get("queue", {}).get("running") is not None
        self._set("busy" if busy else "ready", info)

    def _on_fail(self, message: str) -> None:
        self._checking = False
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            self._set("starting", {"reason": "the server is loading its model"})
            return
        if "no reply" in message:
            message = f"no server answers at {self.address} (start one with the button)"
        self._set("unreachable", {"reason": message})

    # -- a local server ---------------------------------------------------------------------
    def start_server(self, extra_args: list[str] | None = None) -> None:
        """Start ``warpdiff serve`` on this panel's address as a child process."""
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            return
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        repo = str(Path(__file__).resolve().parent.parent)
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (repo, env.value("PYTHONPATH")) if p))
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.setProcessChannelMode(QProcess.MergedChannels)
        proc.readyReadStandardOutput.connect(self._read_log)
        proc.finished.connect(self._on_exit)
        args = ["-m", "warpcore.cli", "serve", "--bind", self.address, *(extra_args or [])]
        python = server_python()
        self.process = proc
        self._append_log(f"$ {python} {' '.join(args)}")
        proc.start(python, args)
        self._set("starting", {"reason": "the server is loading its model"})

    def _read_log(self) -> None:
        if self.process is None:
            return
        text = bytes(self.process.readAllStandardOutput().data()).decode(errors="replace")
        for line in text.splitlines():
            self._append_log(line)
            if "listening on" in line:
                self.check()

    def _append_log(self, line: str) -> None:
        self.log.append(line)
        del self.log[:-MAX_LOG_LINES]
        self.log_line.emit(line)

    def _on_exit(self, code: int, _status: object) -> None:
        self._append_log(f"[server exited with code {code}]")
        self._set("unreachable", {"reason": f"the server we started exited (code {code})"})

    def close(self) -> None:
        """Stop watching, stop a server this panel started, close the client."""
        if self.closed:
            return
        self.closed = True
        self._timer.stop()
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            self.process.finished.disconnect(self._on_exit)
            self.process.terminate()
            if not self.process.waitForFinished(10000):
                self.process.kill()
                self.process.waitForFinished(5000)
        self.client.close()

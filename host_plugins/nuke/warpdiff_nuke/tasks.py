"""Running a shot from Nuke: blocking (scripts, ``nuke -t``) or in a worker thread (menus).

The node graph is touched in the main thread only: inputs are rendered before the worker
starts, and the Read node is made through ``nuke.executeInMainThread``. Progress goes to a
``nuke.ProgressTask`` (GUI) or stdout (terminal); its cancel button cancels the shot on the
server, whose cache keeps the finished frames.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import nuke
from warpdiff_host import settings
from warpdiff_host.errors import HostError, ShotFailed, refused_paths
from warpdiff_host.progress import Progress
from warpdiff_host.runner import ShotResult, connect, run_shot

from warpdiff_nuke.graph import Prepared, make_read, prepare

TITLE = "Warped Diffusion"


class _Reporter:
    """Progress to a ProgressTask (GUI) or to stdout (terminal); cancel from the task."""

    def __init__(self, title: str) -> None:
        self.task = nuke.ProgressTask(title) if nuke.GUI else None
        self.last_line = ""

    def __call__(self, progress: Progress) -> None:
        if self.task is not None:
            self.task.setProgress(progress.percent)
            self.task.setMessage(progress.text())
            return
        line = f"{TITLE}: {progress.percent:3d}% {progress.text()}"
        if line != self.last_line:
            print(line, flush=True)
            self.last_line = line

    def cancelled(self) -> bool:
        return self.task is not None and self.task.isCancelled()

    def close(self) -> None:
        self.task = None  # Nuke removes a ProgressTask when it is released


def _execute(
    prepared: Prepared,
    address: str,
    reporter: _Reporter,
    stop: Callable[[], bool],
    as_frames: Callable[[], Prepared] | None = None,
) -> tuple[Prepared, ShotResult]:
    """Run the shot; a paths shot the server may not read is sent again as frames when
    ``as_frames`` (the same shot rendered, made in the main thread) is given."""
    client = connect(address)
    try:
        try:
            return prepared, _send(client, prepared, reporter, stop)
        except ShotFailed as exc:
            if prepared.job.paths is None or as_frames is None or not refused_paths(exc):
                raise
        prepared.cleanup()
        prepared = as_frames()
        return prepared, _send(client, prepared, reporter, stop)
    finally:
        client.close()
        prepared.cleanup()


def _send(client: Any, prepared: Prepared, reporter: _Reporter, stop: Callable[[], bool]):  # noqa: ANN202
    return run_shot(
        prepared.job,
        prepared.out_root,
        client=client,
        on_progress=reporter,
        should_stop=lambda: stop() or reporter.cancelled(),
    )


def run(
    task: str,
    node: Any,
    matte: Any,
    first: int | None,
    last: int | None,
    handles: int,
    send: str,
    output_dir: str | None,
    address: str | None,
    params: dict[str, Any],
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """Prepare, run and import in this thread (the main thread); returns the Read node."""
    address = settings.server_address(address)
    connect(address).close()  # fail fast, before any rendering, when no server answers
    args = (task, node, matte, first, last, handles, send, output_dir, address, params)
    prepared = prepare(*args)
    as_frames = (lambda: prepare(*args[:6], "frames", *args[7:])) if send == "auto" else None
    reporter = _Reporter(f"{TITLE}: {prepared.job.label().splitlines()[0]} {node.name()}")
    try:
        prepared, result = _execute(
            prepared, address, reporter, should_stop or (lambda: False), as_frames
        )
    finally:
        reporter.close()
    return make_read(prepared, result)


class Job:
    """A shot running in a worker thread; ``read`` is set (main thread) when it is imported."""

    def __init__(
        self, prepared: Prepared, address: str, as_frames: Callable[[], Prepared] | None = None
    ) -> None:
        self.prepared, self.address, self.as_frames = prepared, address, as_frames
        self.read: Any = None
        self.error: BaseException | None = None
        self.cancel_event = threading.Event()
        self.thread = threading.Thread(target=self._work, name="warpdiff-nuke", daemon=True)

    def cancel(self) -> None:
        self.cancel_event.set()

    def _work(self) -> None:
        reporter = _Reporter(f"{TITLE}: {self.prepared.source.name()}")
        try:
            as_frames = None
            if self.as_frames is not None:  # rendering touches the graph: main thread
                as_frames = lambda: nuke.executeInMainThreadWithResult(self.as_frames)  # noqa: E731
            self.prepared, result = _execute(
                self.prepared, self.address, reporter, self.cancel_event.is_set, as_frames
            )
        except Exception as exc:  # shown to the user in the main thread; nothing imported
            self.error = exc
            nuke.executeInMainThread(_show, args=(exc,))
            return
        finally:
            reporter.close()
        nuke.executeInMainThread(self._import, args=(result,))

    def _import(self, result: Any) -> None:
        self.read = make_read(self.prepared, result)


def _show(exc: BaseException) -> None:
    text = str(exc) if isinstance(exc, HostError) else f"{type(exc).__name__}: {exc}"
    if nuke.GUI:
        nuke.message(f"{TITLE}\n\n{text}")
    else:
        print(f"{TITLE}: {text}", flush=True)


def start(
    task: str,
    node: Any,
    matte: Any = None,
    *,
    first: int | None = None,
    last: int | None = None,
    handles: int = 0,
    send: str = "auto",
    output_dir: str | None = None,
    address: str | None = None,
    **params: Any,
) -> Job | None:
    """Prepare in the main thread, run in a worker; None (and a message) when it cannot start."""
    try:
        address = settings.server_address(address)
        args = (task, node, matte, first, last, handles, send, output_dir, address, params)
        connect(address).close()
        prepared = prepare(*args)
    except HostError as exc:
        _show(exc)
        return None
    as_frames = (lambda: prepare(*args[:6], "frames", *args[7:])) if send == "auto" else None
    job = Job(prepared, address, as_frames)
    job.thread.start()
    return job

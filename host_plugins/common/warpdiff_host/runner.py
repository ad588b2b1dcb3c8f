"""Send a shot to the server, follow it, honour cancel, write the result: one call for hosts.

The result is written to a hidden staging folder frame by frame and renamed to its final name
only when every frame is there, so a host never imports half a shot. Cancel and errors leave
the server's cache alone: finished frames stay there and a rerun resumes (or replays at once).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warpdiff_host import settings
from warpdiff_host.errors import HostError, ServerUnavailable, ShotCancelled, ShotFailed
from warpdiff_host.exr import frame_file, write_exr
from warpdiff_host.progress import Progress
from warpdiff_host.shot import ShotJob, safe_name

POLL_S = 0.2  # how often cancel is checked while no event comes
HEARTBEAT_S = 5.0  # how long without events before asking the server whether it is alive
META_FILE = "warpdiff.json"


@dataclass(frozen=True)
class ShotResult:
    """A finished shot on disk: ``pattern`` % frame for ``first`` .. ``last``."""

    key: str
    folder: Path
    pattern: str
    first: int
    last: int
    from_cache: bool
    seconds: float

    @property
    def n_frames(self) -> int:
        return self.last - self.first + 1


def client_module() -> Any:
    """``server.client``; the repository root is added to ``sys.path`` when it is not there."""
    try:
        import server.client as module
    except ImportError:
        root = Path(__file__).resolve().parents[3]
        if not (root / "server" / "client.py").is_file():
            raise HostError(
                "cannot find the warpdiff client (server/client.py); set WARPDIFF_ROOT or "
                "reinstall the host plugin (see the README)"
            ) from None
        sys.path.append(str(root))
        import server.client as module
    return module


def connect(address: str | None = None, timeout: float | None = None) -> Any:
    """A connected ``Client`` after a ``hello``; :class:`ServerUnavailable` when none answers."""
    address = settings.server_address(address)
    client_mod = client_module()
    client = client_mod.Client(address, curve_keys=settings.curve_keys())
    try:
        client.hello(timeout=settings.connect_timeout() if timeout is None else timeout)
    except (TimeoutError, ConnectionError, OSError) as exc:
        client.close()
        raise ServerUnavailable(
            f"no warpdiff server answers at {address}: start it with `warpdiff serve` "
            f"(or set WARPDIFF_SERVER to its address). Nothing was sent. ({exc})"
        ) from None
    return client


def run_shot(
    job: ShotJob,
    out_root: str | Path,
    *,
    address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    client: Any = None,
) -> ShotResult:
    """Run ``job`` on the server and write ``out_root/<name>_<task>_<key8>/<name>.%04d.exr``."""
    own = client is None
    client = connect(address) if own else client
    try:
        return _run(client, job, Path(out_root), on_progress, should_stop or (lambda: False))
    finally:
        if own:
            client.close()


def _submit(client: Any, job: ShotJob) -> str:
    client_mod = client_module()
    try:
        return client.submit(job.to_shot())
    except client_mod.ServerError as exc:
        raise ShotFailed(f"the server refused the shot: {exc.message}", exc.code) from None
    except TimeoutError:
        raise ServerUnavailable(
            f"the server at {client.address} did not answer the submit; is it still running?"
        ) from None


def _run(
    client: Any,
    job: ShotJob,
    out_root: Path,
    on_progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool],
) -> ShotResult:
    t0 = time.monotonic()
    key = _submit(client, job)
    name = safe_name(job.name)
    folder = out_root / f"{name}_{job.task}_{key[:8]}"
    staging = out_root / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    pattern = str(folder / f"{name}.%04d.exr")
    stage_pattern = str(staging / f"{name}.%04d.exr")
    follow = _Follower(client, key, job.n_frames, stage_pattern, job.first, on_progress)
    try:
        follow.until_done(should_stop)
        if follow.written != job.n_frames:
            raise ShotFailed(
                f"the server sent {follow.written} of {job.n_frames} frames of shot {key}"
            )
        meta = {"key": key, "request": job.request(), "first": job.first, "last": job.last}
        (staging / META_FILE).write_text(json.dumps(meta, indent=1))
        if folder.exists():  # an earlier result of the very same shot: replace it whole
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ShotResult(
        key, folder, pattern, job.first, job.last, not follow.started, time.monotonic() - t0
    )


class _Follower:
    """Reads a shot's events: frames to files, progress to the host, cancel to the server."""

    def __init__(
        self,
        client: Any,
        key: str,
        n_frames: int,
        pattern: str,
        first: int,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.client, self.key, self.n_frames = client, key, n_frames
        self.pattern, self.first, self.on_progress = pattern, first, on_progress
        self.written, self.started, self.cancel_sent = 0, False, False
        self.last_event = time.monotonic()

    def until_done(self, should_stop: Callable[[], bool]) -> None:
        while True:
            try:
                for event in self.client.events(self.key, timeout=POLL_S):
                    self.last_event = time.monotonic()
                    if self._handle(event):
                        return
                    self._check_stop(should_stop)
                return
            except TimeoutError:
                self._check_stop(should_stop)
                self._check_alive()

    def _check_stop(self, should_stop: Callable[[], bool]) -> None:
        if not self.cancel_sent and should_stop():
            self.cancel_sent = True
            try:
                self.client.cancel(self.key)
            except Exception as exc:  # the server is gone: nothing more will come
                raise ServerUnavailable(f"cancel could not reach the server ({exc})") from None

    def _check_alive(self) -> None:
        if time.monotonic() - self.last_event < HEARTBEAT_S:
            return
        try:
            self.client.heartbeat(timeout=HEARTBEAT_S)
        except (TimeoutError, ConnectionError) as exc:
            raise ServerUnavailable(
                f"the server at {self.client.address} stopped answering after {self.written} of "
                f"{self.n_frames} frames; the finished ones are in its cache: restart it and "
                f"run again to resume ({exc})"
            ) from None
        self.last_event = time.monotonic()

    def _handle(self, event: Any) -> bool:
        """True when the shot is finished; raises on cancel and error."""
        kind = event.kind
        if kind in ("started", "progress"):
            self.started = True
        if kind == "frame" and event.image is not None:
            write_exr(frame_file(self.pattern, self.first + event.frame), event.image)
            self.written += 1
            self._report(Progress(self.written, self.n_frames))
        elif kind == "progress" and event.frame >= 0:
            self._report(
                Progress(event.frame, self.n_frames, event.step, event.n_steps, event.eta_s)
            )
        elif kind == "cancelled":
            raise ShotCancelled(
                f"cancelled after {self.written} of {self.n_frames} frames; the server keeps the "
                "finished frames: run again to resume",
                self.written,
            )
        elif kind == "error":
            raise ShotFailed(f"the shot failed on the server: {event.message}")
        return kind == "finished"

    def _report(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)

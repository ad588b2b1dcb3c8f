"""Warped Diffusion for DaVinci Resolve: the current timeline item through the local server.

From an external script (Resolve Studio, external scripting set to Local)::

    import warpdiff_resolve
    outcome = warpdiff_resolve.run(warpdiff_resolve.Settings(matte="/shots/a_matte.%04d.exr",
                                                             params={"steps": 10}))

``run`` connects with ``DaVinciResolveScript`` (``RESOLVE_SCRIPT_API`` / ``RESOLVE_SCRIPT_LIB``,
each OS's defaults otherwise), processes the current video item and imports the result into
the "Warped Diffusion" bin (and the track above the item when ``place_on_track``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from warpdiff_host.progress import Progress

from warpdiff_resolve.connection import connect_resolve, script_environment
from warpdiff_resolve.source import ItemSource, item_source
from warpdiff_resolve.workflow import BIN, Outcome, Settings, current_item, process_item

__all__ = [
    "BIN",
    "ItemSource",
    "Outcome",
    "Settings",
    "connect_resolve",
    "current_item",
    "item_source",
    "process_item",
    "run",
    "script_environment",
]


def _print_progress(progress: Progress) -> None:
    print(f"Warped Diffusion: {progress.percent:3d}% {progress.text()}", flush=True)


def run(
    settings: Settings | None = None,
    resolve: Any = None,
    on_progress: Callable[[Progress], None] | None = _print_progress,
    should_stop: Callable[[], bool] | None = None,
) -> Outcome:
    """Process the current timeline's current video item with ``settings``."""
    resolve = resolve or connect_resolve()
    project, timeline, item = current_item(resolve)
    return process_item(project, timeline, item, settings or Settings(), on_progress, should_stop)

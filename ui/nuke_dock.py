"""Register the preview panel as a Nuke dockable panel (Nuke 16 ships PySide6).

In ``~/.nuke/menu.py``::

    import ui.nuke_dock
    ui.nuke_dock.register()

The only module here that touches Nuke's API; the panel itself is plain PySide6. Set
``WARPDIFF_SERVER`` to the server's address, and ``WARPDIFF_PYTHON`` to the server
environment's interpreter (e.g. ``~/.warpdiff/venv/bin/python``) for the panel's "Start server"
(inside Nuke, ``sys.executable`` is Nuke itself).
"""

from __future__ import annotations

import os
from typing import Any

PANEL_ID = "uk.co.warpdiff.preview"
TITLE = "Warped Diffusion preview"
ADDRESS_ENV = "WARPDIFF_SERVER"


def make_panel() -> Any:
    """The widget Nuke docks (Nuke calls this through the class path below)."""
    from ui.panel import Panel

    return Panel(os.environ.get(ADDRESS_ENV, "tcp://127.0.0.1:5557"))


class NukePanel:  # Nuke instantiates the registered name with no arguments
    def __new__(cls) -> Any:
        return make_panel()


def register(nukescripts: Any = None) -> Any:
    """Add the panel to Nuke's Pane menu; returns what ``registerWidgetAsPanel`` returned."""
    if nukescripts is None:
        import nukescripts  # noqa: PLC0415 (only inside Nuke)
    return nukescripts.panels.registerWidgetAsPanel("ui.nuke_dock.NukePanel", TITLE, PANEL_ID, True)

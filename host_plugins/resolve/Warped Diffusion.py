"""Workspace > Scripts > Warped Diffusion: process the current timeline item (Utility script).

Copy (or link) this file into Resolve's Utility scripts folder (see the README). It finds the
plugin code through $WARPDIFF_ROOT (the folder holding host_plugins/) or its own real path,
asks for the settings (Resolve's UIManager, else a Qt dialog, else the defaults), runs the
shot and imports the result. Progress goes to Resolve's console (Workspace > Console).
"""

import os
import sys

_root = os.environ.get("WARPDIFF_ROOT") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
)
for _p in (
    _root,
    os.path.join(_root, "host_plugins", "common"),
    os.path.join(_root, "host_plugins", "resolve"),
):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import warpdiff_resolve  # noqa: E402
from warpdiff_host.errors import HostError  # noqa: E402
from warpdiff_resolve.form import ask  # noqa: E402


def main():
    app = globals().get("resolve")  # given by Resolve to scripts run from its menu
    settings = ask(globals().get("fusion"), globals().get("bmd"))
    if settings is None:
        return
    try:
        outcome = warpdiff_resolve.run(settings, resolve=app)
    except HostError as exc:
        print(f"Warped Diffusion: {exc}")
        return
    print(
        f"Warped Diffusion: imported {outcome.result.pattern} into the "
        f"'{warpdiff_resolve.BIN}' bin" + (" and the track above" if outcome.timeline_item else "")
    )


main()

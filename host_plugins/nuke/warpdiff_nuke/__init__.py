"""Warped Diffusion in Nuke: send a node's frames to the local server, get a Read node back.

Scripts and the farm (``nuke -t``)::

    import warpdiff_nuke
    read = warpdiff_nuke.remove_object(nuke.toNode("Read1"), matte=nuke.toNode("Roto1"),
                                       first=1001, last=1100, steps=10, seed=0)
    big = warpdiff_nuke.upscale(nuke.toNode("Read2"), scale=4)

Both block until the shot is done (with a ProgressTask in the GUI, lines on stdout in a
terminal). The menu commands (``commands``) run the same shot off the main thread.
"""

from __future__ import annotations

from typing import Any

from warpdiff_nuke.tasks import run, start

__all__ = ["remove_object", "run", "start", "upscale"]


def remove_object(
    node: Any,
    matte: Any = None,
    first: int | None = None,
    last: int | None = None,
    *,
    handles: int = 0,
    send: str = "auto",
    output_dir: str | None = None,
    address: str | None = None,
    **params: Any,
) -> Any:
    """Remove what ``matte``'s alpha (default: ``node``'s alpha) covers; returns the Read node.

    ``first``/``last``: default the node's range (a Read's) or the project's; ``handles``
    frames more on each side when the footage has them. ``send``: ``auto`` (paths when the
    source is a Read of an EXR sequence the server can reach, else frames), ``frames`` or
    ``paths``. ``params``: ``steps``, ``seed``, ``strength``, ``propagate``, ... (the server
    names what it accepts). Raises ``warpdiff_host.HostError`` subclasses with the reason.
    """
    return run("inpaint", node, matte, first, last, handles, send, output_dir, address, params)


def upscale(
    node: Any,
    first: int | None = None,
    last: int | None = None,
    *,
    handles: int = 0,
    send: str = "auto",
    output_dir: str | None = None,
    address: str | None = None,
    **params: Any,
) -> Any:
    """Upscale ``node``'s RGB (``scale=4`` by default on the server); returns the Read node."""
    return run("upscale", node, None, first, last, handles, send, output_dir, address, params)

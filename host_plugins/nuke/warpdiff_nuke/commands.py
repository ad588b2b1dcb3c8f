"""The "Warped Diffusion" menu commands (GUI): act on the selected nodes."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from typing import Any

import nuke
from warpdiff_host import settings
from warpdiff_host.errors import HostError
from warpdiff_host.runner import connect

from warpdiff_nuke.tasks import Job, start

TITLE = "Warped Diffusion"


def _selection() -> tuple[Any, Any]:
    """(source, matte): the last selected node is the source; a second one is the matte."""
    nodes = nuke.selectedNodes()
    if not nodes:
        raise HostError("select the source node (and, for a separate matte, the matte node)")
    if len(nodes) > 2:
        raise HostError(f"{len(nodes)} nodes are selected; select the source and at most a matte")
    source = nuke.selectedNode()  # the node selected last
    matte = next((n for n in nodes if n is not source), None)
    return source, matte


def remove_object_selected() -> Job | None:
    try:
        source, matte = _selection()
    except HostError as exc:
        nuke.message(f"{TITLE}\n\n{exc}")
        return None
    return start("inpaint", source, matte)


def upscale_selected() -> Job | None:
    try:
        source, _ = _selection()
    except HostError as exc:
        nuke.message(f"{TITLE}\n\n{exc}")
        return None
    return start("upscale", source)


def server_status() -> str:
    """A message with the server's address, version, device, models and queue."""
    address = settings.server_address()
    try:
        client = connect(address)
    except HostError as exc:
        text = str(exc)
    else:
        try:
            hello = client.hello()
        finally:
            client.close()
        queue = hello.get("queue", {})
        models = hello.get("models", {})
        text = (
            f"server {hello.get('version')} at {address}\n"
            f"device {hello.get('device')}, model {models.get('default')}\n"
            f"running {queue.get('running')}, queued {queue.get('queued')}"
        )
    nuke.message(f"{TITLE}\n\n{text}")
    return text


def open_panel() -> subprocess.Popen | None:
    """Start the preview panel on this server: ``$WARPDIFF_PANEL`` (a command), else
    ``warpdiff panel --server ADDRESS`` from the PATH; a message when neither is there."""
    address = settings.server_address()
    custom = os.environ.get("WARPDIFF_PANEL")
    program = custom or shutil.which("warpdiff")
    if not program:
        nuke.message(f"{TITLE}\n\nthe panel is not installed: `warpdiff` is not on the PATH")
        return None
    args = [*shlex.split(custom)] if custom else [program, "panel"]
    env = dict(os.environ, WARPDIFF_SERVER=address)
    return subprocess.Popen([*args, "--server", address], env=env)

"""Connecting to DaVinci Resolve with its documented ``DaVinciResolveScript`` module.

Inside Resolve (Workspace > Scripts) the ``resolve`` object is given. From outside (Resolve
Studio's external scripting, Preferences > System > General > External scripting using:
Local), the module is found through ``RESOLVE_SCRIPT_API`` (``<api>/Modules``) and loads the
library named by ``RESOLVE_SCRIPT_LIB``; both default to each OS's install location.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from warpdiff_host.errors import HostError

DEFAULTS = {
    "darwin": (
        "/Library/Application Support/Blackmagic Design/DaVinci Resolve/Developer/Scripting",
        "/Applications/DaVinci Resolve/DaVinci Resolve.app/Contents/Libraries/Fusion/"
        "fusionscript.so",
    ),
    "win32": (
        r"%PROGRAMDATA%\Blackmagic Design\DaVinci Resolve\Support\Developer\Scripting",
        r"C:\Program Files\Blackmagic Design\DaVinci Resolve\fusionscript.dll",
    ),
    "linux": ("/opt/resolve/Developer/Scripting", "/opt/resolve/libs/Fusion/fusionscript.so"),
}


def script_environment(
    platform: str | None = None, environ: dict[str, str] | None = None
) -> dict[str, str]:
    """``RESOLVE_SCRIPT_API`` and ``RESOLVE_SCRIPT_LIB``: the environment's, else the OS's."""
    platform = platform or sys.platform
    environ = os.environ if environ is None else environ
    key = "darwin" if platform == "darwin" else "win32" if platform.startswith("win") else "linux"
    api, lib = DEFAULTS[key]
    if key == "win32":
        api = api.replace("%PROGRAMDATA%", environ.get("PROGRAMDATA", r"C:\ProgramData"))
    return {
        "RESOLVE_SCRIPT_API": environ.get("RESOLVE_SCRIPT_API", api),
        "RESOLVE_SCRIPT_LIB": environ.get("RESOLVE_SCRIPT_LIB", lib),
    }


def _module() -> Any:
    try:
        return importlib.import_module("DaVinciResolveScript")
    except ImportError:
        pass
    env = script_environment()
    os.environ.setdefault("RESOLVE_SCRIPT_LIB", env["RESOLVE_SCRIPT_LIB"])
    modules = os.path.join(env["RESOLVE_SCRIPT_API"], "Modules")
    if modules not in sys.path:
        sys.path.append(modules)
    try:
        return importlib.import_module("DaVinciResolveScript")
    except ImportError:
        raise HostError(
            f"cannot import DaVinciResolveScript from {modules}: set RESOLVE_SCRIPT_API to "
            "Resolve's Developer/Scripting folder and RESOLVE_SCRIPT_LIB to its fusionscript "
            "library (see the README)"
        ) from None


def connect_resolve() -> Any:
    """The running Resolve; a clear error when it is not running or refuses scripts."""
    resolve = _module().scriptapp("Resolve")
    if resolve is None:
        raise HostError(
            "DaVinci Resolve did not answer: start it, and allow external scripting "
            "(Preferences > System > General > External scripting using: Local; Studio only)"
        )
    return resolve

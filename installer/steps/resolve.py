"""Resolve: a launcher for ``host_plugins/resolve/Warped Diffusion.py`` in the user's
Fusion/Scripts/Utility folder (Workspace > Scripts > Warped Diffusion)."""

from __future__ import annotations

from pathlib import Path

from installer.context import Context, InstallError
from installer.paths import RESOLVE_SCRIPT

LAUNCHER = '''\
"""Warped Diffusion (written by the Warped Diffusion installer; `warpdiff uninstall` removes it).
Runs the script of the checkout below with Resolve's globals."""
import os

os.environ.setdefault("WARPDIFF_ROOT", {root!r})
_script = os.path.join(os.environ["WARPDIFF_ROOT"], "host_plugins", "resolve", {name!r})
with open(_script, encoding="utf-8") as _f:
    exec(compile(_f.read(), _script, "exec"), globals())
'''


def script_path(ctx: Context) -> Path:
    return ctx.platform.resolve_utility_dir() / RESOLVE_SCRIPT


def launcher(ctx: Context) -> bytes:
    return LAUNCHER.format(root=str(ctx.options.source), name=RESOLVE_SCRIPT).encode("utf-8")


def plan(ctx: Context) -> str:
    return f"Resolve: the script {script_path(ctx)}"


def apply(ctx: Context) -> str:
    source = ctx.options.source / "host_plugins" / "resolve" / RESOLVE_SCRIPT
    if not source.is_file():
        raise InstallError(f"{source} is missing: is --source a warpdiff checkout?")
    changed = ctx.writer.write_file(script_path(ctx), launcher(ctx))
    return f"{script_path(ctx)}: " + ("written" if changed else "up to date")

"""Nuke: ``host_plugins/nuke`` registered in ``~/.nuke/init.py`` with a marked block."""

from __future__ import annotations

from pathlib import Path

from installer.blocks import make_block, with_block
from installer.context import Context, InstallError


def plugin_dir(ctx: Context) -> Path:
    return ctx.options.source / "host_plugins" / "nuke"


def block(ctx: Context) -> str:
    return make_block(f"import nuke\nnuke.pluginAddPath({str(plugin_dir(ctx))!r})")


def init_file(ctx: Context) -> Path:
    return ctx.platform.nuke_dir() / "init.py"


def plan(ctx: Context) -> str:
    return f"Nuke: register {plugin_dir(ctx)} in {init_file(ctx)} (a marked block)"


def apply(ctx: Context) -> str:
    path = init_file(ctx)
    if not (plugin_dir(ctx) / "init.py").is_file():
        raise InstallError(f"{plugin_dir(ctx)} has no init.py: is --source a warpdiff checkout?")
    try:
        current = path.read_bytes().decode("utf-8") if path.exists() else ""
        text = with_block(current, block(ctx))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InstallError(f"{path}: {exc}; fix the file or move it away, then rerun") from None
    changed = ctx.writer.write_file(path, text.encode("utf-8"), kind="block")
    ctx.notes.append(
        "Nuke's Python needs pyzmq, msgpack, numpy and OpenEXR: "
        "`<nuke python> -m pip install pyzmq msgpack numpy OpenEXR` (host_plugins/README.md)"
    )
    return f"{path}: " + ("block written" if changed else "already registered")

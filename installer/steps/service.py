"""A user service that starts ``warpdiff serve`` at login and restarts it when it fails:
a ``systemd --user`` unit on Linux, a launchd agent on macOS; on Windows, the manual command.

``--service enable`` (default) writes and starts it, ``write`` only writes the file (and prints
the command that starts it), ``none`` skips the step.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
from pathlib import Path

from installer.context import Context, InstallError
from installer.paths import LAUNCHD_LABEL, LINUX, MACOS, SERVICE_NAME, WINDOWS


def serve_command(ctx: Context) -> list[str]:
    config = ctx.manifest.config
    return [
        str(ctx.platform.env_warpdiff(ctx.env_dir())),
        "serve",
        "--bind",
        ctx.options.bind,
        "--model",
        str(config.get("model", ctx.options.model)),
        "--device",
        str(config.get("device", "cpu")),
        "--cache",
        str(ctx.cache_dir()),
    ]


def _systemd_quote(arg: str) -> str:
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in " \t\"\\'$;"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'


def systemd_unit(command: list[str], source: Path) -> str:
    return (
        "# Written by the Warped Diffusion installer; `warpdiff uninstall` removes it.\n"
        "[Unit]\n"
        "Description=Warped Diffusion server (warpdiff serve)\n"
        f"Documentation=file://{source / 'README.md'}\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(_systemd_quote(c) for c in command)}\n"
        "Environment=HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1\n"
        "Restart=on-failure\n"
        "RestartSec=5\n\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def launchd_plist(command: list[str], log: Path) -> bytes:
    return plistlib.dumps(
        {
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": command,
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},  # restart when it fails, not after a stop
            "EnvironmentVariables": {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
            "StandardOutPath": str(log),
            "StandardErrorPath": str(log),
            "ProcessType": "Interactive",
        }
    )


def start_commands(ctx: Context, path: Path) -> list[list[str]]:
    """The commands that load and start the service (what ``--service write`` prints)."""
    if ctx.platform.system == LINUX:
        return [
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", SERVICE_NAME],
        ]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return [["launchctl", "bootstrap", f"gui/{uid}", str(path)]]


def stop_commands(system: str, path: Path) -> list[list[str]]:
    if system == LINUX:
        return [["systemctl", "--user", "disable", "--now", SERVICE_NAME]]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return [["launchctl", "bootout", f"gui/{uid}/{LAUNCHD_LABEL}"]]


def windows_note(ctx: Context) -> str:
    cmd = subprocess.list2cmdline(serve_command(ctx))
    return (
        "Windows: a login service is not supported yet. Start the server by hand with\n"
        f"  {cmd}\n"
        "or add it to Task Scheduler: schtasks /Create /SC ONLOGON /TN WarpedDiffusion "
        f'/TR "{cmd}"'
    )


def plan(ctx: Context) -> str:
    path = ctx.platform.service_file()
    if ctx.options.service == "none":
        return "service: skipped (--service none)"
    if path is None:
        return "service: not supported yet on this OS (the manual command is printed)"
    verb = "write and start" if ctx.options.service == "enable" else "write (not start)"
    return f"service: {verb} {path} (warpdiff serve --bind {ctx.options.bind})"


def apply(ctx: Context) -> str:
    if ctx.options.service == "none":
        return "skipped"
    path = ctx.platform.service_file()
    system = ctx.platform.system
    if path is None or system == WINDOWS:
        ctx.notes.append(windows_note(ctx))
        return "not supported yet on this OS: see the manual command below"
    command = serve_command(ctx)
    existed = path.exists()
    if system == MACOS:
        log = ctx.platform.log_dir() / "server.log"
        ctx.writer.ensure_dir(log.parent)
        changed = ctx.writer.write_file(path, launchd_plist(command, log))
    else:
        changed = ctx.writer.write_file(path, systemd_unit(command, ctx.options.source).encode())
    starts = start_commands(ctx, path)
    if ctx.options.service == "write" or ctx.dry_run:
        shown = " && ".join(" ".join(c) for c in starts)
        ctx.notes.append(f"the service is written, not started: start it with {shown}")
        return f"{path}: " + ("written" if changed else "up to date")
    tool = starts[0][0]
    if shutil.which(tool) is None:
        ctx.notes.append(f"{tool} was not found: the service is written but not started")
        return f"{path}: written, not started"
    if system == MACOS and changed and existed:
        subprocess.run(stop_commands(system, path)[0], capture_output=True)  # reload the new file
    if system == LINUX and changed and existed:  # a running service picks up the new unit
        starts.append(["systemctl", "--user", "restart", SERVICE_NAME])
    ctx.writer.record({"kind": "service", "system": system, "path": str(path)})
    try:
        for cmd in starts:
            ctx.run(cmd, "starting the service", timeout=60)
    except InstallError as exc:  # e.g. no user session bus: the file is there, say how to start
        shown = " && ".join(" ".join(c) for c in starts)
        ctx.notes.append(f"the service could not be started ({exc}); start it with {shown}")
        return f"{path}: written, not started (see below)"
    return f"{path}: started"

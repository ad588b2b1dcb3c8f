"""What every step gets: the platform, the options, the manifest writer, and a command runner."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from installer.manifest import Manifest, Writer
from installer.paths import DEFAULT_BIND, Platform

STEP_NAMES = ("env", "model", "ofx", "nuke", "resolve", "service")


class InstallError(Exception):
    """A step cannot go on: the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Options:
    """The install command's choices (see ``install.py --help``)."""

    source: Path
    torch: str = "auto"  # auto | cpu | cuda
    torch_index: str | None = None  # None: the official index for the flavour; "pip": pip's own
    env: Path | None = None  # an existing environment to use instead of creating one
    python: str = sys.executable  # the interpreter the environment is made from
    ofx_dir: Path | None = None
    ofx_bundle: Path | None = None  # a built bundle to install (else build from host_plugins/ofx)
    model: str = "builtin"
    bind: str = DEFAULT_BIND
    cache: Path | None = None
    service: str = "enable"  # enable | write | none
    steps: tuple[str, ...] = STEP_NAMES


@dataclass
class Context:
    platform: Platform
    options: Options
    writer: Writer
    say: Callable[[str], None] = print
    notes: list[str] = field(default_factory=list)  # guidance printed at the end

    @property
    def manifest(self) -> Manifest:
        return self.writer.manifest

    @property
    def dry_run(self) -> bool:
        return self.writer.dry_run

    def env_dir(self) -> Path:
        return self.options.env or self.platform.env_dir()

    def cache_dir(self) -> Path:
        return self.options.cache or self.platform.cache_dir()

    def run(self, cmd: Sequence[str], what: str, timeout: float = 3600) -> str:
        """Run ``cmd``; its output, or :class:`InstallError` naming ``what`` failed and why."""
        shown = ("<script>" if "\n" in str(c) else shlex.quote(str(c)) for c in cmd)
        self.say("  $ " + " ".join(shown))
        try:
            done = subprocess.run(
                [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"{what}: {exc}") from None
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise InstallError(f"{what} failed (exit {done.returncode}):\n{tail}")
        return done.stdout

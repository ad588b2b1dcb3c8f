"""Where things go on each OS (Linux, macOS, Windows), for one user's home.

Everything is derived from a :class:`Platform` (the OS name, the home folder and the environment),
so tests can point it at a temporary HOME and even render another OS's paths.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

LINUX, MACOS, WINDOWS = "linux", "darwin", "win32"
APP = "warpdiff"
SERVICE_NAME = "warpdiff.service"
LAUNCHD_LABEL = "com.warpeddiffusion.server"
OFX_BUNDLE = "WarpedDiffusion.ofx.bundle"
OFX_ARCH = {LINUX: "Linux-x86-64", MACOS: "MacOS", WINDOWS: "Win64"}
RESOLVE_SCRIPT = "Warped Diffusion.py"
DEFAULT_BIND = "tcp://127.0.0.1:5557"


def current_system() -> str:
    if sys.platform.startswith("linux"):
        return LINUX
    if sys.platform == "darwin":
        return MACOS
    if sys.platform.startswith(("win32", "cygwin")):
        return WINDOWS
    return sys.platform


@dataclass(frozen=True)
class Platform:
    """The OS name (``linux``, ``darwin``, ``win32``), the user's home and environment."""

    system: str = field(default_factory=current_system)
    home: Path = field(default_factory=Path.home)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def _env_dir(self, name: str, default: Path) -> Path:
        value = self.env.get(name)
        return Path(value) if value and os.path.isabs(value) else default

    # -- the installer's own folders --------------------------------------------------------
    def data_dir(self) -> Path:
        """XDG data on Linux, Application Support on macOS, %LOCALAPPDATA% on Windows."""
        if self.system == MACOS:
            return self.home / "Library" / "Application Support" / APP
        if self.system == WINDOWS:
            return self._env_dir("LOCALAPPDATA", self.home / "AppData" / "Local") / APP
        return self._env_dir("XDG_DATA_HOME", self.home / ".local" / "share") / APP

    def cache_dir(self) -> Path:
        """The server's shot cache (what ``uninstall --purge`` removes)."""
        if self.system == MACOS:
            return self.home / "Library" / "Caches" / APP / "shots"
        if self.system == WINDOWS:
            return self.data_dir() / "cache" / "shots"
        return self._env_dir("XDG_CACHE_HOME", self.home / ".cache") / APP / "shots"

    def env_dir(self) -> Path:
        return self.data_dir() / "env"

    def manifest_path(self) -> Path:
        return self.data_dir() / "manifest.json"

    def log_dir(self) -> Path:
        return self.data_dir() / "logs"

    def env_python(self, env: Path | None = None) -> Path:
        env = env or self.env_dir()
        if self.system == WINDOWS:
            return env / "Scripts" / "python.exe"
        return env / "bin" / "python"

    def env_warpdiff(self, env: Path | None = None) -> Path:
        env = env or self.env_dir()
        if self.system == WINDOWS:
            return env / "Scripts" / "warpdiff.exe"
        return env / "bin" / "warpdiff"

    # -- hosts ----------------------------------------------------------------------------------
    def ofx_system_dir(self) -> Path:
        """The folder every OpenFX host searches (OpenFX specification, "Installation")."""
        if self.system == MACOS:
            return Path("/Library/OFX/Plugins")
        if self.system == WINDOWS:
            common = self.env.get("CommonProgramFiles", r"C:\Program Files\Common Files")
            return Path(common) / "OFX" / "Plugins"
        return Path("/usr/OFX/Plugins")

    def ofx_user_dir(self) -> Path:
        """A per-user bundle folder; hosts find it only through ``OFX_PLUGIN_PATH``."""
        return self.data_dir() / "ofx"

    def ofx_search_path(self) -> list[Path]:
        """Where hosts look: ``OFX_PLUGIN_PATH`` entries, then the standard folder."""
        extra = [Path(p) for p in self.env.get("OFX_PLUGIN_PATH", "").split(os.pathsep) if p]
        return [*extra, self.ofx_system_dir()]

    def nuke_dir(self) -> Path:
        """``~/.nuke`` (Windows: the user profile's .nuke folder)."""
        if self.system == WINDOWS:
            return self._env_dir("USERPROFILE", self.home) / ".nuke"
        return self.home / ".nuke"

    def resolve_utility_dir(self) -> Path:
        """The user's Fusion Scripts/Utility folder (Resolve lists it under Workspace > Scripts)."""
        if self.system == MACOS:
            base = self.home / "Library" / "Application Support" / "Blackmagic Design"
            return base / "DaVinci Resolve" / "Fusion" / "Scripts" / "Utility"
        if self.system == WINDOWS:
            roaming = self._env_dir("APPDATA", self.home / "AppData" / "Roaming")
            base = roaming / "Blackmagic Design" / "DaVinci Resolve" / "Support"
            return base / "Fusion" / "Scripts" / "Utility"
        base = self.home / ".local" / "share" / "DaVinciResolve"
        return base / "Fusion" / "Scripts" / "Utility"

    # -- the service --------------------------------------------------------------------------
    def service_file(self) -> Path | None:
        """The systemd user unit (Linux) or launchd agent (macOS); None where unsupported."""
        if self.system == LINUX:
            config = self._env_dir("XDG_CONFIG_HOME", self.home / ".config")
            return config / "systemd" / "user" / SERVICE_NAME
        if self.system == MACOS:
            return self.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        return None

"""Builds the C++ OpenFX plugin, its unit tests and the test host with CMake (tests, benchmark).

``build_ofx(dir)`` configures once and builds incrementally; ``sanitize=True`` builds with
AddressSanitizer + UBSan. The bundle lands in ``dir/WarpedDiffusion.ofx.bundle`` (the standard
layout), so ``OFX_PLUGIN_PATH=dir`` finds it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "host_plugins" / "ofx"
BUNDLE = "WarpedDiffusion.ofx.bundle"


class BuildError(RuntimeError):
    """CMake or the compiler failed (the message holds the end of their output)."""


def missing_tools() -> list[str]:
    """The build tools that are not installed (empty when the plugin can be built)."""
    return [t for t in ("cmake", "g++", "pkg-config") if shutil.which(t) is None]


def build_ofx(build_dir: str | os.PathLike[str], sanitize: bool = False, jobs: int = 2) -> Path:
    """Configure (once) and build; returns the build folder."""
    build = Path(build_dir)
    configure = ["cmake", "-S", str(SOURCE), "-B", str(build)]
    configure += ["-DCMAKE_BUILD_TYPE=" + ("Debug" if sanitize else "Release")]
    configure += ["-DWD_SANITIZE=" + ("ON" if sanitize else "OFF")]
    steps = [] if (build / "CMakeCache.txt").is_file() else [configure]
    steps.append(["cmake", "--build", str(build), "-j", str(jobs)])
    for cmd in steps:
        done = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return build


def plugin_binary(build: Path) -> Path:
    return build / BUNDLE / "Contents" / "Linux-x86-64" / "WarpedDiffusion.ofx"
